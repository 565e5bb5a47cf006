/*
 * The event loop with token keys (SoftHSM2): handshake steps run on the
 * worker threads, the peer store comes from the token's ceremony objects,
 * and with the fault module delaying every C_DeriveKey by 2 s, messages on
 * an established connection keep flowing while a new handshake waits for
 * the token, and the token queue limit drops what does not fit. A token
 * pulled out in the middle of a stream of handshakes makes them fail
 * clearly while it is away, and they succeed again once it is back.
 */
#include <errno.h>
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
#include "softhsm.h"
#include "testutil.h"

static struct t_token T;

static const uint8_t SERVER_PRIV[32] = {
    0x51, 0x9a, 0x0c, 0x3e, 0x77, 0x12, 0xd4, 0x68, 0x0b, 0xe1, 0x45, 0x2f, 0x93, 0x7c, 0x3a, 0x10,
    0xc6, 0x58, 0x21, 0xfe, 0x04, 0x9b, 0x73, 0x3d, 0xa8, 0x16, 0x5e, 0xd2, 0x41, 0x07, 0x8f, 0x2c,
};
static const uint8_t CLIENT_PRIV[32] = {
    0x27, 0x63, 0xb1, 0x0f, 0xd9, 0x45, 0x8a, 0x12, 0x3c, 0xe7, 0x50, 0x9e, 0x06, 0x71, 0xcb, 0x24,
    0x8d, 0x3f, 0x62, 0x19, 0xa0, 0x5b, 0xe4, 0x37, 0x0c, 0x96, 0x2a, 0xf1, 0x48, 0x7e, 0x15, 0x53,
};

static const char *key_uri(const char *object, int fault)
{
    static char buf[2][2048];
    char *b = buf[fault != 0];
    snprintf(b, sizeof(buf[0]), "pkcs11:token=%s;object=%s?module-path=%s&pin-value=" T_PIN,
        T.label, object, fault ? P11N_FAULT_MODULE : T.module);
    return b;
}

static p11n_key *load(const char *uri)
{
    p11n_key *k = NULL;
    int rc = p11n_key_load(uri, &k);
    if (rc != P11N_OK)
        fprintf(stderr, "load: %s: %s\n", p11n_strerror(rc), p11n_token_last_error());
    CU_ASSERT_FATAL(rc == P11N_OK);
    return k;
}

/* A token key behind the fault module, every derivation delayed 2 s. */
static p11n_key *load_slow(const char *object)
{
    setenv("P11N_FAULT", "C_DeriveKey:delay=2000", 1);
    p11n_key *k = load(key_uri(object, 1));
    unsetenv("P11N_FAULT");
    return k;
}

static p11n_key *soft_key(const uint8_t priv[32])
{
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(p11n_key_from_private("secp256k1", priv, 32, &k) == P11N_OK);
    return k;
}

static void pub_of(p11n_key *k, uint8_t pub[P11N_PUBKEY_LEN])
{
    size_t len = 0;
    CU_ASSERT_FATAL(p11n_key_public(k, pub, P11N_PUBKEY_LEN, &len) == P11N_OK && len == 33);
}

static p11n_ctx *ctx_make(const char *name, unsigned max_token_ops)
{
    p11n_ctx_options o = t_ctx_options(name);
    o.token_uri = T.uri;
    o.max_token_ops = max_token_ops;
    o.max_unauth_token_ops = max_token_ops;
    p11n_ctx *ctx = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctx) == P11N_OK);
    return ctx;
}

/* Both contexts through one poll(). */
static void pump(p11n_ctx *a, p11n_ctx *b)
{
    p11n_ctx *const both[] = { a, b };
    t_pump(both, 2, 50);
}

#define PUMP_UNTIL(a, b, cond)                                   \
    do {                                                         \
        p11n_ctx *const both_[] = { (a), (b) };                  \
        T_PUMP_UNTIL(both_, 2, cond);                            \
    } while (0)

/* One connection's view (tests/netutil.h). */
typedef t_side side;

/* The server echoes on every connection; one shared state is enough. */
static side server_side = { .echo = 1 };

static p11n_listener *listen_peers(p11n_ctx *ctx, p11n_key *key, const char *pattern,
    const char *const *ids, size_t nids)
{
    return t_listen(ctx, key, pattern, ids, nids, &t_side_cb, &server_side);
}

static p11n_conn *dial(p11n_ctx *ctx, uint16_t port, const char *peer, const char *pattern,
    p11n_key *key, side *s)
{
    return t_dial(ctx, "127.0.0.1", port, peer, pattern, key, s);
}

/* Both sides on the token, KK; the peers come from the token's ceremony
 * objects, written through p11n_ceremony_input. */
static void test_token_keys_kk(void)
{
    struct p11n_token *tok = t_token_open(T.uri);
    t_token_import_key(tok, "server", SERVER_PRIV, 1, 1);
    t_token_import_key(tok, "client", CLIENT_PRIV, 1, 1);
    p11n_token_close(tok);
    p11n_key *skey = load(key_uri("server", 0));
    p11n_key *ckey = load(key_uri("client", 0));
    uint8_t spub[33], cpub[33];
    pub_of(skey, spub);
    pub_of(ckey, cpub);

    p11n_ctx *srv = ctx_make("srv", 0);
    p11n_ctx *cli = ctx_make("cli", 0);
    /* The ceremony, stored on the token, then read back by a context. */
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, cpub, "client", P11N_PEER_TO_TOKEN) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, spub, "server", P11N_PEER_TO_TOKEN) == P11N_OK);
    CU_ASSERT(p11n_peers_load_token(cli, T.uri) == 2);

    static const char *const accepted[] = { "client" };
    p11n_listener *l = listen_peers(srv, skey, NULL, accepted, 1);
    side s = { 0 };
    size_t mark = t_log_mark();
    p11n_conn *c = dial(cli, p11n_listener_port(l), "server", "KK", ckey, &s);
    PUMP_UNTIL(srv, cli, s.established == 1 && server_side.established == 1);
    CU_ASSERT(t_log_has(mark, "worker finished a handshake", NULL));
    /* Worker trips are the token steps alone: the KK initiator's acts 1
     * (es, ss) and 2 (se); the responder's act 1 (es, ss) -- its act 2
     * (ee, se with its ephemeral) has no token work and stays on the loop. */
    CU_ASSERT_EQUAL(p11n_worker_submitted(cli), 2);
    CU_ASSERT_EQUAL(p11n_worker_submitted(srv), 1);
    for (int i = 0; i < 5; i++)
        CU_ASSERT(p11n_send(c, (const uint8_t *)"token", 5) == P11N_OK);
    PUMP_UNTIL(srv, cli, s.msgs == 5);
    p11n_close(c);
    PUMP_UNTIL(srv, cli, s.closed == 1);
    CU_ASSERT(s.reason == P11N_OK);
    p11n_ctx_free(srv);
    p11n_ctx_free(cli);
    p11n_key_free(skey);
    p11n_key_free(ckey);
    /* The key URIs hold the PIN: no part of them is logged. */
    CU_ASSERT(strstr(t_log_text(), "pin-value") == NULL);
    CU_ASSERT(strstr(t_log_text(), "module-path") == NULL);
}

/* A token key's first act starts while the name is still being resolved:
 * the DNS server ignores the first query, so the dial waits for c-ares'
 * retransmission (a second or more) while each derivation takes 200 ms.
 * Then an attempt that fails at once (refused) leaves its job to finish
 * alone, which frees the handshake (ASan checks). */
static void test_start_early(void)
{
    t_dns d;
    CU_ASSERT_FATAL(t_dns_start(&d, "early.p11n.test", "127.0.0.1", NULL, 1) == 0);
    setenv("P11N_FAULT", "C_DeriveKey:delay=200", 1);
    p11n_key *ckey = load(key_uri("client", 1));
    unsetenv("P11N_FAULT");
    p11n_key *skey = soft_key(SERVER_PRIV);
    uint8_t spub[33], cpub[33];
    pub_of(skey, spub);
    pub_of(ckey, cpub);
    char spubhex[67];
    p11n_hex_encode(spub, 33, spubhex);

    p11n_ctx *srv = ctx_make("early-srv", 0);
    char servers[64];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u", d.port);
    p11n_ctx_options o = t_ctx_options("early-cli");
    o.dns_servers = servers;
    o.connect_timeout_ms = 30000;
    p11n_ctx *cli = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &cli) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, cpub, "client", 0) == P11N_OK);
    memset(&server_side, 0, sizeof(server_side));
    server_side.echo = 1;
    static const char *const accepted[] = { "client" };
    p11n_listener *l = listen_peers(srv, skey, NULL, accepted, 1);
    uint16_t port = p11n_listener_port(l);

    side s = { 0 };
    size_t mark = t_log_mark();
    p11n_conn *c = t_dial(cli, "early.p11n.test", port, spubhex, "KK", ckey, &s);
    PUMP_UNTIL(srv, cli, s.established == 1 && server_side.established == 1);
    const char *log = t_log_text() + mark;
    const char *handed = strstr(log, "[early-cli] 4 conn #1: token write handed to a worker");
    const char *ready = strstr(log, "[early-cli] 4 conn #1: first act ready before the connection");
    const char *connected = strstr(log, "[early-cli] 3 conn #1 connected to");
    CU_ASSERT(handed != NULL && ready != NULL && connected != NULL);
    CU_ASSERT(handed < connected);
    CU_ASSERT(ready < connected);
    /* Act 1 early, act 2 after: nothing else went to a worker. */
    CU_ASSERT_EQUAL(p11n_worker_submitted(cli), 2);
    CU_ASSERT(p11n_send(c, (const uint8_t *)"early", 5) == P11N_OK);
    PUMP_UNTIL(srv, cli, s.msgs == 1);
    p11n_close(c);
    PUMP_UNTIL(srv, cli, s.closed == 1);

    /* Refused while act 1 is on the worker: the orphan comes back later. */
    p11n_listener_close(l);
    side r = { 0 };
    mark = t_log_mark();
    dial(cli, port, spubhex, "KK", ckey, &r);
    PUMP_UNTIL(srv, cli, r.closed == 1);
    PUMP_UNTIL(srv, cli, t_log_has(mark, "[early-cli] 4 conn #2: a worker finished a handshake "
        "step of an attempt that has ended: dropped", NULL));
    CU_ASSERT(r.established == 0);

    /* The peer leaves the store during the dial: the attempt ends before
     * act 1 goes out, so the server never completes a handshake. */
    CU_ASSERT_FATAL(p11n_ceremony_input(cli, spub, "server", 0) == P11N_OK);
    l = listen_peers(srv, skey, NULL, accepted, 1);
    memset(&server_side, 0, sizeof(server_side));
    side g = { 0 };
    mark = t_log_mark();
    t_dial(cli, "early.p11n.test", p11n_listener_port(l), "server", "KK", ckey, &g);
    PUMP_UNTIL(srv, cli, t_log_has(mark, "[early-cli] 4 conn #3: token write handed", NULL));
    CU_ASSERT(p11n_peer_remove(cli, "server") == P11N_OK);
    PUMP_UNTIL(srv, cli, g.closed == 1 && server_side.closed == 1);
    CU_ASSERT(g.reason == P11N_ERR_REVOKED);
    CU_ASSERT(t_log_has(mark, "peer key revoked while connecting: server was removed", NULL));
    CU_ASSERT(g.established == 0 && server_side.established == 0);
    p11n_ctx_free(srv);
    p11n_ctx_free(cli);
    p11n_key_free(skey);
    p11n_key_free(ckey);
    t_dns_stop(&d);
}

/* The server key behind the fault module: every derivation takes 2 s. An
 * XK responder needs two (one static DH with parity recovery). */
static void test_slow_token(void)
{
    p11n_key *skey = load_slow("server");
    p11n_key *ckey = soft_key(CLIENT_PRIV);
    uint8_t spub[33], cpub[33];
    pub_of(skey, spub);
    pub_of(ckey, cpub);
    char spubhex[67];
    p11n_hex_encode(spub, 33, spubhex);

    /* One token derivation queued at a time: a third handshake's act 1
     * (unauthenticated work) is refused while the second waits for the
     * token. */
    p11n_ctx *srv = ctx_make("slow-srv", 1);
    p11n_ctx *cli = ctx_make("slow-cli", 0);
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, cpub, "client", 0) == P11N_OK);
    memset(&server_side, 0, sizeof(server_side));
    server_side.echo = 1;
    p11n_listener *l = listen_peers(srv, skey, "XK", NULL, 0);
    uint16_t port = p11n_listener_port(l);

    side steady = { 0 };
    p11n_conn *sc = dial(cli, port, spubhex, "XK", ckey, &steady);
    PUMP_UNTIL(srv, cli, server_side.established == 1 && steady.established == 1);

    /* A second handshake starts: its first act waits ~4 s for the token. */
    size_t mark = t_log_mark();
    side second = { 0 }, third = { 0 };
    dial(cli, port, spubhex, "XK", ckey, &second);
    PUMP_UNTIL(srv, cli, t_log_has(mark, "[slow-srv] 3 conn #2 incoming", NULL));
    dial(cli, port, spubhex, "XK", ckey, &third);

    /* Round trips on the established connection while the token works. */
    uint64_t during = 0;
    time_t guard = time(NULL) + 120;
    while (server_side.established < 2 && time(NULL) < guard) {
        uint64_t before = steady.msgs;
        if (p11n_send(sc, (const uint8_t *)"tick", 4) != P11N_OK) {
            CU_FAIL("send on the established connection");
            break;
        }
        while (steady.msgs == before && time(NULL) < guard)
            pump(srv, cli);
        if (server_side.established < 2)
            during++;
    }
    fprintf(stderr, "  %llu round trips while the slow token handshake ran\n",
        (unsigned long long)during);
    CU_ASSERT(server_side.established == 2);
    CU_ASSERT(during >= 10);
    CU_ASSERT(t_log_has(mark, "act refused before any token operation",
        "max_unauth_token_ops"));
    PUMP_UNTIL(srv, cli, second.established == 1 && third.closed == 1);
    CU_ASSERT(third.established == 0);
    /* An XK responder's token work is act 1 alone (es): one trip for each
     * of the two handshakes that got in; acts 2 and 3 stay on the loop. */
    CU_ASSERT_EQUAL(p11n_worker_submitted(srv), 2);
    CU_ASSERT(steady.closed == 0);
    p11n_ctx_free(srv);
    p11n_ctx_free(cli);
    p11n_key_free(skey);
    p11n_key_free(ckey);
}

/* A connection closed while its token step runs stays with the worker
 * until the step returns; meanwhile the loop must sleep in poll(), not
 * spin (p11n_poll_fds may not ask for an immediate return). */
static void test_close_during_token_step(void)
{
    p11n_key *ckey = load_slow("client");
    p11n_key *skey = soft_key(SERVER_PRIV);
    uint8_t spub[33], cpub[33];
    pub_of(skey, spub);
    pub_of(ckey, cpub);
    p11n_ctx *srv = ctx_make("zsrv", 0);
    p11n_ctx *cli = ctx_make("zcli", 0);
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, cpub, "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(cli, spub, "server", 0) == P11N_OK);
    static const char *const accepted[] = { "client" };
    static const p11n_callbacks none = { 0 };
    p11n_listener *l = t_listen(srv, skey, NULL, accepted, 1, &none, NULL);

    size_t mark = t_log_mark();
    side s = { 0 };
    p11n_conn *c = dial(cli, p11n_listener_port(l), "server", "KK", ckey, &s);
    /* Connected: act one went to a worker in the same call. */
    PUMP_UNTIL(srv, cli, t_log_has(mark, "[zcli] 3 conn #1 connected to", NULL));
    p11n_close(c);
    PUMP_UNTIL(srv, cli, s.closed == 1);
    CU_ASSERT(!t_log_has(mark, "worker finished", NULL));
    /* Timers that happen to be due are fired; then only the worker's
     * wake-up can end the wait. */
    int wait = 0;
    for (int i = 0; i < 3 && wait == 0; i++) {
        struct pollfd fds[64];
        size_t n = 0;
        CU_ASSERT_FATAL(p11n_poll_fds(cli, fds, 64, &n, &wait) == P11N_OK);
        if (wait == 0)
            CU_ASSERT(p11n_process(cli, NULL, 0) == P11N_OK);
    }
    CU_ASSERT(wait != 0);
    /* Freed with the context once the worker returns (ASan checks). */
    p11n_ctx_free(cli);
    p11n_ctx_free(srv);
    p11n_key_free(skey);
    p11n_key_free(ckey);
}

/* A listening socket on 127.0.0.1 that resets the first connection it
 * accepts once the client has logged it as connected (before that, the
 * reset could end the connect itself), and holds the others open. */
typedef struct resetter {
    int lfd;
    int fds[64];
    size_t n, reset;
} resetter;

static uint16_t resetter_open(resetter *r)
{
    memset(r, 0, sizeof(*r));
    r->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CU_ASSERT_FATAL(r->lfd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    CU_ASSERT_FATAL(bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CU_ASSERT_FATAL(listen(r->lfd, 16) == 0);
    CU_ASSERT_FATAL(getsockname(r->lfd, (struct sockaddr *)&sa, &len) == 0);
    return ntohs(sa.sin_port);
}

static void resetter_step(resetter *r, size_t connected)
{
    int fd;
    while (r->n < 64 && (fd = accept(r->lfd, NULL, NULL)) >= 0)
        r->fds[r->n++] = fd;
    for (; r->reset < r->n && r->reset < connected && r->reset < 1; r->reset++) {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(r->fds[r->reset], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(r->fds[r->reset]);
    }
}

static void resetter_close(resetter *r)
{
    for (; r->reset < r->n; r->reset++)
        close(r->fds[r->reset]);
    close(r->lfd);
}

/* An attempt that ends while its token step runs leaves the step to its
 * worker: the reconnect starts at once, its own step runs on another
 * worker, and the old one is dropped when it comes back. The first
 * derivation of the handshakes takes 3 s, the later ones none. Under
 * valgrind, which runs one thread at a time (and a login on a fresh
 * worker session there takes seconds), which step comes back first is
 * its scheduler's choice: the order is not asserted there, only that both
 * come back and the old one is dropped. */
static void test_reconnect_during_token_step(void)
{
    int ordered = getenv("P11N_UNDER_VALGRIND") == NULL;
    setenv("P11N_FAULT", "C_DeriveKey:delay@2=3000", 1);
    p11n_key *ckey = load(key_uri("client", 1));
    unsetenv("P11N_FAULT");
    p11n_key *skey = soft_key(SERVER_PRIV);
    uint8_t spub[33];
    pub_of(skey, spub);
    char spubhex[67];
    p11n_hex_encode(spub, 33, spubhex);
    p11n_ctx *cli = ctx_make("rcli", 0);
    resetter r;
    uint16_t port = resetter_open(&r);

    size_t mark = t_log_mark();
    side s;
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = ckey;
    co.reconnect = 1;
    co.backoff_min_ms = co.backoff_max_ms = 1;
    p11n_conn *c = t_dial_with(cli, "127.0.0.1", port, spubhex, &co, &s);
    const char *later = "worker finished a handshake write";
    const char *orphan = "of an attempt that has ended: dropped";
    time_t guard = time(NULL) + 60;
    while (t_log_count(mark, later) == 0 && t_log_count(mark, orphan) == 0
        && time(NULL) < guard) {
        /* Reset only once the first step is inside its slow derivation
         * (the second of the key's; the first checked the key): a step
         * whose attempt ended before it reached the token never would. */
        int in_token = t_fault_calls("C_DeriveKey") >= 2;
        resetter_step(&r, in_token ? t_log_count(mark, "connected to") : 0);
        pump(cli, NULL);
    }
    /* A later attempt's step came back before the first one's. */
    CU_ASSERT(s.closed >= 1);
    if (ordered) {
        CU_ASSERT(t_log_count(mark, later) >= 1);
        CU_ASSERT(t_log_count(mark, orphan) == 0);
    }
    while ((t_log_count(mark, orphan) == 0 || t_log_count(mark, later) == 0)
        && time(NULL) < guard) {
        resetter_step(&r, t_log_count(mark, "connected to"));
        pump(cli, NULL);
    }
    CU_ASSERT(t_log_count(mark, orphan) >= 1);
    CU_ASSERT(t_log_count(mark, later) >= 1);
    p11n_close(c);
    pump(cli, NULL);
    p11n_ctx_free(cli);
    resetter_close(&r);
    p11n_key_free(skey);
    p11n_key_free(ckey);
}

/* ---- a token pulled out during a stream of handshakes ---- */

/* How long the token stays out: long enough for several handshakes to
 * fail while it is away. */
#define AWAY_MS 1000
/* Handshakes at most in one stream (the guard for a hung test). */
#define MAX_STREAM 300

struct stream_case {
    const char *pattern;
    int token_initiates;    /* the token key is the initiator's, else the responder's */
};

/* The stream's keys: one on the token (PIN-protected public-key object),
 * the other in software. */
static void seed_stream_keys(void)
{
    static int done;
    if (done++)
        return;
    struct p11n_token *tok = t_token_open(T.uri);
    t_token_import_key(tok, "stream-server", SERVER_PRIV, 1, 1);
    t_token_import_key(tok, "stream-client", CLIENT_PRIV, 1, 1);
    p11n_token_close(tok);
}

/* Pump for `ms` milliseconds. */
static void pump_for(p11n_ctx *a, p11n_ctx *b, int ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        pump(a, b);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

struct stream {
    p11n_ctx *srv, *cli;
    p11n_key *ckey;
    uint16_t port;
    const char *pattern;
    side steady, srvside;
    uint64_t ticks_sent;
    int n, ok, failed, unavailable, first_fail, last_fail, ok_after, ticks_while_away;
};

/* Keep one message in flight on the established connection. */
static void tick(struct stream *st)
{
    if (st->steady.msgs < st->ticks_sent)
        return;
    if (p11n_send(st->steady.conn, (const uint8_t *)"tick", 4) != P11N_OK)
        CU_FAIL("send on the established connection");
    st->ticks_sent++;
}

/* One handshake of the stream, then close it; records the outcome. */
static void stream_one(struct stream *st, int token_initiates, time_t guard)
{
    side h = { 0 };
    int srv_unavailable = st->srvside.unavailable;
    uint64_t msgs = st->steady.msgs;
    p11n_conn *c = dial(st->cli, st->port, "server", st->pattern, st->ckey, &h);
    while (!h.established && !h.closed && time(NULL) < guard) {
        tick(st);
        pump(st->srv, st->cli);
    }
    if (h.established) {
        p11n_close(c);
        while (!h.closed && time(NULL) < guard)
            pump(st->srv, st->cli);
        st->ok++;
        st->ok_after += st->failed > 0;
    } else if (h.closed) {
        /* The side holding the token says why. */
        int why = token_initiates ? h.reason == P11N_ERR_TOKEN_UNAVAILABLE
                                  : st->srvside.unavailable == srv_unavailable + 1;
        st->unavailable += why;
        if (st->failed++ == 0)
            st->first_fail = st->n;
        st->last_fail = st->n;
        st->ticks_while_away += st->ok_after == 0 && st->steady.msgs > msgs;
        /* Failures come fast: do not spin through the away time. */
        tick(st);
        pump_for(st->srv, st->cli, 20);
    }
    st->n++;
}

static void stream_setup(struct stream *st, const struct stream_case *sc, p11n_key *skey,
    p11n_key *ckey)
{
    uint8_t spub[33], cpub[33];
    pub_of(skey, spub);
    pub_of(ckey, cpub);
    st->srv = ctx_make("stream-srv", 0);
    st->cli = ctx_make("stream-cli", 0);
    st->ckey = ckey;
    st->pattern = sc->pattern;
    CU_ASSERT_FATAL(p11n_ceremony_input(st->srv, cpub, "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(st->cli, spub, "server", 0) == P11N_OK);
    static const char *const accepted[] = { "client" };
    st->srvside.echo = 1;
    p11n_listener *l = t_listen(st->srv, skey, sc->pattern, accepted, 1, &t_side_cb,
        &st->srvside);
    st->port = p11n_listener_port(l);
}

/* The token is pulled out in the 5th handshake (the established
 * connection's is the 1st) and stays out AWAY_MS. */
static void run_stream(const struct stream_case *sc)
{
    seed_stream_keys();
    /* Token derivations: 1 for load's self-check, then 2 per static DH;
     * a KK side does 2 static DH per handshake, an XK side 1. */
    unsigned per_hs = strcmp(sc->pattern, "KK") == 0 ? 4 : 2;
    char faults[64];
    snprintf(faults, sizeof(faults), "C_DeriveKey:remove@%u=%d", 1 + 4 * per_hs + 2, AWAY_MS);
    setenv("P11N_FAULT", faults, 1);
    p11n_key *tkey = load(key_uri(sc->token_initiates ? "stream-client" : "stream-server", 1));
    unsetenv("P11N_FAULT");
    p11n_key *soft = soft_key(sc->token_initiates ? SERVER_PRIV : CLIENT_PRIV);
    struct p11n_token *tok = p11n_token_of_key(tkey);
    size_t objects = t_token_objects(tok);
    struct stream st = { .first_fail = -1, .last_fail = -1 };
    stream_setup(&st, sc, sc->token_initiates ? soft : tkey, sc->token_initiates ? tkey : soft);
    size_t mark = t_log_mark();

    time_t guard = time(NULL) + 25;
    dial(st.cli, st.port, "server", sc->pattern, st.ckey, &st.steady);
    PUMP_UNTIL(st.srv, st.cli, st.steady.established == 1);
    while (st.ok_after < 3 && st.n < MAX_STREAM && time(NULL) < guard)
        stream_one(&st, sc->token_initiates, guard);
    /* The established connection still answers. */
    tick(&st);
    PUMP_UNTIL(st.srv, st.cli, st.steady.msgs == st.ticks_sent);

    fprintf(stderr, "  %s, token %s: %d handshakes, %d ok, %d failed (from #%d to #%d), "
        "%d round trips during the failures, %llu in all\n", sc->pattern,
        sc->token_initiates ? "initiates" : "responds", st.n, st.ok, st.failed, st.first_fail,
        st.last_fail, st.ticks_while_away, (unsigned long long)st.ticks_sent);
    CU_ASSERT(st.first_fail >= 1);          /* worked before the removal */
    CU_ASSERT(st.failed >= 1);
    CU_ASSERT(st.unavailable == st.failed); /* every failure says why */
    CU_ASSERT(st.last_fail - st.first_fail + 1 == st.failed);  /* only while away */
    CU_ASSERT(st.ok_after >= 3);            /* back without a restart */
    CU_ASSERT(st.ticks_while_away >= 1);
    CU_ASSERT(st.steady.closed == 0);
    CU_ASSERT(t_log_has(mark, "token unavailable", NULL));
    p11n_ctx_free(st.srv);
    p11n_ctx_free(st.cli);
    /* No derived object was left on the token. */
    CU_ASSERT(t_token_objects(tok) == objects);
    p11n_key_free(tkey);
    p11n_key_free(soft);
}

static void test_removed_kk_initiator(void)
{
    run_stream(&(struct stream_case){ "KK", 1 });
}

static void test_removed_kk_responder(void)
{
    run_stream(&(struct stream_case){ "KK", 0 });
}

static void test_removed_xk_initiator(void)
{
    run_stream(&(struct stream_case){ "XK", 1 });
}

static void test_removed_xk_responder(void)
{
    run_stream(&(struct stream_case){ "XK", 0 });
}

int main(void)
{
    t_token_setup(&T, "p11n-net");
    static const p11n_test tests[] = {
        { "token keys on both sides, peers from the token", test_token_keys_kk },
        { "token key: act 1 starts while the connection is set up", test_start_early },
        { "slow token: messages flow during a handshake; queue limit", test_slow_token },
        { "closed during a token step: the loop waits, no spin", test_close_during_token_step },
        { "reconnect during a token step: no wait for the old step",
            test_reconnect_during_token_step },
        { "token pulled out during KK handshakes, token initiates", test_removed_kk_initiator },
        { "token pulled out during KK handshakes, token responds", test_removed_kk_responder },
        { "token pulled out during XK handshakes, token initiates", test_removed_xk_initiator },
        { "token pulled out during XK handshakes, token responds", test_removed_xk_responder },
        { NULL, NULL },
    };
    int rc = p11n_test_main("net-token", tests);
    t_token_teardown(&T);
    t_log_free();
    return rc;
}
