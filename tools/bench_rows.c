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

void bench_group_aead(const bench_opts *o)
{
    for (int i = 0; i < BENCH_NSIZES; i++) {
        if (!(o->sizes & (1u << i)))
            continue;
        char fig[96];
        bench_stat ours = { .n = 0 };
        const bench_stat *raw = raw_aead(o, i);

        snprintf(fig, sizeof(fig), "transport seal in memory, one core, %s", size_name(bench_sizes[i]));
        if (bench_p11n_seal(o, bench_sizes[i], &ours) != 0) {
            bench_table_missing(fig, "p11n_transport_seal failed");
            continue;
        }
        bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_MBPS, .ours = &ours,
            .ref_name = "raw EVP AEAD", .ref = raw, .goal = BENCH_GOAL_NONE });
    }
}

void bench_group_throughput(const bench_opts *o)
{
    for (int i = 0; i < BENCH_NSIZES; i++) {
        if (!(o->sizes & (1u << i)))
            continue;
        size_t size = bench_sizes[i];
        char fig[128], fig2[128];
        bench_stat loop = { .n = 0 }, direct = { .n = 0 }, tls = { .n = 0 }, plain = { .n = 0 };
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
        have_tls = bench_tls_throughput(o, size, &tls) == 0;
        have_loop = bench_loop_throughput(o, size, &loop) == 0;
        have_direct = bench_p11n_throughput(o, size, &direct) == 0;
        if (have_tls)
            bench_plot_point("TLS 1.3 (OpenSSL, CHACHA20-POLY1305)", size, tls.median);
        if (have_direct)
            bench_plot_point("p11noise transport, one write() per message", size, direct.median);
        if (have_loop) {
            bench_plot_point("p11noise event loop (p11n_send)", size, loop.median);
            row.ref_name = "TLS 1.3";
            row.ref = have_tls ? &tls : NULL;
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
            if (size == 65535)
                bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_MBPS, .ours = &loop,
                    .ref_name = "raw AEAD, one core", .ref = raw, .goal = BENCH_GOAL_RATIO_MIN,
                    .goal_x = 0.6, .goal_text = "≥ 0.6× AEAD limit" });
            if (size == 65535) {
                static const char tfig[] = "throughput, one connection through p11noise "
                                           "tunnel client and server, 64 KiB writes";
                bench_stat tun = { .n = 0 }, stun = { .n = 0 };
                int have_stun = bench_stunnel_throughput(o, &stun);
                if (bench_tunnel_throughput(o, &tun) == 0) {
                    bench_table_row(&(bench_row){ .figure = tfig, .unit = BENCH_MBPS,
                        .ours = &tun, .ref_name = "event loop (p11n_send)", .ref = &loop,
                        .goal = BENCH_GOAL_RATIO_MIN, .goal_x = 0.8,
                        .goal_text = "≥ 0.8× the library" });
                    bench_table_row(&(bench_row){ .figure = tfig, .unit = BENCH_MBPS,
                        .ours = &tun, .ref_name = have_stun == -2
                            ? "stunnel, same arrangement: not installed"
                            : "stunnel, same arrangement, TLS 1.3 CHACHA20-POLY1305",
                        .ref = have_stun == 0 ? &stun : NULL });
                } else {
                    bench_table_missing(tfig, "the tunnel did not start or carry the bytes");
                }
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
 * Static-key DHs (per side KK: 2, XK: 1) cost two token derivations each
 * with a token key (parity recovery). */
typedef struct hs_costs {
    const char *pattern;
    int keygens, ecdhs, derivations;
} hs_costs;

static const hs_costs kk_costs = { "KK", 2, 8, 8 };
static const hs_costs xk_costs = { "XK", 2, 6, 4 };

static void floor_from(const hs_costs *c, const bench_stat *kg, const bench_stat *dh,
    bench_stat *floor)
{
    memset(floor, 0, sizeof(*floor));
    for (int i = 0; i < kg->n && i < dh->n; i++)
        bench_stat_add(floor, 1e6 / (c->keygens * kg->v[i] + c->ecdhs * dh->v[i]));
    bench_stat_finish(floor);
}

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

void bench_group_handshakes(const bench_opts *o)
{
    bench_stat kg = { .n = 0 }, dh = { .n = 0 }, tls = { .n = 0 };
    bench_hs_side srv, cli;
    const hs_costs *costs[2] = { &kk_costs, &xk_costs };
    int have_ecc = bench_ecc_costs(o, &kg, &dh) == 0;
    int have_tls = bench_tls_handshakes(o, &tls) == 0;
    int have_keys = software_pair(&srv, &cli) == 0;

    bench_table_row(&(bench_row){ .figure = "libsecp256k1 key generation (k·G)", .unit = BENCH_US,
        .ours = NULL, .ref_name = "cost", .ref = have_ecc ? &kg : NULL });
    bench_table_row(&(bench_row){ .figure = "libsecp256k1 ECDH (parse + k·P + SHA-256)",
        .unit = BENCH_US, .ours = NULL, .ref_name = "cost", .ref = have_ecc ? &dh : NULL });
    for (int i = 0; i < 2; i++) {
        char fig[96];
        bench_stat ours = { .n = 0 }, floor;
        snprintf(fig, sizeof(fig), "handshakes/s %s, software keys", costs[i]->pattern);
        if (!have_keys || bench_p11n_handshakes(o, costs[i]->pattern, &srv, &cli, &ours) != 0) {
            bench_table_missing(fig, "handshake over loopback failed");
            continue;
        }
        bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_PER_SEC, .ours = &ours,
            .ref_name = "TLS 1.3 mutual ECDSA P-256", .ref = have_tls ? &tls : NULL,
            .goal = BENCH_GOAL_RATIO_MIN, .goal_x = 2.0, .goal_text = "≥ 2× TLS" });
        if (have_ecc) {
            char ref[96], fig2[112];
            bench_stat null = { .n = 0 }, both = { .n = 0 }, local = { .n = 0 };
            floor_from(costs[i], &kg, &dh, &floor);
            snprintf(fig2, sizeof(fig2), "handshakes/s %s, software keys, both sides in one "
                "process, no sockets", costs[i]->pattern);
            if (bench_p11n_handshakes_local(o, costs[i]->pattern, &srv, &cli, &local) == 0)
                bench_table_row(&(bench_row){ .figure = fig2, .unit = BENCH_PER_SEC,
                    .ours = &local, .ref_name = "floor", .ref = &floor });
            snprintf(ref, sizeof(ref), "floor %d k·G + %d ECDH", costs[i]->keygens,
                costs[i]->ecdhs);
            bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_PER_SEC, .ours = &ours,
                .ref_name = ref, .ref = &floor, .goal = BENCH_GOAL_RATIO_MIN,
                .goal_x = 1 / 1.3, .goal_text = "within 1.3× of floor (≥ 0.77×)" });
            /* What the same connections and acts cost with no crypto,
             * and the floor once that is added. */
            if (bench_null_handshakes(o, costs[i]->pattern, &null) == 0) {
                for (int r = 0; r < null.n && r < floor.n; r++)
                    bench_stat_add(&both, 1 / (1 / floor.v[r] + 1 / null.v[r]));
                bench_stat_finish(&both);
                bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_PER_SEC,
                    .ours = &ours, .ref_name = "same traffic, no crypto", .ref = &null });
                bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_PER_SEC,
                    .ours = &ours, .ref_name = "floor with that traffic added", .ref = &both });
            }
        }
    }
    if (have_keys) {
        p11n_key_free(srv.key);
        p11n_key_free(cli.key);
    }
}

void bench_group_token(const bench_opts *o, const char *module)
{
    bench_token stok, ctok;     /* the server's and the client's machine */
    bench_stat rate = { .n = 0 };
    bench_hs_side srv, cli;
    char tok_uri[512], srv_uri[512], cli_uri[512], local_uri[512];
    uint8_t local_pub[P11N_PUBKEY_LEN];
    const hs_costs *costs[2] = { &kk_costs, &xk_costs };
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
    /* For the one-process figure, a second key on the client's token. */
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
        bench_stat ours = { .n = 0 }, floor = { .n = 0 };
        snprintf(fig, sizeof(fig), "handshakes/s %s, both keys in SoftHSM2", costs[i]->pattern);
        if (bench_p11n_handshakes(o, costs[i]->pattern, &srv, &cli, &ours) != 0) {
            bench_table_missing(fig, "handshake with token keys failed");
            continue;
        }
        for (int r = 0; r < rate.n; r++)
            bench_stat_add(&floor, rate.v[r] / costs[i]->derivations);
        bench_stat_finish(&floor);
        snprintf(ref, sizeof(ref), "derive rate / %d derivations", costs[i]->derivations);
        bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_PER_SEC, .ours = &ours,
            .ref_name = ref, .ref = &floor, .goal = BENCH_GOAL_RATIO_MIN, .goal_x = 1 / 1.3,
            .goal_text = "within 1.3× of floor (≥ 0.77×)" });
        {
            bench_hs_side lsrv = { .token = &ctok, .uri = local_uri };
            bench_stat local = { .n = 0 };
            memcpy(lsrv.pub, local_pub, sizeof(lsrv.pub));
            snprintf(fig, sizeof(fig), "handshakes/s %s, SoftHSM2 keys, both sides in one "
                "process, no sockets", costs[i]->pattern);
            if (bench_p11n_handshakes_local(o, costs[i]->pattern, &lsrv, &cli, &local) == 0)
                bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_PER_SEC,
                    .ours = &local, .ref_name = ref, .ref = &floor });
        }
    }
done:
    if (have_s)
        bench_token_teardown(&stok);
    if (have_c)
        bench_token_teardown(&ctok);
}
