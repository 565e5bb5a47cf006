/*
 * Limits against hostile load that need no token: half-open connections
 * evicted rather than refused (1,000 idle sockets held open, idle sockets
 * arriving continuously), the first act's short deadline, stalled peers
 * (one that never reads, one byte per second, a frame announced and never
 * sent), the established caps, TCP keepalive on both ends, and the
 * rate-limited refusal log (a unit test with a fake clock, and a flood).
 *
 * Everything runs on 127.0.0.1. Attackers are threads with plain
 * sockets, bounded in count and in time; the library's two contexts are
 * driven by the main thread through the external-loop interface.
 */
#define _GNU_SOURCE /* pthread_tryjoin_np */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "conn.h"
#include "netutil.h"
#include "p11noise.h"
#include "ratelog.h"
#include "testutil.h"

/* ---- the rate limiter alone, with a fake clock ---- */

static char rl_lines[64][600];
static int rl_nlines, rl_nsummaries;

static void rl_sink(void *arg, int summary, const char *line)
{
    (void)arg;
    if (rl_nlines < 64)
        snprintf(rl_lines[rl_nlines++], sizeof(rl_lines[0]), "%s", line);
    rl_nsummaries += summary;
}

static void test_ratelog_clock(void)
{
    static const char *const names[] = { "evicted", "act-1 timeout", "bad act" };
    p11n_ratelog rl;
    p11n_ratelog_init(&rl, 3, "refused", names, 3, rl_sink, NULL);
    rl_nlines = rl_nsummaries = 0;
    /* Second 0: 5 events, 3 lines. */
    int logged = 0;
    for (int i = 0; i < 5; i++)
        logged += p11n_ratelog_event(&rl, 1000 + (uint64_t)i * 10, 0, "line %d", i);
    CU_ASSERT(logged == 3);
    CU_ASSERT(rl_nlines == 3);
    CU_ASSERT(strcmp(rl_lines[2], "line 2") == 0);
    CU_ASSERT(p11n_ratelog_due(&rl) == 1000 + P11N_RATELOG_PERIOD_MS);
    /* The next second has its own budget. */
    CU_ASSERT(p11n_ratelog_allow(&rl, 2000, 1) == 1);
    for (int i = 0; i < 850; i++)
        (void)p11n_ratelog_allow(&rl, 2001 + (uint64_t)i, i < 800 ? 0 : i < 840 ? 1 : 2);
    CU_ASSERT(rl_nlines == 3);  /* allow() alone never writes */
    /* Not due yet: no summary. */
    p11n_ratelog_tick(&rl, 10999, 0);
    CU_ASSERT(rl_nsummaries == 0);
    p11n_ratelog_tick(&rl, 11000, 0);
    CU_ASSERT(rl_nsummaries == 1);
    /* 5 + 1 + 850 events; logged: 3 in the second from 1000, 3 in the
     * one from 2000 (the allow at 2000 and two more). */
    const char *s = rl_lines[rl_nlines - 1];
    CU_ASSERT(strstr(s, "856 connections refused in the last 10 s") == s);
    CU_ASSERT(strstr(s, ": 805 evicted, 41 act-1 timeout, 10 bad act") != NULL);
    unsigned long notlogged = 0;
    CU_ASSERT(sscanf(strstr(s, "("), "(%lu not logged", &notlogged) == 1);
    CU_ASSERT(notlogged == 856 - 3 - 3);
    CU_ASSERT(p11n_ratelog_due(&rl) == 0);
    /* A quiet period that dropped nothing has no summary. */
    (void)p11n_ratelog_allow(&rl, 20000, 0);
    p11n_ratelog_tick(&rl, 40000, 0);
    CU_ASSERT(rl_nsummaries == 1);
    /* A forced summary (the owner goes away) names the time it covers. */
    for (int i = 0; i < 10; i++)
        (void)p11n_ratelog_allow(&rl, 50000, 2);
    p11n_ratelog_tick(&rl, 52500, 1);
    CU_ASSERT(rl_nsummaries == 2);
    CU_ASSERT(strstr(rl_lines[rl_nlines - 1], "10 connections refused in the last 3 s (7 not "
        "logged one by one): 10 bad act") != NULL);
    /* A reason outside the table counts as its last. */
    (void)p11n_ratelog_allow(&rl, 60000, 99);
    CU_ASSERT(rl.counts[2] == 1);
}

/* ---- keys, contexts, pumping ---- */

enum { K_SERVER, K_CLIENT, NKEYS };
static p11n_key *keys[NKEYS];
static uint8_t pubs[NKEYS][P11N_PUBKEY_LEN];

static void keys_setup(void)
{
    if (keys[0] != NULL)
        return;
    t_soft_keys(0x68616c666f70656e, keys, pubs, NKEYS);
}

static p11n_ctx *ctxs[2];

/* ctxs[i] with options `o`, logging into the test log as [name]; the
 * server knows the client as "client" and the client the server as
 * "server". */
static p11n_ctx *ctx_open(int i, const char *name, p11n_ctx_options o)
{
    keys_setup();
    o.log = t_log_cb;
    o.log_arg = (void *)name;
    if (o.log_level == 0)
        o.log_level = P11N_LOG_INFO;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctxs[i]) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[i], pubs[i == 0 ? K_CLIENT : K_SERVER],
        i == 0 ? "client" : "server", 0) == P11N_OK);
    return ctxs[i];
}

static void ctx_close_all(void)
{
    for (int i = 0; i < 2; i++) {
        p11n_ctx_free(ctxs[i]);
        ctxs[i] = NULL;
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Pump until done(arg) or the hang guard (a failure shows in the
 * assertion that follows, not in the clock). */
static int pump_until(int (*done)(void *), void *arg)
{
    uint64_t guard = mono_ms() + 60000;
    while (!done(arg)) {
        if (mono_ms() > guard)
            return 0;
        t_pump(ctxs, 2, 20);
    }
    return 1;
}

static void pump_for(unsigned ms)
{
    uint64_t end = mono_ms() + ms;
    while (mono_ms() < end)
        t_pump(ctxs, 2, 20);
}

/* ---- one end's state ---- */

typedef struct end {
    int established, closed, reason;
    char text[300];
    uint64_t msgs;
    p11n_conn *conn;
    uint64_t flood;    /* server: bytes to send this peer as soon as it is in */
} end;

/* The server's connections: each gets an `end` of its own. */
#define MAX_ENDS 256
static end srv_ends[MAX_ENDS];
static int srv_n;
static int srv_evicted, srv_closed_other;
static char srv_last_text[300];
static uint64_t srv_flood;  /* bytes each new server connection sends */

static void send_flood(end *e)
{
    static uint8_t chunk[60000];
    while (e->flood > 0 && e->conn != NULL) {
        if (p11n_send(e->conn, chunk, sizeof(chunk)) != P11N_OK)
            return;  /* WOULD_BLOCK: the writable callback goes on */
        e->flood -= e->flood < sizeof(chunk) ? e->flood : sizeof(chunk);
    }
}

static void on_established(p11n_conn *c, const char *peer, void *arg)
{
    (void)peer;
    end *e = arg;
    if (e == NULL) {  /* the server's: a fresh end */
        if (srv_n >= MAX_ENDS)
            return;
        e = &srv_ends[srv_n++];
        memset(e, 0, sizeof(*e));
        e->flood = srv_flood;
        p11n_conn_set_arg(c, e);
        /* As the tunnel does while it opens its target: the last act may
         * still be queued, and must not count as a stalled queue. */
        CU_ASSERT(p11n_conn_pause_read(c, 1) == P11N_OK);
        CU_ASSERT(p11n_conn_pause_read(c, 0) == P11N_OK);
    }
    e->established++;
    e->conn = c;
    send_flood(e);
}

static void on_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    end *e = arg;
    e->msgs++;
    /* The server echoes; a failed echo shows as a missing one. */
    if (e >= srv_ends && e < srv_ends + MAX_ENDS && p11n_send(c, msg, len) != P11N_OK)
        e->closed += 0;
}

static void on_writable(p11n_conn *c, void *arg)
{
    (void)c;
    send_flood(arg);
}

static void on_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)final;
    end *e = arg;
    if (e == NULL) {  /* a server connection that was never established */
        srv_evicted += reason == P11N_ERR_EVICTED;
        srv_closed_other += reason != P11N_ERR_EVICTED;
        snprintf(srv_last_text, sizeof(srv_last_text), "%s", text);
        return;
    }
    e->closed++;
    e->reason = reason;
    e->conn = NULL;
    snprintf(e->text, sizeof(e->text), "%s", text);
}

static const p11n_callbacks cbs = {
    .established = on_established,
    .message = on_message,
    .writable = on_writable,
    .closed = on_closed,
};

static void server_reset(void)
{
    memset(srv_ends, 0, sizeof(srv_ends));
    srv_n = srv_evicted = srv_closed_other = 0;
    srv_flood = 0;
    srv_last_text[0] = '\0';
}

static uint16_t listen_kk(p11n_ctx *ctx, unsigned max_handshakes, unsigned max_established,
    p11n_listener **out)
{
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = keys[K_SERVER];
    lo.ch.pattern = "KK";
    lo.ch.cb = cbs;
    lo.max_handshakes = max_handshakes;
    lo.max_established = max_established;
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    if (out != NULL)
        *out = l;
    return p11n_listener_port(l);
}

static void dial(p11n_ctx *ctx, uint16_t port, end *e)
{
    memset(e, 0, sizeof(*e));
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = keys[K_CLIENT];
    co.ch.pattern = "KK";
    co.ch.cb = cbs;
    co.ch.cb.arg = e;
    CU_ASSERT_FATAL(p11n_connect(ctx, "127.0.0.1", port, "server", &co, &e->conn) == P11N_OK);
}

static int end_settled(void *arg)
{
    end *e = arg;
    return e->established > 0 || e->closed > 0;
}

static int end_closed(void *arg)
{
    return ((end *)arg)->closed > 0;
}

/* One legitimate handshake: established within `within_ms` (the
 * deadline a peer must be able to count on), closed again. Returns the
 * milliseconds it took. */
static uint64_t legit_handshake(p11n_ctx *cli, uint16_t port, uint64_t within_ms)
{
    end e;
    uint64_t t0 = mono_ms();
    dial(cli, port, &e);
    CU_ASSERT(pump_until(end_settled, &e));
    uint64_t took = mono_ms() - t0;
    if (e.established != 1 || took > within_ms)
        fprintf(stderr, "legitimate handshake: established %d after %llu ms (%s)\n",
            e.established, (unsigned long long)took, e.text);
    CU_ASSERT(e.established == 1);
    CU_ASSERT(took <= within_ms);
    p11n_close(e.conn);
    CU_ASSERT(pump_until(end_closed, &e));
    return took;
}

/* ---- raw attackers ---- */

static int raw_connect(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Idle sockets: `hold` kept open (each one the server closes is opened
 * again), or `per_tick` new ones every 10 ms, for `ms` milliseconds. */
typedef struct idlers {
    uint16_t port;
    unsigned hold, per_tick, ms;
    int *fds;
    unsigned nfds, cap;
    unsigned long opened, dropped;   /* read after join */
    int stop;
} idlers;

/* Close the sockets the server has closed (EOF or reset); returns how
 * many. */
static unsigned idlers_reap(idlers *d)
{
    unsigned n = 0;
    for (unsigned i = 0; i < d->nfds; i++) {
        struct pollfd p = { .fd = d->fds[i], .events = POLLIN };
        if (poll(&p, 1, 0) != 1)
            continue;
        close(d->fds[i]);
        d->fds[i--] = d->fds[--d->nfds];
        n++;
    }
    return n;
}

#define HOLD_REOPEN 10

static void *idlers_main(void *arg)
{
    idlers *d = arg;
    uint64_t end_at = mono_ms() + d->ms;
    while (mono_ms() < end_at && !__atomic_load_n(&d->stop, __ATOMIC_SEQ_CST)) {
        d->dropped += idlers_reap(d);
        /* Held sockets the server closed come back at most HOLD_REOPEN
         * per round, so the flood stays bounded in count. */
        unsigned want = d->hold ? d->hold - d->nfds : d->per_tick;
        if (d->hold && d->opened >= d->hold && want > HOLD_REOPEN)
            want = HOLD_REOPEN;
        for (unsigned i = 0; i < want && d->nfds < d->cap; i++) {
            int fd = raw_connect(d->port, 0);
            if (fd < 0)
                break;
            d->fds[d->nfds++] = fd;
            d->opened++;
        }
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
    }
    for (unsigned i = 0; i < d->nfds; i++)
        close(d->fds[i]);
    d->nfds = 0;
    return NULL;
}

/* Raise the descriptor limit for `need` sockets; 0 if it cannot be. */
static int fd_room(unsigned need, struct rlimit *saved)
{
    getrlimit(RLIMIT_NOFILE, saved);
    struct rlimit r = *saved;
    if (r.rlim_cur < need)
        r.rlim_cur = r.rlim_max < need ? r.rlim_max : need;
    if (setrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur < need) {
        fprintf(stderr, "descriptor limit %llu below %u: skipped\n",
            (unsigned long long)r.rlim_cur, need);
        return 0;
    }
    return 1;
}

/* Legitimate clients handshake one after the other while the idlers
 * run: each within 2 s (the act-1 deadline's worth). */
static void under_idlers(idlers *d, const char *what)
{
    struct rlimit saved;
    unsigned cap = d->hold ? d->hold : d->per_tick * (d->ms / 10 + 1);
    if (!fd_room(cap + 600, &saved))
        return;
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    p11n_ctx *cli = ctx_open(1, "cli", co);
    server_reset();
    /* A table smaller than the idlers (the default, 1024, would hold
     * 1,000 of them without a fight): they must be evicted, not obeyed. */
    d->port = listen_kk(srv, 256, 0, NULL);
    d->cap = cap;
    d->fds = calloc(cap, sizeof(int));
    CU_ASSERT_FATAL(d->fds != NULL);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, idlers_main, d) == 0);
    pump_for(300);  /* the idlers are in */
    unsigned n = 0;
    uint64_t worst = 0, end_at = mono_ms() + d->ms - 500;
    while (mono_ms() < end_at) {
        uint64_t took = legit_handshake(cli, d->port, 2000);
        worst = took > worst ? took : worst;
        n++;
        pump_for(100);
    }
    __atomic_store_n(&d->stop, 1, __ATOMIC_SEQ_CST);
    while (pthread_tryjoin_np(th, NULL) != 0)
        t_pump(ctxs, 2, 20);
    fprintf(stderr, "%s: %u legitimate handshakes, slowest %llu ms; %lu idle sockets opened, "
        "%lu closed by the server; %d evicted, %d closed otherwise\n", what, n,
        (unsigned long long)worst, d->opened, d->dropped, srv_evicted, srv_closed_other);
    CU_ASSERT(n >= 3);
    CU_ASSERT(srv_n == (int)n || n >= MAX_ENDS);
    CU_ASSERT(srv_evicted > 0);
    free(d->fds);
    ctx_close_all();
    setrlimit(RLIMIT_NOFILE, &saved);
}

static void test_thousand_idle(void)
{
    idlers d = { .hold = 1000, .ms = 6000 };
    under_idlers(&d, "1,000 idle sockets held open");
    CU_ASSERT(d.opened >= 1000);
}

static void test_idle_arrivals(void)
{
    idlers d = { .per_tick = 3, .ms = 5000 };  /* 300 per second */
    under_idlers(&d, "300 idle sockets per second");
}

/* ---- stalled peers ---- */

/* A KK initiator by hand over a blocking socket; the transport after. */
static p11n_transport *raw_kk(int fd)
{
    p11n_handshake_config cfg = P11N_HANDSHAKE_CONFIG_INIT;
    cfg.local = keys[K_CLIENT];
    cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])&pubs[K_SERVER];
    cfg.nremote = 1;
    p11n_handshake *hs = NULL;
    uint8_t act[P11N_MAX_ACT];
    size_t len = 0;
    p11n_transport *t = NULL;
    if (p11n_handshake_initiate(&cfg, &hs) != P11N_OK
        || p11n_handshake_write(hs, act, sizeof(act), &len) != P11N_OK
        || send(fd, act, len, MSG_NOSIGNAL) != (ssize_t)len)
        abort();
    size_t want = p11n_handshake_want(hs);
    if (recv(fd, act, want, MSG_WAITALL) != (ssize_t)want
        || p11n_handshake_read(hs, act, want) != P11N_OK || !p11n_handshake_done(hs)
        || p11n_handshake_finish(hs, &t) != P11N_OK)
        abort();
    p11n_handshake_free(hs);
    return t;
}

enum { STALL_NO_READ, STALL_DRIP, STALL_HALF_FRAME, STALL_SLOW_FRAME };

typedef struct staller {
    uint16_t port;
    int kind;
    int stop;      /* set by the main thread: the server has dealt with it */
    int done;
} staller;

static void *staller_main(void *arg)
{
    staller *s = arg;
    /* A small receive window: the server's queue backs up at once. */
    int fd = raw_connect(s->port, s->kind == STALL_NO_READ ? 4096 : 0);
    if (fd < 0)
        abort();
    uint8_t b[P11N_FRAME_OVERHEAD + 16];
    if (s->kind == STALL_DRIP) {
        /* One byte of act 1 per second until the server hangs up. */
        memset(b, 0, sizeof(b));
        for (int i = 0; i < 10 && send(fd, b, 1, MSG_NOSIGNAL) == 1; i++) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            if (poll(&p, 1, 1000) == 1)
                break;
        }
    } else {
        p11n_transport *t = raw_kk(fd);
        if (s->kind == STALL_HALF_FRAME) {
            /* The length header of a 16-byte message, and nothing more. */
            size_t len = 0;
            static const uint8_t msg[16];
            if (p11n_transport_seal(t, msg, sizeof(msg), b, sizeof(b), &len) != P11N_OK)
                abort();
            send(fd, b, 18, MSG_NOSIGNAL);
        } else if (s->kind == STALL_SLOW_FRAME) {
            /* A whole 16-byte message, one byte every 100 ms: 5 s in
             * all, longer than the stall deadline, but always moving. */
            size_t len = 0;
            static const uint8_t msg[16];
            if (p11n_transport_seal(t, msg, sizeof(msg), b, sizeof(b), &len) != P11N_OK)
                abort();
            for (size_t i = 0; i < len && send(fd, b + i, 1, MSG_NOSIGNAL) == 1; i++) {
                struct timespec ts = { 0, 100 * 1000000L };
                nanosleep(&ts, NULL);
            }
        }
        p11n_transport_free(t);
    }
    /* Never read: wait until the test has seen the server's verdict. */
    uint64_t guard = mono_ms() + 30000;
    while (!__atomic_load_n(&s->stop, __ATOMIC_SEQ_CST) && mono_ms() < guard) {
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
    }
    close(fd);
    __atomic_store_n(&s->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

typedef struct log_wait {
    size_t mark;
    const char *a, *b;
} log_wait;

static int log_seen(void *arg)
{
    log_wait *w = arg;
    return t_log_has(w->mark, w->a, w->b);
}

static int echoed(void *arg)
{
    end *e = arg;
    return e->msgs >= 20 || e->closed;
}

static void stalled(uint16_t port, int kind, const char *a, const char *b, end *steady)
{
    size_t mark = t_log_mark();
    staller s = { .port = port, .kind = kind };
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, staller_main, &s) == 0);
    /* The steady connection keeps talking while the staller is dealt with. */
    log_wait w = { mark, a, b };
    uint64_t guard = mono_ms() + 30000;
    int seen = 0;
    while (!seen && mono_ms() < guard) {
        steady->msgs = 0;
        for (int i = 0; i < 20; i++)
            CU_ASSERT(p11n_send(steady->conn, (const uint8_t *)"ping", 4) == P11N_OK);
        CU_ASSERT(pump_until(echoed, steady));
        CU_ASSERT(steady->msgs == 20);
        seen = log_seen(&w);
    }
    if (!seen)
        fprintf(stderr, "expected a log line with '%s' and '%s'\n", a, b);
    CU_ASSERT(seen);
    __atomic_store_n(&s.stop, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&s.done, __ATOMIC_SEQ_CST))
        t_pump(ctxs, 2, 20);
    pthread_join(th, NULL);
    CU_ASSERT(steady->closed == 0);
}

static void test_stalled_peers(void)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    so.act_timeout_ms = 1500;
    so.act1_timeout_ms = 2500;  /* longer than act_timeout_ms: act 1 gets 1500 */
    so.stall_timeout_ms = 1500;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    p11n_ctx *cli = ctx_open(1, "cli", co);
    server_reset();
    uint16_t port = listen_kk(srv, 0, 0, NULL);
    end steady;
    dial(cli, port, &steady);
    CU_ASSERT_FATAL(pump_until(end_settled, &steady) && steady.established == 1);

    srv_flood = 64ULL << 20;  /* more than any socket buffer takes */
    stalled(port, STALL_NO_READ, "[srv]", "peer took none of", &steady);
    CU_ASSERT(strstr(srv_ends[1].text, "queued bytes for 1500 ms (it does not read; "
        "stall_timeout_ms)") != NULL);
    CU_ASSERT(srv_ends[1].reason == P11N_ERR_TIMEOUT);
    srv_flood = 0;
    stalled(port, STALL_DRIP, "handshake act not received within 1500 ms (",
        "of 50 bytes); first act: act1_timeout_ms", &steady);
    stalled(port, STALL_HALF_FRAME, "[srv]", "(the peer stopped in the middle of a frame)",
        &steady);
    CU_ASSERT(srv_ends[2].reason == P11N_ERR_TIMEOUT);
    CU_ASSERT(strstr(srv_ends[2].text, "no byte of an unfinished message for 1") != NULL);
    CU_ASSERT(srv_n == 3);

    /* A slow link is not a stall: the trickled message arrives whole. */
    staller slow = { .port = port, .kind = STALL_SLOW_FRAME };
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, staller_main, &slow) == 0);
    uint64_t guard = mono_ms() + 30000;
    while (mono_ms() < guard && !(srv_n > 3 && (srv_ends[3].msgs > 0 || srv_ends[3].closed)))
        t_pump(ctxs, 2, 20);
    CU_ASSERT(srv_n == 4 && srv_ends[3].msgs == 1 && srv_ends[3].closed == 0);
    if (srv_n == 4 && srv_ends[3].closed)
        fprintf(stderr, "slow link closed: %s\n", srv_ends[3].text);
    __atomic_store_n(&slow.stop, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&slow.done, __ATOMIC_SEQ_CST))
        t_pump(ctxs, 2, 20);
    pthread_join(th, NULL);
    ctx_close_all();
}

/* ---- established caps ---- */

static void test_established_caps(void)
{
    /* The context's cap counts outgoing connections: the client may have
     * two, the third is refused when its handshake completes. */
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    co.max_established = 2;
    p11n_ctx *cli = ctx_open(1, "cli", co);
    server_reset();
    p11n_listener *l1 = NULL;
    uint16_t port = listen_kk(srv, 0, 1, &l1);
    uint16_t port2 = listen_kk(srv, 0, 0, NULL);
    end e[4];
    dial(cli, port, &e[0]);
    CU_ASSERT(pump_until(end_settled, &e[0]) && e[0].established == 1);
    /* The listener's cap (1) holds: refused at accept, before any work. */
    size_t mark = t_log_mark();
    dial(cli, port, &e[1]);
    CU_ASSERT(pump_until(end_closed, &e[1]) && e[1].established == 0);
    CU_ASSERT(t_log_has(mark, "[srv]", "refused: 1 established connections on this listener "
        "(the listener's max_established 1)"));
    /* Another listener of the same context is not bound by it. */
    dial(cli, port2, &e[2]);
    CU_ASSERT(pump_until(end_settled, &e[2]) && e[2].established == 1);
    /* The client's own cap: its third is refused at completion. */
    mark = t_log_mark();
    dial(cli, port2, &e[3]);
    CU_ASSERT(pump_until(end_closed, &e[3]));
    CU_ASSERT(e[3].established == 0);
    CU_ASSERT(e[3].reason == P11N_ERR_LIMIT);
    CU_ASSERT(strstr(e[3].text, "handshake complete but refused: 2 established connections "
        "(max_established 2)") != NULL);
    /* One goes: there is room again. */
    p11n_close(e[0].conn);
    CU_ASSERT(pump_until(end_closed, &e[0]));
    dial(cli, port2, &e[3]);
    CU_ASSERT(pump_until(end_settled, &e[3]) && e[3].established == 1);
    CU_ASSERT(e[2].closed == 0);
    ctx_close_all();
}

/* Two handshakes in flight against a listener capped at one: the one
 * that completes second is refused at completion, naming the cap. */
static void test_established_cap_at_completion(void)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    server_reset();
    uint16_t port = listen_kk(srv, 0, 1, NULL);
    /* Both connect and send act 1 before the server looks at either. */
    int fds[2];
    size_t mark = t_log_mark();
    for (int i = 0; i < 2; i++)
        fds[i] = raw_connect(port, 0);
    p11n_handshake *hs[2];
    for (int i = 0; i < 2; i++) {
        p11n_handshake_config cfg = P11N_HANDSHAKE_CONFIG_INIT;
        cfg.local = keys[K_CLIENT];
        cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])&pubs[K_SERVER];
        cfg.nremote = 1;
        uint8_t act[P11N_MAX_ACT];
        size_t len = 0;
        CU_ASSERT_FATAL(p11n_handshake_initiate(&cfg, &hs[i]) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_write(hs[i], act, sizeof(act), &len) == P11N_OK);
        CU_ASSERT_FATAL(send(fds[i], act, len, 0) == (ssize_t)len);
    }
    log_wait w = { mark, "handshake complete but refused: 1 established connections on "
        "this listener (the listener's max_established 1)", NULL };
    CU_ASSERT(pump_until(log_seen, &w));
    CU_ASSERT(srv_n == 1);
    for (int i = 0; i < 2; i++) {
        p11n_handshake_free(hs[i]);
        close(fds[i]);
    }
    ctx_close_all();
}

/* ---- the proxy phase of an outgoing connection ---- */

/* A "proxy" that accepts (the kernel does, from the backlog) and never
 * answers the greeting: the attempt ends at the act-1 deadline, not the
 * connect deadline. */
static void test_proxy_phase_deadline(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(lfd, 4) == 0
        && getsockname(lfd, (struct sockaddr *)&sa, &len) == 0);
    char proxy[32];
    snprintf(proxy, sizeof(proxy), "127.0.0.1:%u", ntohs(sa.sin_port));
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    co.act1_timeout_ms = 300;
    co.connect_timeout_ms = 20000;
    co.socks5 = proxy;
    p11n_ctx *cli = ctx_open(1, "cli", co);
    end e;
    uint64_t t0 = mono_ms();
    dial(cli, 9, &e);
    CU_ASSERT(pump_until(end_closed, &e));
    uint64_t took = mono_ms() - t0;
    CU_ASSERT(e.reason == P11N_ERR_TIMEOUT);
    CU_ASSERT(strstr(e.text, "timed out after 300 ms") != NULL);
    CU_ASSERT(strstr(e.text, "(act1_timeout_ms)") != NULL);
    /* Not the 20 s connect deadline (a hang guard, not a speed test). */
    CU_ASSERT(took < 15000);
    ctx_close_all();
    close(lfd);
}

/* A proxy that answers the greeting at once and the CONNECT request
 * after `reply_ms` (never when < 0), as a proxy does that must first
 * reach the target (through Tor: build a circuit). */
typedef struct slow_proxy {
    int lfd;
    int reply_ms;
    pthread_t th;
} slow_proxy;

static int read_full(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, buf + got, len - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

static void *slow_proxy_main(void *arg)
{
    slow_proxy *sp = arg;
    int fd = accept(sp->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    uint8_t buf[300];
    static const uint8_t method[2] = { 5, 0 };
    /* VER NMETHODS METHODS..., then VER CMD RSV ATYP ADDR PORT, the
     * address 4 or 16 bytes, or a length byte and a name. */
    size_t addr = 0;
    if (read_full(fd, buf, 2) == 0 && read_full(fd, buf + 2, buf[1]) == 0
        && send(fd, method, 2, MSG_NOSIGNAL) == 2 && read_full(fd, buf, 5) == 0) {
        addr = buf[3] == 1 ? 3 : buf[3] == 4 ? 15 : buf[4];
        if (read_full(fd, buf + 5, addr + 2) != 0)
            addr = 0;
    }
    if (addr > 0 && sp->reply_ms >= 0) {
        struct timespec ts = { sp->reply_ms / 1000, (sp->reply_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        static const uint8_t ok[10] = { 5, 0, 0, 1, 127, 0, 0, 1, 0, 9 };
        (void)send(fd, ok, sizeof(ok), MSG_NOSIGNAL);
    }
    /* Hold the connection until the client gives up or the test ends. */
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    while (poll(&pfd, 1, 5000) > 0 && recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    close(fd);
    return NULL;
}

static void slow_proxy_start(slow_proxy *sp, int reply_ms, char *spec, size_t cap)
{
    sp->reply_ms = reply_ms;
    sp->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    socklen_t len = sizeof(sa);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    CU_ASSERT_FATAL(bind(sp->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0
        && listen(sp->lfd, 4) == 0 && getsockname(sp->lfd, (struct sockaddr *)&sa, &len) == 0);
    snprintf(spec, cap, "127.0.0.1:%u", ntohs(sa.sin_port));
    CU_ASSERT_FATAL(pthread_create(&sp->th, NULL, slow_proxy_main, sp) == 0);
}

static void slow_proxy_stop(slow_proxy *sp)
{
    pthread_join(sp->th, NULL);
    close(sp->lfd);
}

/* The CONNECT reply waits for the proxy to reach the target: it gets the
 * connect deadline, not the short one of the proxy's own answers. A
 * reply later than act1_timeout_ms opens the tunnel; one that never
 * comes ends the attempt at connect_timeout_ms, named as such. */
static void test_proxy_connect_reply_deadline(void)
{
    static const struct { int reply_ms; int timeout; } cases[] = { { 900, 0 }, { -1, 1 } };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        slow_proxy sp;
        char proxy[32];
        slow_proxy_start(&sp, cases[i].reply_ms, proxy, sizeof(proxy));
        p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
        co.act1_timeout_ms = 300;
        co.connect_timeout_ms = 1500;
        co.socks5 = proxy;
        p11n_ctx *cli = ctx_open(1, "cli", co);
        end e;
        dial(cli, 9, &e);
        CU_ASSERT(pump_until(end_closed, &e));
        if (cases[i].timeout) {
            CU_ASSERT(e.reason == P11N_ERR_TIMEOUT);
            CU_ASSERT(strstr(e.text, "timed out after 1500 ms") != NULL);
            CU_ASSERT(strstr(e.text, "(connect_timeout_ms)") != NULL);
        } else {
            /* The tunnel opened; nothing speaks p11noise behind it. */
            CU_ASSERT(strstr(e.text, "act1_timeout_ms") == NULL);
            CU_ASSERT(strstr(e.text, "connect_timeout_ms") == NULL);
        }
        ctx_close_all();
        slow_proxy_stop(&sp);
    }
}

/* ---- keepalive ---- */

static int sock_int(int fd, int level, int opt)
{
    int v = -1;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, level, opt, &v, &len) != 0)
        return -2;
    return v;
}

static void test_keepalive(void)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    so.keepalive_idle_s = 7;
    so.keepalive_interval_s = 3;
    so.keepalive_count = 4;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    co.keepalive_idle_s = -1;  /* off on the client's side */
    p11n_ctx *cli = ctx_open(1, "cli", co);
    server_reset();
    uint16_t port = listen_kk(srv, 0, 0, NULL);
    end e;
    dial(cli, port, &e);
    CU_ASSERT_FATAL(pump_until(end_settled, &e) && e.established == 1 && srv_n == 1);
    int sfd = srv_ends[0].conn->fd, cfd = e.conn->fd;
    CU_ASSERT(sock_int(sfd, SOL_SOCKET, SO_KEEPALIVE) == 1);
    CU_ASSERT(sock_int(sfd, IPPROTO_TCP, TCP_KEEPIDLE) == 7);
    CU_ASSERT(sock_int(sfd, IPPROTO_TCP, TCP_KEEPINTVL) == 3);
    CU_ASSERT(sock_int(sfd, IPPROTO_TCP, TCP_KEEPCNT) == 4);
    CU_ASSERT(sock_int(cfd, SOL_SOCKET, SO_KEEPALIVE) == 0);
    CU_ASSERT(sock_int(cfd, IPPROTO_TCP, TCP_NODELAY) == 1);
    ctx_close_all();

    /* The defaults, on an outgoing socket. */
    so = (p11n_ctx_options)P11N_CTX_OPTIONS_INIT;
    srv = ctx_open(0, "srv", so);
    cli = ctx_open(1, "cli", so);
    server_reset();
    port = listen_kk(srv, 0, 0, NULL);
    dial(cli, port, &e);
    CU_ASSERT_FATAL(pump_until(end_settled, &e) && e.established == 1);
    cfd = e.conn->fd;
    CU_ASSERT(sock_int(cfd, SOL_SOCKET, SO_KEEPALIVE) == 1);
    CU_ASSERT(sock_int(cfd, IPPROTO_TCP, TCP_KEEPIDLE) == 60);
    CU_ASSERT(sock_int(cfd, IPPROTO_TCP, TCP_KEEPINTVL) == 10);
    CU_ASSERT(sock_int(cfd, IPPROTO_TCP, TCP_KEEPCNT) == 6);
    ctx_close_all();
}

/* ---- the refusal log under a flood ---- */

static void *garbage_main(void *arg)
{
    uint16_t port = *(uint16_t *)arg;
    uint8_t junk[64];
    memset(junk, 0xee, sizeof(junk));  /* version 0xee: rejected at once */
    for (int i = 0; i < 200; i++) {
        int fd = raw_connect(port, 0);
        if (fd < 0)
            continue;
        send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        (void)poll(&p, 1, 5000);
        close(fd);
    }
    return NULL;
}

static void test_refusal_flood(void)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    so.log_refusals_per_s = 3;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    (void)ctx_open(1, "cli", co);
    server_reset();
    p11n_listener *l = NULL;
    uint16_t port = listen_kk(srv, 0, 0, &l);
    size_t mark = t_log_mark();
    uint64_t t0 = mono_ms();
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, garbage_main, &port) == 0);
    while (pthread_tryjoin_np(th, NULL) != 0)
        t_pump(ctxs, 2, 20);
    pump_for(100);
    uint64_t secs = (mono_ms() - t0) / 1000 + 1;
    size_t lines = t_log_count(mark, "failed during handshake");
    fprintf(stderr, "200 bad connections in %llu s: %zu lines, %d closes seen\n",
        (unsigned long long)secs, lines, srv_closed_other);
    CU_ASSERT(srv_closed_other == 200);
    CU_ASSERT(lines >= 3);
    /* The accepted ones have a budget of their own. */
    size_t arrivals = t_log_count(mark, "incoming from");
    CU_ASSERT(arrivals >= 3 && arrivals <= 3 * (secs + 1));
    /* Each second (or part of one) the flood spans has at most 3. */
    CU_ASSERT(lines <= 3 * (secs + 1));
    /* Closing the listener summarises what was not logged. */
    p11n_listener_close(l);
    char want[120];
    snprintf(want, sizeof(want), "(%zu not logged one by one): 200 bad act", 200 - lines);
    CU_ASSERT(t_log_has(mark, "200 connections refused in the last", want));
    CU_ASSERT(t_log_count(mark, "connections refused in the last") <= secs / 10 + 1);
    snprintf(want, sizeof(want), "s (%zu not logged one by one)", 200 - arrivals);
    CU_ASSERT(t_log_has(mark, "200 connections accepted in the last ", want));
    ctx_close_all();
}

/* ---- eviction whose callback closes the accepting listener ---- */

static p11n_listener *closing_in_callback;
static int evict_closed;

static void close_listener_on_evict(p11n_conn *c, int reason, const char *text, int final,
    void *arg)
{
    (void)c;
    (void)text;
    (void)final;
    (void)arg;
    evict_closed++;
    if (reason == P11N_ERR_EVICTED && closing_in_callback != NULL) {
        p11n_listener *l = closing_in_callback;
        closing_in_callback = NULL;
        p11n_listener_close(l);
    }
}

static int one_evict_closed(void *arg)
{
    (void)arg;
    return evict_closed > 0;
}

/* The context's table is full with a connection of listener A; a
 * newcomer on listener B (no connection of its own) evicts it, and the
 * victim's callback closes B while B is accepting. */
static void test_evict_closes_accepting_listener(void)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    so.max_handshakes = 1;
    p11n_ctx *srv = ctx_open(0, "srv", so);
    evict_closed = 0;
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = keys[K_SERVER];
    lo.ch.pattern = "KK";
    lo.ch.cb = cbs;
    lo.ch.cb.closed = close_listener_on_evict;
    lo.max_handshakes = 8;   /* each listener has room: the context is what is full */
    p11n_listener *a = NULL, *b = NULL;
    CU_ASSERT_FATAL(p11n_listen(srv, "127.0.0.1", 0, &lo, &a) == P11N_OK);
    CU_ASSERT_FATAL(p11n_listen(srv, "127.0.0.1", 0, &lo, &b) == P11N_OK);
    int fa = raw_connect(p11n_listener_port(a), 0);
    CU_ASSERT_FATAL(fa >= 0);
    pump_for(200);
    closing_in_callback = b;
    int fb = raw_connect(p11n_listener_port(b), 0);
    CU_ASSERT_FATAL(fb >= 0);
    CU_ASSERT(pump_until(one_evict_closed, NULL));
    CU_ASSERT(closing_in_callback == NULL);
    pump_for(100);
    close(fa);
    close(fb);
    p11n_listener_close(a);
    ctx_close_all();
}

/* ---- backpressure is not a stall ---- */

static int bp_closed;
static uint64_t bp_bytes;
static p11n_conn *bp_conn;

static void bp_established(p11n_conn *c, const char *peer, void *arg)
{
    (void)peer;
    (void)arg;
    bp_conn = c;
    CU_ASSERT(p11n_conn_pause_read(c, 1) == P11N_OK);   /* its consumer is busy */
}

static void bp_message(p11n_conn *c, const uint8_t *m, size_t len, void *arg)
{
    (void)c;
    (void)m;
    (void)arg;
    bp_bytes += len;
}

static void bp_closed_cb(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)reason;
    (void)final;
    (void)arg;
    bp_closed++;
    fprintf(stderr, "client closed: %s\n", text);
}

static int bp_all_in(void *arg)
{
    (void)arg;
    return bp_bytes >= 64000000 || bp_closed > 0;
}

/* A client pauses its reads (p11n_conn_pause_read, the documented
 * backpressure) for three act deadlines while the server sends 64 MB:
 * neither side calls that a stall. */
static void test_pause_is_not_a_stall(void)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    so.act_timeout_ms = 500;
    (void)ctx_open(0, "srv", so);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    co.act_timeout_ms = 500;
    p11n_ctx *cli = ctx_open(1, "cli", co);
    server_reset();
    srv_flood = 64000000;
    bp_closed = 0;
    bp_bytes = 0;
    bp_conn = NULL;
    uint16_t port = listen_kk(ctxs[0], 0, 0, NULL);
    p11n_connect_options o = P11N_CONNECT_OPTIONS_INIT;
    o.ch.key = keys[K_CLIENT];
    o.ch.pattern = "KK";
    o.ch.cb.established = bp_established;
    o.ch.cb.message = bp_message;
    o.ch.cb.closed = bp_closed_cb;
    p11n_conn *c = NULL;
    CU_ASSERT_FATAL(p11n_connect(cli, "127.0.0.1", port, "server", &o, &c) == P11N_OK);
    pump_for(1500);
    if (bp_conn != NULL && bp_closed == 0)
        CU_ASSERT(p11n_conn_pause_read(bp_conn, 0) == P11N_OK);
    CU_ASSERT(pump_until(bp_all_in, NULL));
    CU_ASSERT(srv_ends[0].closed == 0);
    if (srv_ends[0].closed)
        fprintf(stderr, "server closed: %s\n", srv_ends[0].text);
    CU_ASSERT(bp_closed == 0);
    CU_ASSERT(bp_bytes >= 64000000);
    srv_flood = 0;
    ctx_close_all();
}

int main(void)
{
    static const p11n_test tests[] = {
        { "refusal log: lines per second and the summary, fake clock", test_ratelog_clock },
        { "refusal log: a flood of bad connections", test_refusal_flood },
        { "established caps: context (outgoing too) and listener", test_established_caps },
        { "established cap checked at completion", test_established_cap_at_completion },
        { "keepalive on accepted and outgoing sockets", test_keepalive },
        { "proxy phase of an outgoing connection: the act-1 deadline",
            test_proxy_phase_deadline },
        { "proxy phase: the CONNECT reply gets the connect deadline",
            test_proxy_connect_reply_deadline },
        { "stalled peers closed at their deadlines", test_stalled_peers },
        { "1,000 idle sockets held open", test_thousand_idle },
        { "idle sockets arriving continuously", test_idle_arrivals },
        { "an eviction's callback closes the accepting listener",
            test_evict_closes_accepting_listener },
        { "a peer pausing its reads is not a stalled peer", test_pause_is_not_a_stall },
        { NULL, NULL },
    };
    int rc = p11n_test_main("halfopen", tests);
    for (int i = 0; i < NKEYS; i++)
        p11n_key_free(keys[i]);
    t_log_free();
    return rc;
}
