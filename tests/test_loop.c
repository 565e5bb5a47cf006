/*
 * What the event loop promises beyond moving messages, under whichever
 * backend P11N_LOOP selects (tests/net-poll.sh runs this again with
 * poll(); the default is epoll on Linux):
 *
 *  - both backends, chosen by option, interoperate, and p11n_run /
 *    p11n_run_once drive them as well as the external loop does;
 *  - the loop does not sleep after calling the application back from the
 *    work it does before waiting (a `writable` after writing the queue, a
 *    final `closed`): p11n_poll_fds returns a timeout of 0 then;
 *  - a graceful close gives a peer that reads late every flushed message
 *    and then the end of the stream, not a reset;
 *  - reading paused for backpressure loses no message and delivers the
 *    ones already received in order after resuming.
 *
 * Contexts in one process over loopback, driven by one poll() through the
 * external-loop interface (tests/netutil.c), except where p11n_run and
 * p11n_run_once are the subject.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "netutil.h"
#include "p11noise.h"
#include "testutil.h"

enum { K_SERVER, K_CLIENT, NKEYS };
static p11n_key *keys[NKEYS];
static uint8_t pubs[NKEYS][P11N_PUBKEY_LEN];

static void keys_setup(void)
{
    if (keys[0] != NULL)
        return;
    uint64_t seed = 0x6c6f6f70;
    for (int i = 0; i < NKEYS; i++) {
        uint8_t priv[32];
        t_fill(priv, sizeof(priv), &seed);
        size_t len = 0;
        if (p11n_key_from_private("secp256k1", priv, sizeof(priv), &keys[i]) != P11N_OK
            || p11n_key_public(keys[i], pubs[i], sizeof(pubs[i]), &len) != P11N_OK)
            abort();
    }
}

/* ---- contexts ---- */

#define MAXCTX 2
static p11n_ctx *ctxs[MAXCTX];

/* A context logging into the test log as [name] (or nowhere when `name`
 * is NULL: the log sink is not thread-safe), knowing the other side's
 * key as "server" / "client". */
static p11n_ctx *ctx_new(const char *name, p11n_ctx_options o)
{
    keys_setup();
    if (name != NULL) {
        o.log = t_log_cb;
        o.log_arg = (void *)name;
        o.log_level = P11N_LOG_DEBUG;
    } else {
        o.log_level = P11N_LOG_ERROR;
    }
    p11n_ctx *ctx = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctx) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctx, pubs[K_SERVER], "server", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctx, pubs[K_CLIENT], "client", 0) == P11N_OK);
    return ctx;
}

/* The pair pumped by pump_until. */
static void pair_set(p11n_ctx *srv, p11n_ctx *cli)
{
    ctxs[0] = srv;
    ctxs[1] = cli;
}

static void pair_free(void)
{
    for (int i = 0; i < MAXCTX; i++) {
        p11n_ctx_free(ctxs[i]);
        ctxs[i] = NULL;
    }
}

/* Run until done(arg), within a generous hang guard (a failure shows in
 * the assertion that follows, not in the clock). */
static int pump_until(int (*done)(void *), void *arg)
{
    time_t guard = time(NULL) + 120;
    while (!done(arg)) {
        if (time(NULL) > guard)
            return 0;
        t_pump(ctxs, MAXCTX, 50);
    }
    return 1;
}

/* ---- one end of a connection ---- */

typedef struct end {
    p11n_conn *conn;
    int established, closed, final, reason;
    char text[200];
    uint64_t msgs;
    int bad;                /* a message was wrong, or came while paused */
    int writable;           /* writable callbacks */
    int writable_sends;     /* writable sends this many 1-byte messages */
    /* echo server */
    int echo;
    int close_after;        /* p11n_close after echoing this many (0: never) */
    int backpressure;       /* on WOULD_BLOCK keep the message and pause */
    uint8_t *pending;
    size_t pending_len;
    unsigned pauses;
    /* checked stream: message i is msg_make(i) */
    int check;
} end;

static size_t msg_make(uint64_t i, uint8_t *buf, size_t cap)
{
    uint64_t seed = i * 2654435761u + 1;
    size_t len = cap;
    t_fill(buf, len, &seed);
    return len;
}

static void check_msg(end *e, const uint8_t *msg, size_t len)
{
    static uint8_t want[P11N_MAX_MESSAGE];
    if (len > sizeof(want)) {
        e->bad++;
        return;
    }
    msg_make(e->msgs, want, len);
    if (memcmp(want, msg, len) != 0)
        e->bad++;
}

static void on_established(p11n_conn *c, const char *peer, void *arg)
{
    end *e = arg;
    (void)peer;
    e->established++;
    e->conn = c;
}

static void on_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    end *e = arg;
    if (e->pending != NULL)
        e->bad++; /* delivered while paused */
    if (e->check)
        check_msg(e, msg, len);
    e->msgs++;
    if (!e->echo)
        return;
    int rc = p11n_send(c, msg, len);
    if (rc == P11N_ERR_WOULD_BLOCK && e->backpressure) {
        /* The documented pattern: keep it, stop reading until writable. */
        e->pending = malloc(len + 1);
        CU_ASSERT_FATAL(e->pending != NULL);
        memcpy(e->pending, msg, len);
        e->pending_len = len;
        e->pauses++;
        if (p11n_conn_pause_read(c, 1) != P11N_OK)
            e->bad++;
        return;
    }
    if (rc != P11N_OK)
        e->bad++;
    if (e->close_after > 0 && e->msgs == (uint64_t)e->close_after)
        p11n_close(c);
}

static void on_writable(p11n_conn *c, void *arg)
{
    end *e = arg;
    e->writable++;
    for (int i = 0; i < e->writable_sends; i++)
        if (p11n_send(c, (const uint8_t *)"w", 1) != P11N_OK)
            e->bad++;
    if (e->pending == NULL)
        return;
    if (p11n_send(c, e->pending, e->pending_len) != P11N_OK)
        e->bad++;
    free(e->pending);
    e->pending = NULL;
    if (p11n_conn_pause_read(c, 0) != P11N_OK)
        e->bad++;
}

static void on_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    end *e = arg;
    (void)c;
    e->closed++;
    e->final = final;
    e->reason = reason;
    snprintf(e->text, sizeof(e->text), "%s", text);
    if (final)
        e->conn = NULL;
}

static const p11n_callbacks end_cb = {
    .established = on_established,
    .message = on_message,
    .writable = on_writable,
    .closed = on_closed,
};

/* The server's one connection reports into `srv_end` (set up by the
 * caller: echo, close_after, backpressure). */
static uint16_t listen_for_client(p11n_ctx *srv, end *srv_end)
{
    static const char *const accept[] = { "client" };
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = keys[K_SERVER];
    lo.ch.cb = end_cb;
    lo.ch.cb.arg = srv_end;
    lo.peers = accept;
    lo.npeers = 1;
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(srv, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    return p11n_listener_port(l);
}

static void connect_server(p11n_ctx *cli, uint16_t port, end *e)
{
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = keys[K_CLIENT];
    co.ch.cb = end_cb;
    co.ch.cb.arg = e;
    p11n_conn *c = NULL;
    CU_ASSERT_FATAL(p11n_connect(cli, "127.0.0.1", port, "server", &co, &c) == P11N_OK);
    e->conn = c;
}

static int both_up(void *arg)
{
    end *const *two = arg;
    return (two[0]->established && two[1]->established) || two[0]->closed || two[1]->closed;
}

static int final_closed(void *arg)
{
    return ((end *)arg)->final;
}

/* A server (from `srv_end`) and a connected client, both established. */
static void pair_up(p11n_ctx_options so, p11n_ctx_options co, end *srv_end, end *cli_end)
{
    p11n_ctx *srv = ctx_new("srv", so);
    p11n_ctx *cli = ctx_new("cli", co);
    pair_set(srv, cli);
    connect_server(cli, listen_for_client(srv, srv_end), cli_end);
    end *two[2] = { srv_end, cli_end };
    CU_ASSERT_FATAL(pump_until(both_up, two));
    CU_ASSERT_FATAL(srv_end->established == 1 && cli_end->established == 1);
}

/* ---- backends ---- */

typedef struct runner {
    p11n_ctx *ctx;
    int rc;
} runner;

static void *run_main(void *arg)
{
    runner *r = arg;
    r->rc = p11n_run(r->ctx);
    return NULL;
}

/* Fds the external loop is given, and their events. */
static size_t exported(p11n_ctx *ctx, struct pollfd *fds, size_t cap)
{
    size_t n = 0;
    int t = 0;
    CU_ASSERT_FATAL(p11n_poll_fds(ctx, fds, cap, &n, &t) == P11N_OK);
    return n;
}

/* A server on backend `sb` run by p11n_run in a thread, a client on `cb`
 * driven by p11n_run_once: messages echoed, then a graceful close. */
static void run_pair(int sb, int cb)
{
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT, co = P11N_CTX_OPTIONS_INIT;
    so.loop = sb;
    co.loop = cb;
    p11n_ctx *srv = ctx_new(NULL, so);
    p11n_ctx *cli = ctx_new(NULL, co);
    end se, ce;
    memset(&se, 0, sizeof(se));
    memset(&ce, 0, sizeof(ce));
    se.echo = 1;
    uint16_t port = listen_for_client(srv, &se);

    /* epoll: the epoll fd alone; poll(): the wake-up fd and the listener. */
    struct pollfd fds[8];
    size_t n = exported(srv, fds, 8);
    if (sb == P11N_LOOP_EPOLL)
        CU_ASSERT(n == 1 && fds[0].events == POLLIN);
    if (sb == P11N_LOOP_POLL)
        CU_ASSERT(n == 2);

    runner r = { srv, -1 };
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, run_main, &r) == 0);
    connect_server(cli, port, &ce);
    time_t guard = time(NULL) + 60;
    while (!ce.established && !ce.closed && time(NULL) < guard)
        CU_ASSERT_FATAL(p11n_run_once(cli, 100) == P11N_OK);
    CU_ASSERT_FATAL(ce.established == 1);
    ce.check = 1;
    uint8_t m[1000];
    for (uint64_t i = 0; i < 50; i++)
        CU_ASSERT(p11n_send(ce.conn, m, msg_make(i, m, 1 + i * 19 % sizeof(m))) == P11N_OK);
    while (ce.msgs < 50 && !ce.closed && time(NULL) < guard)
        CU_ASSERT_FATAL(p11n_run_once(cli, 100) == P11N_OK);
    CU_ASSERT(ce.msgs == 50 && ce.bad == 0);
    p11n_close(ce.conn);
    while (!ce.final && time(NULL) < guard)
        CU_ASSERT_FATAL(p11n_run_once(cli, 100) == P11N_OK);
    CU_ASSERT(ce.final && ce.reason == P11N_OK);
    CU_ASSERT_STRING_EQUAL(ce.text, "closed locally");

    p11n_stop(srv); /* from another thread, through the wake-up fd */
    pthread_join(th, NULL);
    CU_ASSERT(r.rc == P11N_OK);
    CU_ASSERT(se.msgs == 50 && se.bad == 0);
    p11n_ctx_free(cli);
    p11n_ctx_free(srv);
}

static void test_backends(void)
{
    p11n_ctx *ctx = NULL;
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.loop = 3;
    CU_ASSERT(p11n_ctx_new(&o, &ctx) == P11N_ERR_INVALID_ARG);
    o.loop = -1;
    CU_ASSERT(p11n_ctx_new(&o, &ctx) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(ctx == NULL);
    run_pair(P11N_LOOP_POLL, P11N_LOOP_EPOLL);
    run_pair(P11N_LOOP_EPOLL, P11N_LOOP_POLL);
}

/* ---- p11n_post: calls from another thread, run on the loop's ---- */

#define POSTS 1000

typedef struct posts {
    p11n_ctx *ctx;
    pthread_t loop_thread;
    unsigned ran, in_order, on_loop;
    int dropped;                  /* set by a call that must never run */
} posts;

static posts *cur_posts;

/* arg: the call's number, from 0 in the order posted. */
static void posted(p11n_ctx *ctx, void *arg)
{
    posts *p = cur_posts;
    p->in_order += (uintptr_t)arg == p->ran;
    p->on_loop += pthread_equal(pthread_self(), p->loop_thread) != 0;
    p->ran++;
    if (p->ran == POSTS)
        p11n_stop(ctx);
}

static void *poster(void *arg)
{
    posts *p = arg;
    for (unsigned i = 0; i < POSTS; i++) {
        if (p11n_post(p->ctx, posted, (void *)(uintptr_t)i) != P11N_OK)
            abort();
        if (i % 100 == 0)
            sched_yield();
    }
    return NULL;
}

static void never(p11n_ctx *ctx, void *arg)
{
    (void)ctx;
    ((posts *)arg)->dropped = 1;
}

/* A thread posts POSTS calls while the loop runs in p11n_run: every one
 * runs, on the loop thread, in order, and the last stops the loop. A call
 * still queued when the context goes is dropped, not run. */
static void test_post(void)
{
    for (int backend = P11N_LOOP_POLL; backend <= P11N_LOOP_EPOLL; backend++) {
        p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
        o.loop = backend;
        o.log = t_log_cb;
        o.log_arg = (void *)"post";
        posts p;
        memset(&p, 0, sizeof(p));
        CU_ASSERT_FATAL(p11n_ctx_new(&o, &p.ctx) == P11N_OK);
        p.loop_thread = pthread_self();
        cur_posts = &p;
        pthread_t th;
        CU_ASSERT_FATAL(pthread_create(&th, NULL, poster, &p) == 0);
        CU_ASSERT(p11n_run(p.ctx) == P11N_OK);
        pthread_join(th, NULL);
        CU_ASSERT(p.ran == POSTS && p.in_order == POSTS && p.on_loop == POSTS);
        CU_ASSERT(p11n_post(p.ctx, never, &p) == P11N_OK);
        CU_ASSERT(p11n_post(NULL, never, &p) == P11N_ERR_INVALID_ARG);
        CU_ASSERT(p11n_post(p.ctx, NULL, &p) == P11N_ERR_INVALID_ARG);
        p11n_ctx_free(p.ctx);
        CU_ASSERT(p.dropped == 0);
    }
}

/* ---- the library prints nothing unless asked ---- */

/* What a context writes on stderr while it listens (an INFO line):
 * nothing with the default options, the line once a level is set. */
static size_t stderr_bytes_of_listen(int log_level)
{
    char path[] = "/tmp/p11n-stderr-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    CU_ASSERT_FATAL(saved >= 0 && dup2(fd, 2) == 2);
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log_level = log_level;
    p11n_ctx *ctx = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctx) == P11N_OK);
    keys_setup();
    CU_ASSERT(p11n_ceremony_input(ctx, pubs[K_CLIENT], "client", 0) == P11N_OK);
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = keys[K_SERVER];
    p11n_listener *l = NULL;
    CU_ASSERT(p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    p11n_ctx_free(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    close(fd);
    unlink(path);
    return size > 0 ? (size_t)size : 0;
}

static void test_silent_by_default(void)
{
    CU_ASSERT(stderr_bytes_of_listen(0) == 0);
    CU_ASSERT(stderr_bytes_of_listen(P11N_LOG_INFO) > 0);
}

/* ---- no sleep after a callback made before the wait ---- */

/* Fill the client's queue past its high-water mark, then let its next
 * p11n_poll_fds write it. Whenever that call itself fires `writable`,
 * the timeout it returns must be 0: the application has to get the
 * chance to send before the loop sleeps. Returns 1 if it did fire there. */
static int writable_round(end *ce, int sends_in_callback, int *bad_timeout)
{
    uint8_t m[4096];
    memset(m, 0x77, sizeof(m));
    int rc;
    while ((rc = p11n_send(ce->conn, m, sizeof(m))) == P11N_OK)
        ;
    CU_ASSERT_FATAL(rc == P11N_ERR_WOULD_BLOCK);
    ce->writable_sends = sends_in_callback;
    int before = ce->writable;
    struct pollfd fds[64];
    size_t n = 0;
    int t = -1;
    CU_ASSERT_FATAL(p11n_poll_fds(ctxs[1], fds, 64, &n, &t) == P11N_OK);
    int inside = ce->writable > before;
    if (inside && t != 0)
        (*bad_timeout)++;
    CU_ASSERT(p11n_process(ctxs[1], fds, 0) == P11N_OK);
    while (ce->writable == before && !ce->closed)
        t_pump(ctxs, MAXCTX, 50);
    return inside;
}

static int server_saw_eos_sent(void *arg)
{
    return t_log_has(*(size_t *)arg, "[srv]", "end of stream sent");
}

static void test_no_sleep_after_callbacks(void)
{
    end se, ce;
    memset(&se, 0, sizeof(se));
    memset(&ce, 0, sizeof(ce));
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT, co = P11N_CTX_OPTIONS_INIT;
    co.write_high_water = 16 * 1024;
    pair_up(so, co, &se, &ce);

    /* `writable` fired while p11n_poll_fds wrote the queue, with and
     * without sending from the callback. */
    int inside = 0, bad_timeout = 0;
    for (int round = 0; round < 200 && inside < 6 && !ce.closed; round++)
        inside += writable_round(&ce, round % 2, &bad_timeout);
    CU_ASSERT(inside > 0);
    CU_ASSERT(bad_timeout == 0);
    CU_ASSERT(ce.bad == 0 && ce.closed == 0);

    /* The final `closed` fired inside p11n_poll_fds: the server closed
     * first (its end of stream is waiting in the client's socket), then
     * the client closes, and finds the peer's end at once. */
    size_t mark = t_log_mark();
    p11n_close(se.conn);
    p11n_ctx *srv_only[1] = { ctxs[0] };
    time_t guard = time(NULL) + 60;
    while (!server_saw_eos_sent(&mark) && time(NULL) < guard)
        t_pump(srv_only, 1, 50);
    CU_ASSERT_FATAL(server_saw_eos_sent(&mark));
    /* The server's messages so far were all read; nothing else is due. */
    p11n_close(ce.conn);
    struct pollfd fds[64];
    size_t n = 0;
    int t = -1;
    CU_ASSERT_FATAL(p11n_poll_fds(ctxs[1], fds, 64, &n, &t) == P11N_OK);
    CU_ASSERT(ce.final == 1 && ce.reason == P11N_OK);
    CU_ASSERT(t == 0);
    CU_ASSERT(p11n_process(ctxs[1], fds, 0) == P11N_OK);
    /* The server ends when the client's end of stream arrives, not at
     * its linger deadline. */
    CU_ASSERT(pump_until(final_closed, &se));
    CU_ASSERT(se.reason == P11N_OK);
    CU_ASSERT_STRING_EQUAL(se.text, "closed locally");
    pair_free();
}

/* The client closes first, as `p11noise connect` does: both ends finish
 * through each other's end of stream, neither at a deadline. */
static void test_close_completes_on_eos(void)
{
    end se, ce;
    memset(&se, 0, sizeof(se));
    memset(&ce, 0, sizeof(ce));
    se.echo = 1;
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT, co = P11N_CTX_OPTIONS_INIT;
    pair_up(so, co, &se, &ce);
    CU_ASSERT(p11n_send(ce.conn, (const uint8_t *)"bye", 3) == P11N_OK);
    p11n_close(ce.conn);
    CU_ASSERT(pump_until(final_closed, &ce));
    CU_ASSERT(ce.reason == P11N_OK);
    CU_ASSERT_STRING_EQUAL(ce.text, "closed locally");
    CU_ASSERT(pump_until(final_closed, &se));
    CU_ASSERT(se.reason == P11N_ERR_CLOSED);
    CU_ASSERT(se.msgs == 1);
    pair_free();
}

/* ---- graceful close and a peer that reads late ---- */

static size_t close_mark;

static int server_closing(void *arg)
{
    end *se = arg;
    return se->closed > 0 || t_log_has(close_mark, "[srv]", "end of stream sent");
}

static void test_close_slow_reader(void)
{
    /* The server echoes 8 messages of a 512 KiB burst and closes: the
     * rest of the burst is still unread in its socket when it is done
     * flushing. The client reads nothing until then. */
    enum { BURST = 64, MSG = 8192, ECHOED = 8 };
    end se, ce;
    memset(&se, 0, sizeof(se));
    memset(&ce, 0, sizeof(ce));
    se.echo = 1;
    se.close_after = ECHOED;
    ce.check = 1;
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT, co = P11N_CTX_OPTIONS_INIT;
    pair_up(so, co, &se, &ce);
    close_mark = t_log_mark();
    CU_ASSERT(p11n_conn_pause_read(ce.conn, 1) == P11N_OK);
    static uint8_t m[MSG];
    for (uint64_t i = 0; i < BURST; i++)
        CU_ASSERT_FATAL(p11n_send(ce.conn, m, msg_make(i, m, MSG)) == P11N_OK);
    CU_ASSERT(pump_until(server_closing, &se));

    /* Now the client reads: every echo, then the end of the stream. */
    CU_ASSERT(ce.closed == 0);
    CU_ASSERT(p11n_conn_pause_read(ce.conn, 0) == P11N_OK);
    CU_ASSERT(pump_until(final_closed, &ce));
    CU_ASSERT(ce.msgs == ECHOED);
    CU_ASSERT(ce.bad == 0);
    CU_ASSERT(ce.reason == P11N_ERR_CLOSED);
    CU_ASSERT_STRING_EQUAL(ce.text, "closed by peer");
    CU_ASSERT(pump_until(final_closed, &se));
    CU_ASSERT(se.reason == P11N_OK);
    pair_free();
}

/* ---- backpressure ---- */

static int server_paused(void *arg)
{
    end *const *two = arg;
    return two[0]->pending != NULL || two[0]->closed || two[1]->closed;
}

static int all_echoed(void *arg)
{
    end *const *two = arg;
    return two[1]->msgs == (uint64_t)two[1]->check || two[0]->closed || two[1]->closed;
}

static void test_backpressure(void)
{
    /* The client queues 8 MiB and reads nothing for a while; the echo
     * server's queue is capped at 64 KiB, so it must pause reading. */
    enum { COUNT = 128 };
    end se, ce;
    memset(&se, 0, sizeof(se));
    memset(&ce, 0, sizeof(ce));
    se.echo = 1;
    se.backpressure = 1;
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT, co = P11N_CTX_OPTIONS_INIT;
    so.write_high_water = 64 * 1024;
    co.write_high_water = 16 * 1024 * 1024;
    pair_up(so, co, &se, &ce);
    CU_ASSERT(p11n_conn_pause_read(NULL, 1) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_conn_pause_read(ce.conn, 1) == P11N_OK);
    static uint8_t m[P11N_MAX_MESSAGE];
    for (uint64_t i = 0; i < COUNT; i++)
        CU_ASSERT_FATAL(p11n_send(ce.conn, m, msg_make(i, m, sizeof(m))) == P11N_OK);
    end *two[2] = { &se, &ce };
    CU_ASSERT(pump_until(server_paused, two));
    CU_ASSERT(se.pauses > 0);
    /* Stalled both ways: nothing is lost and nothing grows. */
    for (int i = 0; i < 20; i++)
        t_pump(ctxs, MAXCTX, 10);
    CU_ASSERT(se.closed == 0 && ce.closed == 0);
    CU_ASSERT(ce.msgs == 0);

    ce.check = COUNT; /* all_echoed's target; also turns on the checks */
    CU_ASSERT(p11n_conn_pause_read(ce.conn, 0) == P11N_OK);
    CU_ASSERT(pump_until(all_echoed, two));
    CU_ASSERT(ce.msgs == COUNT);
    CU_ASSERT(ce.bad == 0 && se.bad == 0);
    CU_ASSERT(se.closed == 0 && ce.closed == 0);
    CU_ASSERT(se.msgs == COUNT);
    fprintf(stderr, "  %d x 65535 B echoed; the echo server paused reading %u times\n", COUNT,
        se.pauses);
    p11n_close(ce.conn);
    CU_ASSERT(p11n_conn_pause_read(ce.conn, 1) == P11N_ERR_STATE);
    CU_ASSERT(pump_until(final_closed, &ce));
    CU_ASSERT(pump_until(final_closed, &se));
    CU_ASSERT(ce.reason == P11N_OK && se.reason == P11N_ERR_CLOSED);
    free(se.pending);
    pair_free();
}

int main(void)
{
    static const p11n_test tests[] = {
        { "poll and epoll backends, p11n_run and p11n_run_once", test_backends },
        { "p11n_post from another thread: every call, in order, on the loop", test_post },
        { "silent unless a log callback or level is set", test_silent_by_default },
        { "no sleep after a callback made before the wait", test_no_sleep_after_callbacks },
        { "a close completes on the peer's end of stream", test_close_completes_on_eos },
        { "graceful close: a late reader gets every echo, then EOF", test_close_slow_reader },
        { "backpressure: paused reading loses nothing", test_backpressure },
        { NULL, NULL },
    };
    const char *loop = getenv("P11N_LOOP");
    fprintf(stderr, "loop backend: %s\n", loop != NULL && *loop ? loop : "default");
    int rc = p11n_test_main("loop", tests);
    for (int i = 0; i < NKEYS; i++)
        p11n_key_free(keys[i]);
    t_log_free();
    return rc;
}
