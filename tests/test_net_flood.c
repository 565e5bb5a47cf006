/*
 * A KK listener under a flood of act-1 messages from peers it cannot
 * authenticate. Its key is on a SoftHSM2 token behind tests/faultmod.so,
 * every derivation delayed 5 ms, and it accepts 16 initiators, so a
 * bogus act is worth up to 17 derivations. A thread sends well-formed
 * acts (a fresh valid ephemeral point, a random tag) at 200 per second,
 * directly or through a real SOCKS5 proxy (every peer then comes from
 * the proxy's address), while legitimate clients keep connecting and an
 * established connection keeps exchanging messages. The legitimate
 * clients use the library's default reconnect backoff. Asserted: every
 * legitimate handshake completes within 3 s, and the established
 * connection's round trips stay under 1 s. Printed: the handshake times,
 * the legitimate attempts refused, the round-trip p50/p99, the acts
 * refused, the derivations the token spent per bogus act (counted by the
 * fault module), and the pool's groups, batches and deepest queue.
 *
 * P11N_FLOOD_S sets the flood's length in seconds (default 6).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "crypto.h"
#include "faultutil.h"
#include "net/worker.h"
#include "netutil.h"
#include "p11noise.h"
#include "proxyutil.h"
#include "softhsm.h"
#include "testutil.h"

#define NINIT 16                 /* accepted initiators: the listener's candidates */
#define FLOOD_PER_S 200
#define DERIVE_DELAY "C_DeriveKey:delay=5"
#define LEGIT_EVERY_MS 250       /* a new legitimate handshake this often */
#define LEGIT_MAX_MS 3000        /* each must complete within this */
#define PING_EVERY_MS 50
#define RTT_MAX_MS 1000
#define MAX_SAMPLES 4096

static struct t_token T;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---- the flood ---- */

struct flood {
    uint16_t port;          /* the listener */
    uint16_t proxy;         /* 0: direct; else the SOCKS5 proxy's port */
    unsigned seconds;
    pthread_t thread;
    atomic_uint sent;       /* acts sent whole */
    atomic_uint failed;     /* connections or proxy tunnels that failed */
};

/* Small messages on a blocking loopback socket: one call each. */
static int send_all(int fd, const uint8_t *p, size_t n)
{
    return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static int recv_all(int fd, uint8_t *p, size_t n)
{
    return recv(fd, p, n, MSG_WAITALL) == (ssize_t)n ? 0 : -1;
}

/* A SOCKS5 tunnel (no authentication) to 127.0.0.1:port. */
static int socks5_open(int fd, uint16_t port)
{
    static const uint8_t hello[] = { 5, 1, 0 };
    uint8_t req[10] = { 5, 1, 0, 1, 127, 0, 0, 1, (uint8_t)(port >> 8), (uint8_t)port };
    uint8_t rep[10];
    if (send_all(fd, hello, sizeof(hello)) != 0 || recv_all(fd, rep, 2) != 0 || rep[1] != 0)
        return -1;
    if (send_all(fd, req, sizeof(req)) != 0 || recv_all(fd, rep, sizeof(rep)) != 0 || rep[1] != 0)
        return -1;
    return 0;
}

/* Version byte, a fresh valid ephemeral point, a random tag: what a real
 * initiator's act 1 looks like to anyone without the key. */
static void bogus_act(uint8_t act[50], uint64_t *seed)
{
    uint8_t priv[32];
    act[0] = 0;
    if (p11n_dh_secp256k1.generate(priv, act + 1) != P11N_OK)
        abort();
    t_fill(act + 34, 16, seed);
}

/* Each bogus connection stays open for the next HOLD acts (0.64 s at 200
 * per second), as an attacker's would: a peer that closes at once has its
 * queued act dropped before the token, which would make the flood cheap. */
#define HOLD 128

static void *flood_main(void *arg)
{
    struct flood *f = arg;
    uint64_t seed = now_us();
    unsigned total = f->seconds * FLOOD_PER_S;
    uint64_t start = now_us();
    int held[HOLD];
    for (unsigned i = 0; i < HOLD; i++)
        held[i] = -1;
    for (unsigned i = 0; i < total; i++) {
        uint64_t due = start + (uint64_t)i * 1000000 / FLOOD_PER_S;
        uint64_t t = now_us();
        if (t < due)
            usleep((useconds_t)(due - t));
        uint8_t act[50];
        bogus_act(act, &seed);
        int fd = t_connect_loopback(f->proxy != 0 ? f->proxy : f->port);
        int ok = fd >= 0 && (f->proxy == 0 || socks5_open(fd, f->port) == 0)
            && send_all(fd, act, sizeof(act)) == 0;
        if (ok)
            atomic_fetch_add(&f->sent, 1);
        else
            atomic_fetch_add(&f->failed, 1);
        if (held[i % HOLD] >= 0)
            close(held[i % HOLD]);
        held[i % HOLD] = fd;
    }
    for (unsigned i = 0; i < HOLD; i++)
        if (held[i] >= 0)
            close(held[i]);
    return NULL;
}

/* ---- the legitimate side ---- */

struct legit {
    uint64_t started;       /* now_ms() at p11n_connect */
    p11n_conn *conn;
    int established, closed, reason;
    unsigned attempts;      /* closes before it was established */
};

struct clients {
    struct legit hs[256];
    size_t nhs;
    /* the established connection's round trips */
    p11n_conn *pinger;
    int pinger_up, pinger_closed;
    uint64_t rtt_us[MAX_SAMPLES];
    size_t nrtt;
};

static struct clients C;

static void legit_up(p11n_conn *c, const char *peer, void *arg)
{
    struct legit *l = arg;
    (void)c;
    (void)peer;
    if (!l->established)
        l->established = (int)(now_ms() - l->started) + 1;
}

static void legit_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct legit *l = arg;
    (void)c;
    (void)text;
    if (!l->established)
        l->attempts++;
    if (final) {
        l->closed = 1;
        l->reason = reason;
        l->conn = NULL;     /* freed after this call */
    }
}

static void ping_up(p11n_conn *c, const char *peer, void *arg)
{
    (void)c;
    (void)peer;
    (void)arg;
    C.pinger_up = 1;
}

static void ping_msg(p11n_conn *c, const uint8_t *m, size_t len, void *arg)
{
    (void)c;
    (void)arg;
    uint64_t sent;
    if (len != sizeof(sent))
        return;
    memcpy(&sent, m, sizeof(sent));
    if (C.nrtt < MAX_SAMPLES)
        C.rtt_us[C.nrtt++] = now_us() - sent;
}

static void ping_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)reason;
    (void)text;
    (void)arg;
    if (final)
        C.pinger_closed = 1;
}

/* The server echoes every message. */
static void echo_msg(p11n_conn *c, const uint8_t *m, size_t len, void *arg)
{
    (void)arg;
    if (p11n_send(c, m, len) != P11N_OK)
        abort();
}

static void noop_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)reason;
    (void)text;
    (void)final;
    (void)arg;
}

/* Clients reconnect as the library does by default: an act refused under
 * the flood is tried again after 500 ms, then 1 s (with jitter), so two
 * refusals in a row already miss the 3 s. The budget has to let them in
 * the first time. */
static p11n_conn *dial(p11n_ctx *cli, uint16_t port, p11n_key *key, p11n_callbacks cb)
{
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.reconnect = 1;
    co.ch.key = key;
    co.ch.pattern = "KK";
    co.ch.cb = cb;
    p11n_conn *c = NULL;
    CU_ASSERT_FATAL(p11n_connect(cli, "127.0.0.1", port, "server", &co, &c) == P11N_OK);
    return c;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- one run ---- */

struct flood_case {
    const char *what;
    int loop;               /* P11N_LOOP_* */
    int via_proxy;
};

static p11n_ctx *ctx_make(const char *name, int loop)
{
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log = t_log_cb;
    o.log_arg = (void *)name;
    o.log_level = P11N_LOG_INFO;
    o.loop = loop;
    p11n_ctx *ctx = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctx) == P11N_OK);
    return ctx;
}

static unsigned flood_seconds(void)
{
    const char *s = getenv("P11N_FLOOD_S");
    int n = s != NULL ? atoi(s) : 0;
    return n > 0 && n <= 60 ? (unsigned)n : 6;
}

static void report(const struct flood_case *fc, const struct flood *f, unsigned long derived,
    size_t refused, size_t mark, const struct p11n_worker_stats *st)
{
    uint64_t worst = 0;
    for (size_t i = 0; i < C.nhs; i++)
        if ((uint64_t)C.hs[i].established > worst)
            worst = (uint64_t)C.hs[i].established;
    qsort(C.rtt_us, C.nrtt, sizeof(C.rtt_us[0]), cmp_u64);
    uint64_t p50 = C.nrtt > 0 ? C.rtt_us[C.nrtt / 2] : 0;
    uint64_t p99 = C.nrtt > 0 ? C.rtt_us[(C.nrtt * 99) / 100] : 0;
    size_t done = 0, retried = 0;
    for (size_t i = 0; i < C.nhs; i++) {
        done += C.hs[i].established > 0;
        retried += C.hs[i].attempts;
    }
    printf("\nflood (%s): %u bogus acts sent (%u failed to send) in %u s; %zu of %zu "
        "legitimate handshakes completed (%zu legitimate attempts refused and retried), "
        "slowest %llu ms; round trip p50 %.2f ms, p99 %.2f ms (%zu samples); %lu derivations, "
        "%.2f per bogus act; %zu acts refused (%s), %zu refused at accept; worker pool: %lu "
        "refused, %lu dropped dead, %lu late (%lu midway), %lu groups, %lu batches of "
        "%.1f acts on average, deepest queue %u acts\n",
        fc->what, atomic_load(&f->sent), atomic_load(&f->failed), f->seconds, done, C.nhs, retried,
        (unsigned long long)(worst > 0 ? worst - 1 : 0), (double)p50 / 1000.0,
        (double)p99 / 1000.0, C.nrtt, derived,
        atomic_load(&f->sent) > 0 ? (double)derived / atomic_load(&f->sent) : 0.0, refused,
        p11n_strerror(P11N_ERR_OVERLOAD), t_log_count(mark, "handshakes in progress"),
        st->refused[P11N_JOB_UNAUTH], st->dropped_dead, st->dropped_late, st->dropped_midway,
        st->groups, st->batches,
        st->batches > 0 ? (double)(st->batches + st->batched) / (double)st->batches : 0.0,
        st->depth_peak);
    fflush(stdout);
}

static void run_flood(const struct flood_case *fc)
{
    memset(&C, 0, sizeof(C));
    p11n_key *skey = t_fault_key(&T, "server", DERIVE_DELAY);
    uint8_t spub[P11N_PUBKEY_LEN];
    size_t len = 0;
    CU_ASSERT_FATAL(p11n_key_public(skey, spub, sizeof(spub), &len) == P11N_OK);

    p11n_ctx *srv = ctx_make("srv", fc->loop);
    p11n_ctx *cli = ctx_make("cli", fc->loop);
    p11n_key *ikey[NINIT];
    for (int i = 0; i < NINIT; i++) {
        uint8_t priv[32], pub[P11N_PUBKEY_LEN];
        CU_ASSERT_FATAL(p11n_dh_secp256k1.generate(priv, pub) == P11N_OK);
        CU_ASSERT_FATAL(p11n_key_from_private("secp256k1", priv, 32, &ikey[i]) == P11N_OK);
        char id[16];
        snprintf(id, sizeof(id), "init%02d", i);
        CU_ASSERT_FATAL(p11n_ceremony_input(srv, pub, id, 0) == P11N_OK);
    }
    CU_ASSERT_FATAL(p11n_ceremony_input(cli, spub, "server", 0) == P11N_OK);

    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = skey;
    lo.ch.pattern = "KK";
    lo.ch.cb = (p11n_callbacks){ .message = echo_msg, .closed = noop_closed };
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(srv, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    uint16_t port = p11n_listener_port(l);
    p11n_ctx *const both[] = { srv, cli };

    /* The established connection, from the first candidate. */
    C.pinger = dial(cli, port, ikey[0], (p11n_callbacks){ .established = ping_up,
        .message = ping_msg, .closed = ping_closed });
    uint64_t guard = now_ms() + 30000;
    while (!C.pinger_up && now_ms() < guard)
        t_pump(both, 2, 20);
    CU_ASSERT_FATAL(C.pinger_up);

    t_proxy px = { 0 };
    if (fc->via_proxy)
        CU_ASSERT_FATAL(t_proxy_start(&px, NULL, NULL) == 0);
    struct flood f = { .port = port, .proxy = px.port, .seconds = flood_seconds() };
    size_t mark = t_log_mark();
    unsigned long before = t_fault_calls("C_DeriveKey");
    CU_ASSERT_FATAL(pthread_create(&f.thread, NULL, flood_main, &f) == 0);

    /* Legitimate handshakes from the last candidate (the most costly to
     * find), one every LEGIT_EVERY_MS, and a ping every PING_EVERY_MS. */
    uint64_t start = now_ms(), end = start + f.seconds * 1000ull;
    uint64_t next_legit = start + 200, next_ping = start;
    while (now_ms() < end) {
        uint64_t t = now_ms();
        if (t >= next_legit && C.nhs < sizeof(C.hs) / sizeof(C.hs[0])) {
            struct legit *lg = &C.hs[C.nhs++];
            lg->started = t;
            lg->conn = dial(cli, port, ikey[NINIT - 1], (p11n_callbacks){
                .established = legit_up, .closed = legit_closed, .arg = lg });
            next_legit += LEGIT_EVERY_MS;
        }
        if (t >= next_ping && !C.pinger_closed) {
            uint64_t us = now_us();
            CU_ASSERT(p11n_send(C.pinger, (const uint8_t *)&us, sizeof(us)) == P11N_OK);
            next_ping += PING_EVERY_MS;
        }
        t_pump(both, 2, 5);
        for (size_t i = 0; i < C.nhs; i++)
            if (C.hs[i].established && C.hs[i].conn != NULL) {
                p11n_close(C.hs[i].conn);
                C.hs[i].conn = NULL;
            }
    }
    pthread_join(f.thread, NULL);
    /* The last legitimate handshakes get their full time. */
    guard = now_ms() + LEGIT_MAX_MS + 500;
    while (now_ms() < guard) {
        int waiting = 0;
        for (size_t i = 0; i < C.nhs; i++)
            waiting |= !C.hs[i].established && now_ms() - C.hs[i].started <= LEGIT_MAX_MS;
        if (!waiting)
            break;
        t_pump(both, 2, 10);
    }
    unsigned long derived = t_fault_calls("C_DeriveKey") - before;
    size_t refused = t_log_count(mark, p11n_strerror(P11N_ERR_OVERLOAD));
    struct p11n_worker_stats st;
    p11n_worker_stats(srv, &st);
    report(fc, &f, derived, refused, mark, &st);

    CU_ASSERT(atomic_load(&f.sent) >= f.seconds * FLOOD_PER_S * 9 / 10);
    CU_ASSERT(C.nhs >= f.seconds * 1000 / LEGIT_EVERY_MS - 2);
    for (size_t i = 0; i < C.nhs; i++) {
        CU_ASSERT(C.hs[i].established > 0 && C.hs[i].established - 1 <= LEGIT_MAX_MS);
        if (C.hs[i].conn != NULL)
            p11n_close(C.hs[i].conn);
    }
    CU_ASSERT(!C.pinger_closed);
    CU_ASSERT(C.nrtt >= f.seconds * 1000 / PING_EVERY_MS / 2);
    for (size_t i = 0; i < C.nrtt; i++)
        CU_ASSERT(C.rtt_us[i] <= RTT_MAX_MS * 1000ull);

    if (fc->via_proxy)
        t_proxy_stop(&px);
    p11n_ctx_free(cli);
    p11n_ctx_free(srv);
    for (int i = 0; i < NINIT; i++)
        p11n_key_free(ikey[i]);
    p11n_key_free(skey);
}

static void test_flood_epoll(void)
{
    run_flood(&(struct flood_case){ "direct, epoll", P11N_LOOP_EPOLL, 0 });
}

static void test_flood_poll(void)
{
    run_flood(&(struct flood_case){ "direct, poll", P11N_LOOP_POLL, 0 });
}

static void test_flood_proxy(void)
{
    if (!t_proxy_available()) {
        printf("\n  (skipped: no microsocks)\n");
        return;
    }
    run_flood(&(struct flood_case){ "through a SOCKS5 proxy", P11N_LOOP_DEFAULT, 1 });
}

/* A KK listener with one candidate on one worker and a token that takes
 * 200 ms per derivation; act deadlines of act_ms, the first act's of
 * act1_ms (0: the defaults). */
static p11n_ctx *slow_listener(const char *name, p11n_key *skey, unsigned act_ms,
    unsigned act1_ms, uint16_t *port)
{
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log = t_log_cb;
    o.log_arg = (void *)name;
    o.workers = 1;
    o.act_timeout_ms = act_ms;
    o.act1_timeout_ms = act1_ms;
    o.log_refusals_per_s = 100;   /* every line the tests count is logged */
    p11n_ctx *srv = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &srv) == P11N_OK);
    uint8_t priv[32], pub[P11N_PUBKEY_LEN];
    CU_ASSERT_FATAL(p11n_dh_secp256k1.generate(priv, pub) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, pub, "only", 0) == P11N_OK);
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = skey;
    lo.ch.cb = (p11n_callbacks){ .closed = noop_closed };
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(srv, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    *port = p11n_listener_port(l);
    return srv;
}

/* Six bogus acts at once against slow_listener(act_ms, act1_ms), held
 * open until every connection has failed. Returns the pool's counters,
 * the derivations spent (*derived) and the log mark of the run (*mark). */
static struct p11n_worker_stats six_acts(const char *name, unsigned act_ms, unsigned act1_ms,
    uint64_t seed, unsigned long *derived, size_t *mark)
{
    p11n_key *skey = t_fault_key(&T, "server", "C_DeriveKey:delay=200");
    uint16_t port = 0;
    p11n_ctx *srv = slow_listener(name, skey, act_ms, act1_ms, &port);
    *mark = t_log_mark();
    unsigned long before = t_fault_calls("C_DeriveKey");
    int fds[6];
    for (int i = 0; i < 6; i++) {
        uint8_t act[50];
        bogus_act(act, &seed);
        fds[i] = t_connect_loopback(port);
        CU_ASSERT_FATAL(fds[i] >= 0 && send_all(fds[i], act, sizeof(act)) == 0);
    }
    p11n_ctx *const one[] = { srv };
    uint64_t guard = now_ms() + 20000;
    while (t_log_count(*mark, "failed during handshake") < 6 && now_ms() < guard)
        t_pump(one, 1, 20);
    struct p11n_worker_stats st;
    p11n_worker_stats(srv, &st);
    *derived = t_fault_calls("C_DeriveKey") - before;
    printf("\n  6 acts: %lu dropped late, %lu derivations\n", st.dropped_late, *derived);
    CU_ASSERT_EQUAL(t_log_count(*mark, "failed during handshake"), 6);
    for (int i = 0; i < 6; i++)
        close(fds[i]);
    p11n_ctx_free(srv);
    p11n_key_free(skey);
    return st;
}

/* Acts that wait for the token past their deadline are dropped before
 * it, and their connections say why: one worker, 200 ms per derivation
 * (an act with one candidate costs es and ss, asked for at once), a
 * 300 ms act deadline, six bogus acts at once. */
static void test_late_acts_dropped(void)
{
    unsigned long derived = 0;
    size_t mark = 0;
    struct p11n_worker_stats st = six_acts("late", 300, 300, 11, &derived, &mark);
    CU_ASSERT(st.dropped_late >= 2);
    /* Each act that ran derived its es, and its ss unless an earlier act
     * of its batch had. */
    unsigned long ran = 6 - st.dropped_late;
    CU_ASSERT(ran >= 1 && derived >= ran + 1 && derived <= 2 * ran);
    CU_ASSERT_EQUAL(t_log_count(mark, "the act's deadline passed while it waited"),
        st.dropped_late);
}

/* The first act's deadline is for the peer's sending: once an act is in,
 * its peer waits for our answer up to an act deadline, so an act queued
 * longer than act1_timeout_ms still runs. Six acts at once, 200 ms per
 * es, act 1 due within 300 ms, later acts 5 s: the sixth runs after
 * about 1.4 s, and none is dropped late. */
static void test_arrived_acts_not_late(void)
{
    unsigned long derived = 0;
    size_t mark = 0;
    struct p11n_worker_stats st = six_acts("arrived", 5000, 300, 13, &derived, &mark);
    CU_ASSERT_EQUAL(st.dropped_late, 0);
    CU_ASSERT_EQUAL(t_log_count(mark, "did not verify under any"), 6);
}

/* Peers that leave while their acts wait for the token: one worker, 200
 * ms per derivation, six bogus acts whose senders close at once. The
 * first act may have reached the token; the others are dropped before
 * it, their connections saying why. */
static void test_gone_acts_dropped(void)
{
    p11n_key *skey = t_fault_key(&T, "server", "C_DeriveKey:delay=200");
    uint16_t port = 0;
    p11n_ctx *srv = slow_listener("gone", skey, 0, 0, &port);

    size_t mark = t_log_mark();
    unsigned long before = t_fault_calls("C_DeriveKey");
    p11n_ctx *const one[] = { srv };
    uint64_t seed = 12;
    for (int i = 0; i < 6; i++) {
        uint8_t act[50];
        bogus_act(act, &seed);
        int fd = t_connect_loopback(port);
        CU_ASSERT_FATAL(fd >= 0 && send_all(fd, act, sizeof(act)) == 0);
        t_pump(one, 1, 20);   /* the act is read and queued before its sender leaves */
        close(fd);
    }
    uint64_t guard = now_ms() + 20000;
    while (t_log_count(mark, "failed during handshake") < 6 && now_ms() < guard)
        t_pump(one, 1, 20);
    struct p11n_worker_stats st;
    p11n_worker_stats(srv, &st);
    uint64_t drain = now_ms() + 5000;
    while (st.jobs[P11N_JOB_UNAUTH] > 0 && now_ms() < drain) {
        t_pump(one, 1, 20);
        p11n_worker_stats(srv, &st);
    }
    unsigned long derived = t_fault_calls("C_DeriveKey") - before;
    size_t gone = t_log_count(mark, "closed by peer while its handshake step waited");
    printf("\n  6 acts, senders gone: %zu connections ended so, %lu dropped dead, "
        "%lu derivations\n", gone, st.dropped_dead, derived);
    CU_ASSERT_EQUAL(t_log_count(mark, "failed during handshake"), 6);
    CU_ASSERT(gone >= 5);
    CU_ASSERT(st.dropped_dead >= 4);
    /* es and ss of the act (or two) that reached the token, no more */
    CU_ASSERT(derived <= 2 * (6 - st.dropped_dead));
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 0);
    p11n_ctx_free(srv);
    p11n_key_free(skey);
}

int main(void)
{
    t_token_setup(&T, "p11n-flood");
    t_token_new_key(&T, "server");
    static const p11n_test tests[] = {
        { "act-1 flood, 16 candidates, 5 ms token: legitimate peers get in (epoll)",
            test_flood_epoll },
        { "act-1 flood through a SOCKS5 proxy, every peer from one address",
            test_flood_proxy },
        { "act-1 flood on the poll() backend", test_flood_poll },
        { "acts late for the token are dropped before it", test_late_acts_dropped },
        { "an act that has arrived waits for the token up to an act deadline",
            test_arrived_acts_not_late },
        { "acts of peers that left are dropped before the token", test_gone_acts_dropped },
        { NULL, NULL },
    };
    int rc = p11n_test_main("net-flood", tests);
    t_token_teardown(&T);
    t_log_free();
    return rc;
}
