/*
 * The rows of the benchmark table: each group measures p11noise and its
 * references in the same run and prints one row per (figure, reference).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const char *size_name(size_t size)
{
    switch (size) {
    case 64: return "64 B";
    case 1024: return "1 KiB";
    case 16384: return "16 KiB";
    default: return "65535 B";
    }
}

/* Raw AEAD figures are shared by two groups; measure them once. */
static bench_stat aead_raw[BENCH_NSIZES];
static int aead_raw_done[BENCH_NSIZES];

static const bench_stat *raw_aead(const bench_opts *o, int i)
{
    if (!aead_raw_done[i]) {
        if (bench_aead_raw(o, bench_sizes[i], &aead_raw[i]) != 0)
            return NULL;
        aead_raw_done[i] = 1;
        bench_plot_point("raw ChaCha20-Poly1305 (EVP, one core)", bench_sizes[i],
            aead_raw[i].median);
    }
    return &aead_raw[i];
}

/* Adaptors from the figure functions to bench_rep_fn. */
struct sized_fn {
    int (*fn)(const bench_opts *o, size_t size, bench_stat *out);
    size_t size;
};

static int rep_sized(const bench_opts *o, void *arg, bench_stat *out)
{
    const struct sized_fn *f = arg;
    return f->fn(o, f->size, out);
}

struct plain_fn {
    int (*fn)(const bench_opts *o, bench_stat *out);
};

static int rep_plain(const bench_opts *o, void *arg, bench_stat *out)
{
    return ((const struct plain_fn *)arg)->fn(o, out);
}

/* `row` with its figure and its reference measured in alternating
 * repetitions (ours, ref and the per-pair ratio filled in); a missing row
 * (and a null JSON value) if a repetition failed. 0 or -1; `ours` (may
 * be NULL) gets the figure's values for other rows. */
static int paired(const bench_opts *o, bench_row row, bench_rep_fn fa, void *aa,
    bench_rep_fn fb, void *ba, bench_stat *ours)
{
    bench_stat a, b, ratio;
    if (bench_interleave(o, fa, aa, fb, ba, &a, &b, &ratio) != 0) {
        bench_table_missing(row.figure, "a repetition failed");
        if (row.key != NULL)
            bench_json_missing(row.key, "a repetition failed");
        return -1;
    }
    row.ours = &a;
    row.ref = &b;
    row.ratio = &ratio;
    bench_table_row(&row);
    if (ours != NULL)
        *ours = a;
    return 0;
}

void bench_group_aead(const bench_opts *o)
{
    for (int i = 0; i < BENCH_NSIZES; i++) {
        if (!(o->sizes & (1u << i)))
            continue;
        char fig[96];
        struct sized_fn seal = { bench_p11n_seal, bench_sizes[i] };
        struct sized_fn raw = { bench_aead_raw, bench_sizes[i] };

        snprintf(fig, sizeof(fig), "transport seal in memory, one core, %s", size_name(bench_sizes[i]));
        paired(o, (bench_row){ .figure = fig, .unit = BENCH_MBPS, .ref_name = "raw EVP AEAD" },
            rep_sized, &seal, rep_sized, &raw, NULL);
    }
}

/* The event loop against the sans-I/O transport, side by side: the goal
 * holds at every size, the stable key names the largest. */
static void loop_vs_sansio(const bench_opts *o, size_t size, const char *fig)
{
    struct sized_fn loop = { bench_loop_throughput, size };
    struct sized_fn direct = { bench_p11n_throughput, size };
    paired(o, (bench_row){ .key = size == 65535 ? "tput_65535_loop_vs_sansio" : NULL,
        .figure = fig,
        .unit = BENCH_MBPS, .ref_name = "sans-I/O transport, one write() per message",
        .goal = BENCH_GOAL_RATIO_MIN, .goal_x = 0.95, .goal_text = "≥ 0.95× sans-I/O" },
        rep_sized, &loop, rep_sized, &direct, NULL);
}

/* The tunnel against the library and against stunnel, side by side. */
static void tunnel_rows(const bench_opts *o, size_t size)
{
    static const char tfig[] = "throughput, one connection through p11noise "
                               "tunnel client and server, 64 KiB writes";
    struct plain_fn tun = { bench_tunnel_throughput }, stun = { bench_stunnel_throughput };
    struct sized_fn loop = { bench_loop_throughput, size };
    bench_stat probe = { .n = 0 };
    bench_opts one = *o;
    one.reps = 1;
    paired(o, (bench_row){ .figure = tfig, .unit = BENCH_MBPS,
        .ref_name = "event loop (p11n_send)", .goal = BENCH_GOAL_RATIO_MIN, .goal_x = 0.8,
        .goal_text = "≥ 0.8× the library" }, rep_plain, &tun, rep_sized, &loop, NULL);
    if (bench_stunnel_throughput(&one, &probe) == -2) {
        bench_table_row(&(bench_row){ .figure = tfig, .unit = BENCH_MBPS,
            .ref_name = "stunnel, same arrangement: not installed" });
        return;
    }
    paired(o, (bench_row){ .figure = tfig, .unit = BENCH_MBPS,
        .ref_name = "stunnel, same arrangement, TLS 1.3 CHACHA20-POLY1305" },
        rep_plain, &tun, rep_plain, &stun, NULL);
}

void bench_group_throughput(const bench_opts *o)
{
    for (int i = 0; i < BENCH_NSIZES; i++) {
        if (!(o->sizes & (1u << i)))
            continue;
        size_t size = bench_sizes[i];
        char fig[128], fig2[128];
        bench_stat loop = { .n = 0 }, direct = { .n = 0 }, tls = { .n = 0 }, plain = { .n = 0 };
        bench_stat pairs = { .n = 0 };
        const bench_stat *raw = raw_aead(o, i);
        int have_loop, have_direct, have_tls, have_plain;
        bench_row row = { .figure = fig, .unit = BENCH_MBPS, .ours = &loop };

        snprintf(fig, sizeof(fig), "throughput, %s messages, loopback, event loop (p11n_send)",
            size_name(size));
        snprintf(fig2, sizeof(fig2),
            "throughput, %s messages, loopback, sans-I/O transport, one write() per message",
            size_name(size));
        have_plain = bench_plain_throughput(o, size, &plain) == 0;
        if (have_plain)
            bench_plot_point("plain TCP, no encryption", size, plain.median);
        /* The event loop and TLS in alternating repetitions. */
        struct sized_fn rloop = { bench_loop_throughput, size };
        struct sized_fn rtls = { bench_tls_throughput, size };
        have_tls = have_loop = bench_interleave(o, rep_sized, &rloop, rep_sized, &rtls, &loop,
            &tls, &pairs) == 0;
        if (!have_loop) {
            have_tls = bench_tls_throughput(o, size, &tls) == 0;
            have_loop = bench_loop_throughput(o, size, &loop) == 0;
        }
        have_direct = bench_p11n_throughput(o, size, &direct) == 0;
        if (have_tls)
            bench_plot_point("TLS 1.3 (OpenSSL, CHACHA20-POLY1305)", size, tls.median);
        if (have_direct)
            bench_plot_point("p11noise transport, one write() per message", size, direct.median);
        if (have_loop) {
            bench_plot_point("p11noise event loop (p11n_send)", size, loop.median);
            row.ref_name = "TLS 1.3";
            row.ref = have_tls ? &tls : NULL;
            row.ratio = pairs.n ? &pairs : NULL;
            row.key = size == 16384 ? "tput_16384_vs_tls" : size == 65535 ? "tput_65535_vs_tls"
                : NULL;
            if (size == 64) {
                row.goal = BENCH_GOAL_RATIO_MIN;
                row.goal_x = 0.8;
                row.goal_text = "≥ 0.8× TLS";
            } else if (size >= 16384) {
                row.goal = BENCH_GOAL_RATIO_MIN;
                row.goal_x = 1.2;
                row.goal_text = "≥ 1.2× TLS";
            }
            bench_table_row(&row);
            loop_vs_sansio(o, size, fig);
            if (size == 65535) {
                struct sized_fn raw1 = { bench_aead_raw, size };
                paired(o, (bench_row){ .figure = fig, .unit = BENCH_MBPS,
                    .ref_name = "raw AEAD, one core", .goal = BENCH_GOAL_RATIO_MIN,
                    .goal_x = 0.6, .goal_text = "≥ 0.6× AEAD limit" },
                    rep_sized, &rloop, rep_sized, &raw1, NULL);
                tunnel_rows(o, size);
            }
            if (size == 65535 && have_plain && raw != NULL) {
                /* Each core must both seal (or open) and move the bytes
                 * through the kernel: per byte, the two costs add. */
                bench_stat ceiling = { .n = 0 };
                for (int r = 0; r < plain.n && r < raw->n; r++)
                    bench_stat_add(&ceiling, 1 / (1 / raw->v[r] + 1 / plain.v[r]));
                bench_stat_finish(&ceiling);
                bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_MBPS, .ours = &loop,
                    .ref_name = "ceiling 1/(1/AEAD + 1/plain TCP)", .ref = &ceiling });
            }
        } else {
            bench_table_missing(fig, "event-loop connection failed");
        }
        if (have_plain)
            bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_MBPS, .ours = &loop,
                .ref_name = "plain TCP, no encryption", .ref = &plain });
        if (have_direct)
            bench_table_row(&(bench_row){ .figure = fig2, .unit = BENCH_MBPS, .ours = &direct,
                .ref_name = "TLS 1.3", .ref = have_tls ? &tls : NULL });
        else
            bench_table_missing(fig2, "transport over loopback failed");
    }
}

/* Scalar multiplications per handshake, both sides together (one
 * handshake at a time, so they add up on the critical path):
 *   KK  -> e, es, ss / <- e, ee, se: per side 1 key generation + 4 ECDH
 *   XK  -> e, es / <- e, ee / -> s, se: per side 1 key generation + 3 ECDH
 * Token derivations per handshake are counted (bench_count_derives); the
 * design's figures (KK 4 once the peers have met, XK 3) stand in only
 * when counting is not possible, and the row says so. */
typedef struct hs_costs {
    const char *pattern;
    int keygens, ecdhs, derivations;
    /* Derivation times on the critical path of one handshake driven in
     * one process: KK the initiator's ss (its parity known), the
     * responder's es and ss at once, the initiator's se; XK the
     * responder's es, the initiator's se (its two derivations at once). */
    int critical;
} hs_costs;

static const hs_costs kk_costs = { "KK", 2, 8, 4, 3 };
static const hs_costs xk_costs = { "XK", 2, 6, 3, 2 };

static int software_pair(bench_hs_side *a, bench_hs_side *b)
{
    size_t len;
    memset(a, 0, sizeof(*a));
    memset(b, 0, sizeof(*b));
    if (p11n_key_generate("secp256k1", &a->key) != P11N_OK
        || p11n_key_generate("secp256k1", &b->key) != P11N_OK
        || p11n_key_public(a->key, a->pub, sizeof(a->pub), &len) != P11N_OK
        || p11n_key_public(b->key, b->pub, sizeof(b->pub), &len) != P11N_OK) {
        p11n_key_free(a->key);
        p11n_key_free(b->key);
        return -1;
    }
    return 0;
}

/* ---- repetitions for bench_interleave ---- */

struct hs_rep {
    const char *pattern;
    const bench_hs_side *srv, *cli;
    const hs_costs *costs;
    const bench_token *token;   /* derive floor: the token measured */
    double derivations;         /* derive floor: counted per handshake */
};

static int rep_loopback(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    return bench_p11n_handshakes(o, h->pattern, h->srv, h->cli, out);
}

static int rep_local(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    return bench_p11n_handshakes_local(o, h->pattern, h->srv, h->cli, out);
}

/* The scalar floor: 1 / (k·G and ECDH costs of one handshake). */
static int rep_floor(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    bench_stat kg = { .n = 0 }, dh = { .n = 0 };
    if (bench_ecc_costs(o, &kg, &dh) != 0)
        return -1;
    bench_stat_add(out, 1e6 / (h->costs->keygens * kg.v[0] + h->costs->ecdhs * dh.v[0]));
    return 0;
}

/* The floor with the same traffic and no cryptography: both costs add. */
static int rep_floor_traffic(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    bench_stat fl = { .n = 0 }, null = { .n = 0 };
    if (rep_floor(o, arg, &fl) != 0 || bench_null_handshakes(o, h->pattern, &null) != 0)
        return -1;
    bench_stat_add(out, 1 / (1 / fl.v[0] + 1 / null.v[0]));
    return 0;
}

/* The token's derivation rate over the derivations a handshake needs. */
static int rep_derive_floor(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    bench_stat rate = { .n = 0 };
    if (bench_token_derive_rate(o, h->token, &rate) != 0)
        return -1;
    bench_stat_add(out, rate.v[0] / h->derivations);
    return 0;
}

static int rep_tls_chain(const bench_opts *o, void *arg, bench_stat *out)
{
    (void)arg;
    return bench_tls_handshakes(o, out);
}

static int rep_tls_pinned(const bench_opts *o, void *arg, bench_stat *out)
{
    (void)arg;
    return bench_tls_handshakes_pinned(o, out);
}

/* One figure against its reference in alternating repetitions, as a
 * row; a missing row if either side failed. */
static void paired_row(const bench_opts *o, const char *key, const char *fig,
    bench_rep_fn fa, bench_rep_fn fb, void *arg, const char *ref, double goal,
    const char *goal_text)
{
    paired(o, (bench_row){ .key = key, .figure = fig, .unit = BENCH_PER_SEC, .ref_name = ref,
        .goal = goal > 0 ? BENCH_GOAL_RATIO_MIN : BENCH_GOAL_NONE, .goal_x = goal,
        .goal_text = goal_text }, fa, arg, fb, arg, NULL);
}

/* Capacity per wall-clock second, and per CPU-second the server used
 * (what one core does even when the machine is shared). */
static int rep_capacity(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    return bench_p11n_capacity(o, h->srv, h->cli, 0, out);
}

static int rep_capacity_cpu(const bench_opts *o, void *arg, bench_stat *out)
{
    struct hs_rep *h = arg;
    return bench_p11n_capacity(o, h->srv, h->cli, 1, out);
}

static int rep_tls_capacity(const bench_opts *o, void *arg, bench_stat *out)
{
    (void)arg;
    return bench_tls_capacity(o, 0, out);
}

static int rep_tls_capacity_cpu(const bench_opts *o, void *arg, bench_stat *out)
{
    (void)arg;
    return bench_tls_capacity(o, 1, out);
}

/* The responder's own scalar multiplications, KK 1 k·G + 4 ECDH, per
 * CPU-second as the capacity it is compared with. */
static int rep_responder_floor(const bench_opts *o, void *arg, bench_stat *out)
{
    bench_stat kg = { .n = 0 }, dh = { .n = 0 };
    (void)arg;
    if (bench_ecc_costs_by(o, bench_thread_cpu, &kg, &dh) != 0)
        return -1;
    bench_stat_add(out, 1e6 / (kg.v[0] + 4 * dh.v[0]));
    return 0;
}

/* Server capacity, KK with software keys: against TLS 1.3 pinned under
 * the same load, and against the responder's scalar floor. */
static void capacity_rows(const bench_opts *o, const bench_hs_side *srv,
    const bench_hs_side *cli);

void bench_group_capacity(const bench_opts *o)
{
    bench_hs_side srv, cli;
    if (software_pair(&srv, &cli) != 0) {
        bench_json_missing("kk_capacity_vs_tls", "key generation failed");
        return;
    }
    capacity_rows(o, &srv, &cli);
    p11n_key_free(srv.key);
    p11n_key_free(cli.key);
}

static void capacity_rows(const bench_opts *o, const bench_hs_side *srv,
    const bench_hs_side *cli)
{
    static const char fig[] = "server capacity KK, software keys: handshakes/s of one "
                              "listener process on one CPU, 64 in flight";
    static const char fig_cpu[] = "server capacity KK, software keys: handshakes per "
                                  "CPU-second of the server, 64 in flight";
    static const char tls[] = "TLS 1.3 server, non-blocking, one process, pinned P-256, "
                              "same load";
    struct hs_rep h = { .pattern = "KK", .srv = srv, .cli = cli, .costs = &kk_costs };
    paired_row(o, "kk_capacity_vs_tls", fig_cpu, rep_capacity_cpu, rep_tls_capacity_cpu, &h,
        tls, 3.0, "≥ 3× TLS pinned");
    paired_row(o, NULL, fig_cpu, rep_capacity_cpu, rep_responder_floor, &h,
        "floor: the responder's 1 k·G + 4 ECDH (CPU time)", 0, NULL);
    paired_row(o, NULL, fig, rep_capacity, rep_tls_capacity, &h, tls, 0, NULL);
}

void bench_group_handshakes(const bench_opts *o)
{
    bench_stat kg = { .n = 0 }, dh = { .n = 0 };
    bench_hs_side srv, cli;
    const hs_costs *costs[2] = { &kk_costs, &xk_costs };
    static const char *const keys[2][3] = {
        { "kk_soft_vs_floor", "kk_soft_mem_vs_floor", "kk_soft_vs_tls_pinned" },
        { "xk_soft_vs_floor", "xk_soft_mem_vs_floor", "xk_soft_vs_tls_pinned" },
    };
    int have_ecc = bench_ecc_costs(o, &kg, &dh) == 0;
    int have_keys = software_pair(&srv, &cli) == 0;

    bench_table_row(&(bench_row){ .figure = "libsecp256k1 key generation (k·G)", .unit = BENCH_US,
        .ours = NULL, .ref_name = "cost", .ref = have_ecc ? &kg : NULL });
    bench_table_row(&(bench_row){ .figure = "libsecp256k1 ECDH (parse + k·P + SHA-256)",
        .unit = BENCH_US, .ours = NULL, .ref_name = "cost", .ref = have_ecc ? &dh : NULL });
    for (int i = 0; i < 2 && have_keys; i++) {
        char fig[96], fig2[112], ref[96];
        struct hs_rep h = { .pattern = costs[i]->pattern, .srv = &srv, .cli = &cli,
            .costs = costs[i] };
        snprintf(fig, sizeof(fig), "handshakes/s %s, software keys", costs[i]->pattern);
        snprintf(fig2, sizeof(fig2), "handshakes/s %s, software keys, both sides in one "
            "process, no sockets", costs[i]->pattern);
        snprintf(ref, sizeof(ref), "floor %d k·G + %d ECDH", costs[i]->keygens,
            costs[i]->ecdhs);
        paired_row(o, keys[i][1], fig2, rep_local, rep_floor, &h, ref, 0.95, "≥ 0.95× floor");
        paired_row(o, keys[i][0], fig, rep_loopback, rep_floor_traffic, &h,
            "floor with the same traffic, no crypto, added", 0.85, "≥ 0.85× floor");
        paired_row(o, keys[i][2], fig, rep_loopback, rep_tls_pinned, &h,
            "TLS 1.3 mutual, pinned self-signed P-256", 3.0, "≥ 3× TLS pinned");
        paired_row(o, NULL, fig, rep_loopback, rep_tls_chain, &h,
            "TLS 1.3 mutual ECDSA P-256, CA chain", 0, NULL);
    }
    if (!have_keys)
        bench_table_missing("handshakes/s, software keys", "key generation failed");
    if (have_keys) {
        p11n_key_free(srv.key);
        p11n_key_free(cli.key);
    }
}

/* Derivations per handshake, counted through the fault module: a row
 * and its JSON key; *per_hs gets the steady figure (or the design's). */
static void derive_count_row(const bench_token *t, const char *faultmod, const hs_costs *c,
    const char *key, double *per_hs)
{
    char fig[128];
    double first, steady;
    bench_stat v = { .n = 0 };
    snprintf(fig, sizeof(fig), "token derivations per %s handshake (C_DeriveKey, counted; "
        "KK's first with a peer in the note)", c->pattern);
    *per_hs = c->derivations;
    if (bench_count_derives(t, faultmod, c->pattern, "bench-local", "bench-client", &first,
            &steady) != 0) {
        bench_table_missing(fig, "the fault module is not built or counting failed");
        bench_json_missing(key, "not counted: the fault module is not built (make "
            "tests/faultmod.la) or counting failed");
        return;
    }
    *per_hs = steady;
    bench_stat_add(&v, steady);
    bench_stat_finish(&v);
    bench_stat goal = { .n = 0 };
    bench_stat_add(&goal, c->derivations);
    bench_stat_finish(&goal);
    if (!bench_json_enabled())
        printf("| %s | first handshake between the two keys: %.0f | | | | |\n", fig, first);
    bench_table_row(&(bench_row){ .key = key, .figure = fig, .unit = BENCH_COUNT, .ours = &v,
        .ref_name = "goal", .ref = &goal, .goal = BENCH_GOAL_ABS_MAX, .goal_x = c->derivations,
        .goal_text = c->derivations == 4 ? "≤ 4" : "≤ 3" });
}

/* Latency with every derivation delayed 50 ms against the derivations on
 * the critical path times 50 ms. */
static void latency_row(const bench_opts *o, const bench_token *t, const char *faultmod,
    const hs_costs *c, const char *key)
{
    char fig[128], ref[96];
    bench_stat ms = { .n = 0 }, floor = { .n = 0 };
    snprintf(fig, sizeof(fig), "handshake latency %s, SoftHSM2 keys, every derivation delayed "
        "50 ms, both ends in one process", c->pattern);
    if (bench_token_latency(o, t, faultmod, c->pattern, "bench-local", "bench-client", 50,
            &ms) != 0) {
        bench_table_missing(fig, "the fault module is not built or a handshake failed");
        bench_json_missing(key, "not measured: the fault module is not built or a handshake "
            "failed");
        return;
    }
    bench_stat_add(&floor, c->critical * 50.0);
    bench_stat_finish(&floor);
    snprintf(ref, sizeof(ref), "%d derivations on the critical path × 50 ms", c->critical);
    bench_table_row(&(bench_row){ .key = key, .figure = fig, .unit = BENCH_MS, .ours = &ms,
        .ref_name = ref, .ref = &floor, .goal = BENCH_GOAL_RATIO_MAX, .goal_x = 1.15,
        .goal_text = "≤ 1.15× critical path" });
}

void bench_group_token(const bench_opts *o, const char *module, const char *faultmod)
{
    bench_token stok, ctok;     /* the server's and the client's machine */
    bench_stat rate = { .n = 0 };
    bench_hs_side srv, cli;
    char tok_uri[512], srv_uri[512], cli_uri[512], local_uri[512];
    uint8_t local_pub[P11N_PUBKEY_LEN];
    const hs_costs *costs[2] = { &kk_costs, &xk_costs };
    static const char *const keys[2][3] = {
        { "kk_token_derives_per_hs", "kk_token_vs_derive_floor", "kk_token_latency_50ms" },
        { "xk_token_derives_per_hs", "xk_token_vs_derive_floor", "xk_token_latency_50ms" },
    };
    int have_s = bench_token_setup(module, &stok) == 0;
    int have_c = have_s && bench_token_setup(module, &ctok) == 0;

    if (!have_c) {
        bench_table_missing("handshakes/s with SoftHSM2 keys", "could not create SoftHSM2 tokens");
        goto done;
    }
    if (bench_token_derive_rate(o, &ctok, &rate) != 0) {
        bench_table_missing("SoftHSM2 C_DeriveKey rate", "raw derivation failed");
        goto done;
    }
    bench_table_row(&(bench_row){ .figure = "SoftHSM2 derivations/s (C_DeriveKey + read + destroy)",
        .unit = BENCH_PER_SEC, .ref_name = "token", .ref = &rate });
    memset(&srv, 0, sizeof(srv));
    memset(&cli, 0, sizeof(cli));
    bench_token_use(&stok);
    bench_token_uri(&stok, tok_uri, sizeof(tok_uri));
    if (bench_token_keygen(tok_uri, "bench-server", srv.pub) != 0) {
        bench_table_missing("handshakes/s with SoftHSM2 keys", "p11n_token_keygen failed");
        goto done;
    }
    bench_token_use(&ctok);
    bench_token_uri(&ctok, tok_uri, sizeof(tok_uri));
    if (bench_token_keygen(tok_uri, "bench-client", cli.pub) != 0) {
        bench_table_missing("handshakes/s with SoftHSM2 keys", "p11n_token_keygen failed");
        goto done;
    }
    /* For the one-process figures, a second key on the client's token. */
    if (bench_token_keygen(tok_uri, "bench-local", local_pub) != 0) {
        bench_table_missing("handshakes/s with SoftHSM2 keys", "p11n_token_keygen failed");
        goto done;
    }
    bench_token_key_uri(&ctok, "bench-local", local_uri, sizeof(local_uri));
    bench_token_key_uri(&stok, "bench-server", srv_uri, sizeof(srv_uri));
    bench_token_key_uri(&ctok, "bench-client", cli_uri, sizeof(cli_uri));
    srv.uri = srv_uri;
    srv.token = &stok;
    cli.uri = cli_uri;
    cli.token = &ctok;
    for (int i = 0; i < 2; i++) {
        char fig[96], ref[96];
        struct hs_rep h = { .pattern = costs[i]->pattern, .srv = &srv, .cli = &cli,
            .token = &ctok };
        derive_count_row(&ctok, faultmod, costs[i], keys[i][0], &h.derivations);
        latency_row(o, &ctok, faultmod, costs[i], keys[i][2]);
        snprintf(fig, sizeof(fig), "handshakes/s %s, both keys in SoftHSM2", costs[i]->pattern);
        snprintf(ref, sizeof(ref), "derive rate / %.1f derivations", h.derivations);
        paired_row(o, keys[i][1], fig, rep_loopback, rep_derive_floor, &h, ref, 0.85,
            "≥ 0.85× floor");
        if (i == 0)
            paired_row(o, NULL, "server capacity KK, SoftHSM2 keys: handshakes/s of one "
                "listener process on one CPU, 64 in flight", rep_capacity, rep_tls_capacity,
                &h, "TLS 1.3 server, non-blocking, one process, pinned P-256, same load", 0,
                NULL);
        bench_hs_side lsrv = { .token = &ctok, .uri = local_uri };
        memcpy(lsrv.pub, local_pub, sizeof(lsrv.pub));
        h.srv = &lsrv;
        snprintf(fig, sizeof(fig), "handshakes/s %s, SoftHSM2 keys, both sides in one "
            "process, no sockets", costs[i]->pattern);
        paired_row(o, NULL, fig, rep_local, rep_derive_floor, &h, ref, 0, NULL);
    }
done:
    if (have_s)
        bench_token_teardown(&stok);
    if (have_c)
        bench_token_teardown(&ctok);
}
