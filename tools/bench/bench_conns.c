/*
 * Figures of the event loop, through the public networking API: a server
 * process holding many mostly idle connections (memory per connection, and
 * the round trip of one busy connection among them), and a server whose
 * token takes 100 ms per derivation while handshakes keep arriving (the
 * round trip on connections already established).
 *
 * The server is a child process running a p11noise listener that echoes
 * every message; the client (this process) is a p11noise context too.
 */
#include <malloc.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define PING_LEN 64
#define MEM_QUERY "memory?"

/* Heap bytes in use (every arena) and the resident set, both in bytes. */
static void memory_now(double *heap, double *rss)
{
    struct mallinfo2 mi = mallinfo2();
    char line[128];
    FILE *f = fopen("/proc/self/status", "r");

    *heap = (double)(mi.uordblks + mi.hblkhd);
    *rss = 0;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss = atof(line + 6) * 1024;
    if (f != NULL)
        fclose(f);
}

/* Only errors reach stderr: 10,000 connections would log 10,000 lines. */
static p11n_ctx *quiet_ctx(unsigned max_handshakes)
{
    p11n_ctx_options opt;
    p11n_ctx *ctx = NULL;
    opt = (p11n_ctx_options)P11N_CTX_OPTIONS_INIT;
    opt.log_level = P11N_LOG_ERROR;
    opt.max_handshakes = max_handshakes;
    return p11n_ctx_new(&opt, &ctx) == P11N_OK ? ctx : NULL;
}

/* ---- the echo server (child) ---- */

struct server_arg {
    const char *key_uri;          /* token key, opened in the child; or: */
    p11n_key *key;                /* software key */
    uint8_t client_pub[P11N_PUBKEY_LEN];
    size_t nofile;                /* descriptors the server needs */
    int report_fd;                /* pipe to the parent: the port */
    const char *fault;            /* P11N_FAULT for the token module, or NULL */
};

struct server_state {
    struct server_arg *a;
    size_t established;
    double heap0, rss0;
};

static void srv_established(p11n_conn *c, const char *peer, void *arg)
{
    struct server_state *s = arg;
    (void)c;
    (void)peer;
    s->established++;
}

/* Echo every message, except MEM_QUERY: it is answered with the heap and
 * resident-set growth since the listener started, per connection held. */
static void srv_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct server_state *s = arg;
    double m[2];

    if (len == sizeof(MEM_QUERY) - 1 && memcmp(msg, MEM_QUERY, len) == 0) {
        memory_now(&m[0], &m[1]);
        m[0] = (m[0] - s->heap0) / (double)s->established;
        m[1] = (m[1] - s->rss0) / (double)s->established;
        msg = (const uint8_t *)m;
        len = sizeof(m);
    }
    /* One ping at a time never fills the queue; if it ever does, the
     * figure would be wrong, so drop the connection and let it show. */
    if (p11n_send(c, msg, len) != P11N_OK)
        p11n_close(c);
}

static void srv_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct server_state *s = arg;
    (void)c;
    (void)reason;
    (void)text;
    (void)final;
    (void)s;
}

static int echo_serve(void *p)
{
    struct server_arg *a = p;
    struct server_state st = { .a = a };
    p11n_ctx *ctx;
    p11n_key *key = a->key;
    p11n_listener *l = NULL;
    p11n_listen_options lo;
    const char *peers[1] = { "client" };
    uint16_t port;

    bench_raise_nofile((long)a->nofile + 256);
    if (a->fault != NULL)
        setenv("P11N_FAULT", a->fault, 1);
    if (a->key_uri != NULL && p11n_key_load(a->key_uri, &key) != P11N_OK)
        return -1;
    ctx = quiet_ctx(0);
    if (ctx == NULL || p11n_ceremony_input(ctx, a->client_pub, "client", 0) != P11N_OK)
        return -1;
    lo = (p11n_listen_options)P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = key;
    lo.ch.cb.established = srv_established;
    lo.ch.cb.message = srv_message;
    lo.ch.cb.closed = srv_closed;
    lo.ch.cb.arg = &st;
    lo.peers = peers;
    lo.npeers = 1;
    if (p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) != P11N_OK)
        return -1;
    memory_now(&st.heap0, &st.rss0);
    port = p11n_listener_port(l);
    if (bench_write_all(a->report_fd, &port, sizeof(port)) != 0)
        return -1;
    return p11n_run(ctx) == P11N_OK ? 0 : -1;
}

/* ---- the client (this process) ---- */

enum role { ROLE_IDLE, ROLE_BUSY, ROLE_ARRIVAL };

struct client {
    p11n_ctx *ctx;
    uint16_t port;
    size_t established, failed, pending;
    size_t arrivals_done, arrivals_failed;
    p11n_conn *busy;
    int got;                      /* the busy connection's echo arrived */
    uint8_t last[16];             /* its first bytes */
    unsigned long pings, iterations; /* loop iterations per round trip (-v) */
};

struct conn_tag {
    struct client *cl;
    enum role role;
};

static void cli_established(p11n_conn *c, const char *peer, void *arg)
{
    struct conn_tag *t = arg;
    (void)peer;
    t->cl->pending--;
    if (t->role == ROLE_ARRIVAL) {
        /* an arriving handshake has done its job: leave */
        t->cl->arrivals_done++;
        p11n_close(c);
        return;
    }
    t->cl->established++;
    if (t->role == ROLE_BUSY)
        t->cl->busy = c;
}

static void cli_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct conn_tag *t = arg;
    if (c == t->cl->busy) {
        t->cl->got = 1;
        memcpy(t->cl->last, msg, len < sizeof(t->cl->last) ? len : sizeof(t->cl->last));
    }
}

static void cli_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct conn_tag *t = arg;
    (void)text;
    (void)final;
    if (reason == P11N_OK)
        return;
    if (c == t->cl->busy)
        t->cl->busy = NULL;
    if (t->role == ROLE_ARRIVAL) {
        if (p11n_conn_peer(c) == NULL) {
            t->cl->pending--;
            t->cl->arrivals_failed++;
        }
    } else {
        t->cl->failed++;
        t->cl->pending--;
    }
}

static int client_connect(struct client *cl, p11n_key *key, struct conn_tag *tag)
{
    p11n_connect_options co;
    p11n_conn *c;
    co = (p11n_connect_options)P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = key;
    co.ch.cb.established = cli_established;
    co.ch.cb.message = cli_message;
    co.ch.cb.closed = cli_closed;
    co.ch.cb.arg = tag;
    if (p11n_connect(cl->ctx, "127.0.0.1", cl->port, "server", &co, &c) != P11N_OK)
        return -1;
    cl->pending++;
    return 0;
}

/* Open n connections (the first is the busy one), at most `window`
 * handshakes at a time. */
static int client_open(struct client *cl, p11n_key *key, size_t n, size_t window,
    struct conn_tag *busy_tag, struct conn_tag *idle_tag, double timeout_s)
{
    size_t started = 0;
    double t0 = bench_now();

    while (cl->established < n) {
        while (started < n && cl->pending < window) {
            if (client_connect(cl, key, started == 0 ? busy_tag : idle_tag) != 0)
                return -1;
            started++;
        }
        if (cl->failed > 0 || bench_now() - t0 > timeout_s
            || p11n_run_once(cl->ctx, 100) == P11N_ERR_IO)
            return -1;
    }
    return cl->busy != NULL ? 0 : -1;
}

/* One round trip of a message on the busy connection, in ms. */
static int round_trip(struct client *cl, const void *msg, size_t len, double *ms)
{
    double t0 = bench_now();
    cl->got = 0;
    if (cl->busy == NULL || p11n_send(cl->busy, msg, len) != P11N_OK)
        return -1;
    while (!cl->got) {
        if (cl->busy == NULL || p11n_run_once(cl->ctx, 1000) == P11N_ERR_IO)
            return -1;
        cl->iterations++;
    }
    cl->pings++;
    *ms = (bench_now() - t0) * 1e3;
    return 0;
}

static int ping(struct client *cl, double *ms)
{
    static const uint8_t msg[PING_LEN];
    return round_trip(cl, msg, sizeof(msg), ms);
}

/* Let every connection sit idle past the library's buffer trimming (each
 * second, buffers unused for a whole interval are released), then ask the
 * server for its memory per connection. */
static int idle_memory(struct client *cl, double mem[2])
{
    double t0 = bench_now(), ms;
    while (bench_now() - t0 < 2.5)
        if (p11n_run_once(cl->ctx, 100) == P11N_ERR_IO)
            return -1;
    if (round_trip(cl, MEM_QUERY, sizeof(MEM_QUERY) - 1, &ms) != 0)
        return -1;
    memcpy(mem, cl->last, 2 * sizeof(double));
    return 0;
}

/* Microseconds one poll() (timeout 0) takes over the fds the client's
 * loop watches, taken from the external-loop API: with poll(), every loop
 * iteration pays this whatever the number of ready connections. */
static int poll_cost(struct client *cl, bench_stat *out, int reps)
{
    size_t n = 0, cap = 0;
    int timeout, rc = -1;
    struct pollfd *fds = NULL;

    if (p11n_poll_fds(cl->ctx, NULL, 0, &n, &timeout) != P11N_ERR_BUFFER_TOO_SMALL && n > 0)
        return -1;
    cap = n + 16;
    fds = calloc(cap, sizeof(*fds));
    if (fds == NULL || p11n_poll_fds(cl->ctx, fds, cap, &n, &timeout) != P11N_OK)
        goto done;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (int i = 0; i < 20; i++)
            if (poll(fds, n, 0) < 0)
                goto done;
        bench_stat_add(out, (bench_now() - t0) / 20 * 1e6);
    }
    bench_stat_finish(out);
    rc = 0;
done:
    free(fds);
    return rc;
}

/* Round-trip samples for `secs`, summarised as p50 and p99 in ms. When
 * `arrival_key` is set, a new handshake also starts every 100 ms. */
static int rtt_rep(struct client *cl, double secs, p11n_key *arrival_key,
    struct conn_tag *arrival_tag, double *p50, double *p99)
{
    size_t cap = 1 << 16, n = 0;
    double *v = malloc(cap * sizeof(double));
    double t0 = bench_now(), next_arrival = t0;
    int rc = 0;

    if (v == NULL)
        return -1;
    while (rc == 0 && bench_now() - t0 < secs) {
        if (arrival_key != NULL && bench_now() >= next_arrival) {
            rc = client_connect(cl, arrival_key, arrival_tag);
            next_arrival += 0.1;
        }
        if (rc == 0 && n < cap)
            rc = ping(cl, &v[n++]);
    }
    if (rc == 0 && n > 0) {
        *p99 = bench_percentile(v, n, 99);
        *p50 = bench_percentile(v, n, 50);
    }
    free(v);
    return rc == 0 && n > 0 ? 0 : -1;
}

/* A client context and a server child holding `server->report_at`
 * connections; afterwards the caller runs its measurements and stops. */
typedef struct session {
    struct client cl;
    pid_t pid;
    int fds[2];
    struct conn_tag busy, idle, arrival;
    double open_ms;               /* time to establish every connection */
} session;

static void session_end(session *s)
{
    p11n_ctx_free(s->cl.ctx);
    bench_child_stop(s->pid);
    if (s->fds[0] >= 0)
        close(s->fds[0]);
    if (s->fds[1] >= 0)
        close(s->fds[1]);
}

static int session_start(session *s, struct server_arg *srv, p11n_key *ckey,
    const uint8_t server_pub[P11N_PUBKEY_LEN], size_t n, size_t window, double timeout_s,
    double mem[2], int verbose)
{
    double t0;

    memset(s, 0, sizeof(*s));
    s->fds[0] = s->fds[1] = -1;
    s->pid = -1;
    s->busy = (struct conn_tag){ &s->cl, ROLE_BUSY };
    s->idle = (struct conn_tag){ &s->cl, ROLE_IDLE };
    s->arrival = (struct conn_tag){ &s->cl, ROLE_ARRIVAL };
    if (pipe(s->fds) != 0)
        return -1;
    srv->report_fd = s->fds[1];
    srv->nofile = n;
    s->pid = bench_fork(echo_serve, srv);
    if (s->pid < 0 || bench_read_all(s->fds[0], &s->cl.port, sizeof(s->cl.port)) != 0)
        return -1;
    s->cl.ctx = quiet_ctx(0);
    t0 = bench_now();
    if (s->cl.ctx == NULL
        || p11n_ceremony_input(s->cl.ctx, server_pub, "server", 0) != P11N_OK
        || client_open(&s->cl, ckey, n, window, &s->busy, &s->idle, timeout_s) != 0)
        return -1;
    s->open_ms = (bench_now() - t0) * 1e3;
    if (verbose)
        fprintf(stderr, "bench: %zu connections established in %.0f ms\n", n, s->open_ms);
    return mem != NULL ? idle_memory(&s->cl, mem) : 0;
}

/* RTT p50/p99 statistics over the repetitions of one session. */
static int rtt_stats(session *s, const bench_opts *o, double secs, p11n_key *arrivals,
    bench_stat *p50, bench_stat *p99)
{
    for (int r = 0; r < o->reps; r++) {
        double a, b;
        if (rtt_rep(&s->cl, secs, arrivals, &s->arrival, &a, &b) != 0)
            return -1;
        bench_stat_add(p50, a);
        bench_stat_add(p99, b);
    }
    if (o->verbose)
        fprintf(stderr, "bench: %lu round trips, %.2f client loop iterations each\n",
            s->cl.pings, (double)s->cl.iterations / (double)s->cl.pings);
    bench_stat_finish(p50);
    bench_stat_finish(p99);
    return 0;
}

static int soft_key(p11n_key **key, uint8_t pub[P11N_PUBKEY_LEN])
{
    size_t len;
    if (p11n_key_generate("secp256k1", key) != P11N_OK)
        return -1;
    if (p11n_key_public(*key, pub, P11N_PUBKEY_LEN, &len) != P11N_OK) {
        p11n_key_free(*key);
        return -1;
    }
    return 0;
}

void bench_group_conns(const bench_opts *o)
{
    p11n_key *skey = NULL, *ckey = NULL;
    uint8_t spub[P11N_PUBKEY_LEN];
    struct server_arg srv;
    bench_stat p50_1 = { .n = 0 }, p99_1 = { .n = 0 }, poll_1 = { .n = 0 };
    size_t sizes[2] = { 1000, 10000 };
    double secs = o->rep_seconds < 0.05 ? 0.05 : o->rep_seconds;
    long lim = bench_raise_nofile(sizes[1] + 256);

    if (o->quick) {
        sizes[0] = 100;
        sizes[1] = 1000;
    }
    memset(&srv, 0, sizeof(srv));
    if (soft_key(&skey, spub) != 0 || soft_key(&ckey, srv.client_pub) != 0) {
        bench_table_missing("many connections", "key generation failed");
        goto done;
    }
    srv.key = skey;
    {
        session s;
        if (session_start(&s, &srv, ckey, spub, 1, 1, 30, NULL, o->verbose) != 0
            || rtt_stats(&s, o, secs, NULL, &p50_1, &p99_1) != 0
            || poll_cost(&s.cl, &poll_1, o->reps) != 0) {
            bench_table_missing("RTT, single connection", "could not run the echo session");
            session_end(&s);
            goto done;
        }
        session_end(&s);
    }
    for (int i = 0; i < 2; i++) {
        session s;
        size_t n = sizes[i];
        double mem[2];
        bench_stat heap = { .n = 0 }, rss = { .n = 0 }, p50 = { .n = 0 }, p99 = { .n = 0 },
            pc = { .n = 0 };
        char fig[128], why[96];

        snprintf(fig, sizeof(fig), "%zu idle connections", n);
        if ((long)n + 64 > lim) {
            snprintf(why, sizeof(why), "RLIMIT_NOFILE is %ld", lim);
            bench_table_missing(fig, why);
            continue;
        }
        if (session_start(&s, &srv, ckey, spub, n, 128, 300, mem, o->verbose) != 0
            || rtt_stats(&s, o, secs, NULL, &p50, &p99) != 0
            || poll_cost(&s.cl, &pc, o->reps) != 0) {
            snprintf(why, sizeof(why), "session failed (%zu established, %zu failed)",
                s.cl.established, s.cl.failed);
            bench_table_missing(fig, why);
            session_end(&s);
            continue;
        }
        session_end(&s);
        bench_stat_add(&heap, mem[0] / 1024);
        bench_stat_finish(&heap);
        bench_stat_add(&rss, mem[1] / 1024);
        bench_stat_finish(&rss);
        snprintf(fig, sizeof(fig), "server heap per idle connection, %zu connections", n);
        bench_table_row(&(bench_row){ .key = n == 10000 ? "conn10k_heap_kib" : NULL,
            .figure = fig, .unit = BENCH_KIB, .ours = &heap,
            .ref_name = "VmRSS delta per connection", .ref = &rss,
            .goal = BENCH_GOAL_ABS_MAX, .goal_x = 8, .goal_text = "≤ 8 KiB" });
        snprintf(fig, sizeof(fig), "RTT p50, busy connection among %zu", n);
        bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_MS, .ours = &p50,
            .ref_name = "single connection", .ref = &p50_1 });
        snprintf(fig, sizeof(fig), "RTT p99, busy connection among %zu", n);
        bench_table_row(&(bench_row){ .key = n == 10000 ? "conn10k_rtt_p99_vs_single" : NULL,
            .figure = fig, .unit = BENCH_MS, .ours = &p99,
            .ref_name = "single connection", .ref = &p99_1, .goal = BENCH_GOAL_RATIO_MAX,
            .goal_x = 2, .goal_text = "≤ 2× single" });
        snprintf(fig, sizeof(fig), "one poll() over the client loop's fds, %zu connections", n);
        bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_US, .ours = &pc,
            .ref_name = "single connection", .ref = &poll_1 });
    }
done:
    p11n_key_free(skey);
    p11n_key_free(ckey);
}

void bench_group_slowtoken(const bench_opts *o, const char *module, const char *faultmod)
{
    bench_token tok;
    char tok_uri[512], key_uri[768];
    uint8_t spub[P11N_PUBKEY_LEN];
    p11n_key *ckey = NULL;
    struct server_arg srv;
    bench_stat q50 = { .n = 0 }, q99 = { .n = 0 }, l50 = { .n = 0 }, l99 = { .n = 0 };
    double secs = o->quick ? 0.3 : 2.0;
    const char *fig = "RTT p99, established connection, 10 handshakes/s on a 100 ms token";
    session s;

    if (access(faultmod, R_OK) != 0) {
        bench_table_missing(fig, "fault module not built (make tests/faultmod.la)");
        return;
    }
    if (bench_token_setup(module, &tok) != 0) {
        bench_table_missing(fig, "could not create a SoftHSM2 token");
        return;
    }
    memset(&srv, 0, sizeof(srv));
    bench_token_uri(&tok, tok_uri, sizeof(tok_uri));
    if (bench_token_keygen(tok_uri, "bench-server", spub) != 0
        || soft_key(&ckey, srv.client_pub) != 0) {
        bench_table_missing(fig, "key generation failed");
        goto done;
    }
    /* The server opens its key through the fault module, which forwards
     * to SoftHSM2 after sleeping 100 ms in every C_DeriveKey. */
    snprintf(key_uri, sizeof(key_uri),
        "pkcs11:token=%s;object=bench-server?pin-value=%s&module-path=%s", tok.label, tok.pin,
        faultmod);
    setenv("P11N_FAULT_MODULE", module, 1);
    srv.key_uri = key_uri;
    srv.fault = "C_DeriveKey:delay=100";
    if (session_start(&s, &srv, ckey, spub, 1, 1, 60, NULL, o->verbose) != 0
        || rtt_stats(&s, o, secs, NULL, &q50, &q99) != 0
        || rtt_stats(&s, o, secs, ckey, &l50, &l99) != 0) {
        bench_table_missing(fig, "echo session with the slow token failed");
        session_end(&s);
        goto done;
    }
    if (o->verbose)
        fprintf(stderr, "bench: slow token: first handshake %.0f ms; arriving handshakes: "
                        "%zu completed, %zu failed\n", s.open_ms, s.cl.arrivals_done,
            s.cl.arrivals_failed);
    session_end(&s);
    bench_table_row(&(bench_row){ .figure = fig, .unit = BENCH_MS, .ours = &l99,
        .ref_name = "without handshakes", .ref = &q99, .goal = BENCH_GOAL_ABS_MAX, .goal_x = 5,
        .goal_text = "< 5 ms" });
    bench_table_row(&(bench_row){
        .figure = "RTT p50, established connection, 10 handshakes/s on a 100 ms token",
        .unit = BENCH_MS, .ours = &l50, .ref_name = "without handshakes", .ref = &q50 });
done:
    p11n_key_free(ckey);
    bench_token_teardown(&tok);
}
