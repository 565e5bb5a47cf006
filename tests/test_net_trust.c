/*
 * Trust decided by the peer store at the moment it matters, over real
 * loopback connections: a key replaced or removed is refused from the
 * next handshake on (KK and XK listeners, listed identifiers or the whole
 * store) and the connections authenticated with it are closed with
 * REVOKED, while another peer's connection keeps exchanging messages; the
 * reload from a SoftHSM2 token does the same for a peer whose ceremony
 * object was removed or replaced. Also: what a connection reports about
 * its peer, a key's warning logged once, proxy credentials gone from the
 * write queue, and a token failure's own text in `closed`.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "crypto.h"
#include "key.h"
#include "netutil.h"
#include "p11noise.h"
#include "proxyutil.h"
#include "softhsm.h"
#include "testutil.h"

/* Valgrind's client requests where its header is installed (they do
 * nothing outside valgrind), else nothing. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

static struct t_token T;

/* ---- keys ---- */

enum { K_SRV, K_A, K_A2, K_B, K_B2, K_SRV2, NKEYS };
static p11n_key *keys[NKEYS];
static uint8_t pubs[NKEYS][P11N_PUBKEY_LEN];
static char hexes[NKEYS][2 * P11N_PUBKEY_LEN + 1];
static uint8_t privs[NKEYS][32];

static void keys_setup(void)
{
    uint64_t seed = 0x7472757374;
    for (int i = 0; i < NKEYS; i++) {
        t_fill(privs[i], 32, &seed);
        if (p11n_key_from_private("secp256k1", privs[i], 32, &keys[i]) != P11N_OK)
            abort();
        size_t len = 0;
        if (p11n_key_public(keys[i], pubs[i], sizeof(pubs[i]), &len) != P11N_OK || len != 33)
            abort();
        p11n_hex_encode(pubs[i], 33, hexes[i]);
    }
}

/* ---- contexts, pumped together ---- */

static p11n_ctx *ctxs[2];

/* Worker threads of the next contexts made (0: the default). */
static unsigned ctx_workers;

static p11n_ctx *ctx_make(int slot, const char *name)
{
    p11n_ctx_options o = t_ctx_options(name);
    o.workers = ctx_workers;
    o.act_timeout_ms = 5000;
    o.connect_timeout_ms = 5000;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctxs[slot]) == P11N_OK);
    return ctxs[slot];
}

static void ctx_drop(void)
{
    for (int i = 0; i < 2; i++) {
        p11n_ctx_free(ctxs[i]);
        ctxs[i] = NULL;
    }
}

#define PUMP_UNTIL(cond) T_PUMP_UNTIL(ctxs, 2, cond)

/* The server's and the client's contexts (ctxs[0] and ctxs[1]): the
 * server's store holds `id` with the key `peer`, the client's "server"
 * with K_SRV's. */
static void two_ctxs(int peer, const char *id)
{
    ctx_make(0, "srv");
    ctx_make(1, "cli");
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[0], pubs[peer], id, 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[1], pubs[K_SRV], "server", 0) == P11N_OK);
}

/* ---- one connection's view (tests/netutil.h) ---- */

typedef t_side side;

/* The server: each established connection gets its own echoing side; a
 * handshake that fails reports into `failed`. */
typedef struct server {
    side failed;                  /* first: the closed callback sees a side either way */
    side conns[16];
    int n;
} server;

static void srv_up(p11n_conn *c, const char *peer, void *arg)
{
    server *sv = arg;
    if (sv->n >= 16)
        abort();
    side *s = &sv->conns[sv->n++];
    memset(s, 0, sizeof(*s));
    s->echo = 1;
    p11n_conn_set_arg(c, s);
    t_side_up(c, peer, s);
}

static p11n_listener *listen_with(p11n_ctx *ctx, p11n_key *key, const char *pattern,
    const char *const *ids, size_t nids, server *sv)
{
    memset(sv, 0, sizeof(*sv));
    p11n_callbacks cb = t_side_cb;
    cb.established = srv_up;
    return t_listen(ctx, key, pattern, ids, nids, &cb, sv);
}

static p11n_conn *dial(p11n_ctx *ctx, uint16_t port, const char *peer, const char *pattern,
    p11n_key *key, side *s)
{
    return t_dial(ctx, "127.0.0.1", port, peer, pattern, key, s);
}

/* Send n messages on an established connection and wait for the echoes. */
static void roundtrip(side *s, int n)
{
    CU_ASSERT_FATAL(s->conn != NULL);
    uint64_t want = s->msgs + (uint64_t)n;
    for (int i = 0; i < n; i++)
        CU_ASSERT_FATAL(p11n_send(s->conn, (const uint8_t *)"still here", 10) == P11N_OK);
    PUMP_UNTIL(s->msgs >= want || s->closed > 0);
    CU_ASSERT(s->msgs == want && s->closed == 0);
}

/* The side of the server's connection whose peer is `peer`. */
static side *srv_side(server *sv, const char *peer)
{
    for (int i = sv->n - 1; i >= 0; i--)
        if (strcmp(sv->conns[i].peer, peer) == 0)
            return &sv->conns[i];
    CU_FAIL("no such server connection");
    return &sv->failed;
}

/* ---- the server's store changes: replace or remove ---- */

typedef struct revoke_case {
    const char *pattern;
    int listed;          /* the listener names its peers (else: the whole store) */
    int remove;          /* p11n_peer_remove (else: P11N_PEER_REPLACE) */
} revoke_case;

/* A dials, then B; both exchange messages. Peer "a" changes in the
 * server's store: A's connection is closed at once with REVOKED, B's goes
 * on; A's old key is refused at the next handshake and its new key is
 * admitted. */
static void run_revoke_case(const revoke_case *rc)
{
    two_ctxs(K_A, "a");
    p11n_ctx *srv = ctxs[0], *cli = ctxs[1];
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, pubs[K_B], "b", 0) == P11N_OK);
    static const char *const ids[] = { "a", "b" };
    static server sv;
    p11n_listener *l = listen_with(srv, keys[K_SRV], rc->pattern, ids, rc->listed ? 2 : 0, &sv);
    uint16_t port = p11n_listener_port(l);

    side a, b;
    dial(cli, port, "server", rc->pattern, keys[K_A], &a);
    dial(cli, port, "server", rc->pattern, keys[K_B], &b);
    PUMP_UNTIL(a.established && b.established && sv.n == 2);
    roundtrip(&a, 3);
    roundtrip(&b, 3);
    side *sa = srv_side(&sv, "a"), *sb = srv_side(&sv, "b");

    size_t mark = t_log_mark();
    int changed = rc->remove ? p11n_peer_remove(srv, "a")
                             : p11n_ceremony_input(srv, pubs[K_A2], "a", P11N_PEER_REPLACE);
    CU_ASSERT(changed == P11N_OK);
    /* At once, inside the call: no loop turn needed. */
    CU_ASSERT(sa->closed == 1 && sa->reason == P11N_ERR_REVOKED && sa->final == 1);
    CU_ASSERT(strstr(sa->text, "peer key revoked") != NULL);
    CU_ASSERT(t_log_has(mark, "[srv] 2 conn #", "peer key revoked"));
    CU_ASSERT(sb->closed == 0);
    PUMP_UNTIL(a.closed == 1);
    CU_ASSERT(a.reason == P11N_ERR_CLOSED || a.reason == P11N_ERR_RESET);
    roundtrip(&b, 5);
    CU_ASSERT(sb->closed == 0 && b.closed == 0);

    /* The old key, at the next handshake. */
    side again;
    mark = t_log_mark();
    int before = sv.n;
    dial(cli, port, "server", rc->pattern, keys[K_A], &again);
    PUMP_UNTIL(again.closed == 1 && sv.failed.closed == 1);
    /* (An XK initiator is done after writing act three, before the
     * responder refuses it.) */
    CU_ASSERT(sv.n == before);
    CU_ASSERT(again.established == 0 || strcmp(rc->pattern, "XK") == 0);
    CU_ASSERT(sv.failed.reason == P11N_ERR_UNKNOWN_PEER);

    /* The new key (after a removal, the ceremony adds it back). */
    if (rc->remove) {
        CU_ASSERT(p11n_ceremony_input(srv, pubs[K_A2], "a", 0) == P11N_OK);
    }
    side renewed;
    dial(cli, port, "server", rc->pattern, keys[K_A2], &renewed);
    PUMP_UNTIL(renewed.established == 1 && sv.n == before + 1);
    CU_ASSERT(strcmp(sv.conns[before].peer, "a") == 0);
    roundtrip(&renewed, 2);
    roundtrip(&b, 2);
    ctx_drop();
}

static void test_replace_and_remove(void)
{
    static const revoke_case cases[] = {
        { "KK", 1, 0 }, { "XK", 0, 0 }, { "KK", 0, 1 }, { "XK", 1, 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fprintf(stderr, "  %s listener, %s, %s\n", cases[i].pattern,
            cases[i].listed ? "listed peers" : "whole store",
            cases[i].remove ? "p11n_peer_remove" : "P11N_PEER_REPLACE");
        run_revoke_case(&cases[i]);
    }
}

/* ---- the client's store changes ---- */

/* What each end reports about its peer; then the client removes the
 * server from its store: the connection it made by identifier is revoked,
 * the one it made by key is not (the caller trusted that key itself). */
static void test_peer_reports_and_client_side(void)
{
    two_ctxs(K_A, "a");
    p11n_ctx *srv = ctxs[0], *cli = ctxs[1];
    static server sv, sv2;
    uint16_t port = p11n_listener_port(listen_with(srv, keys[K_SRV], "XK", NULL, 0, &sv));
    uint16_t port2 = p11n_listener_port(listen_with(srv, keys[K_SRV2], "XK", NULL, 0, &sv2));

    side by_id, by_hex, stranger;
    p11n_conn *c1 = dial(cli, port, "server", "XK", keys[K_A], &by_id);
    uint8_t got[P11N_PUBKEY_LEN];
    CU_ASSERT(p11n_conn_peer_key(c1, got) == P11N_ERR_STATE);
    CU_ASSERT(p11n_conn_peer_id(c1) == NULL && p11n_conn_peer(c1) == NULL);
    p11n_conn *c2 = dial(cli, port, hexes[K_SRV], "XK", keys[K_A], &by_hex);
    p11n_conn *c3 = dial(cli, port2, hexes[K_SRV2], "XK", keys[K_A], &stranger);
    /* XK: the initiator is done first; wait for the responders too. */
    PUMP_UNTIL(by_id.established && by_hex.established && stranger.established && sv.n == 2
        && sv2.n == 1);

    /* A key in the store is reported by its identifier, however named. */
    CU_ASSERT(strcmp(by_id.peer, "server") == 0 && strcmp(by_hex.peer, "server") == 0);
    CU_ASSERT(strcmp(p11n_conn_peer_id(c2), "server") == 0);
    CU_ASSERT(p11n_conn_peer_key(c1, got) == P11N_OK && memcmp(got, pubs[K_SRV], 33) == 0);
    /* A key not in the store: no identifier, the key in hex. */
    CU_ASSERT(strcmp(stranger.peer, hexes[K_SRV2]) == 0);
    CU_ASSERT(p11n_conn_peer_id(c3) == NULL);
    CU_ASSERT(strcmp(p11n_conn_peer(c3), hexes[K_SRV2]) == 0);
    CU_ASSERT(p11n_conn_peer_key(c3, got) == P11N_OK && memcmp(got, pubs[K_SRV2], 33) == 0);
    /* The responder's view of the initiator. */
    CU_ASSERT(sv.n == 2 && sv2.n == 1);
    p11n_conn *s1 = sv.conns[0].conn;
    CU_ASSERT(strcmp(p11n_conn_peer_id(s1), "a") == 0);
    CU_ASSERT(p11n_conn_peer_key(s1, got) == P11N_OK && memcmp(got, pubs[K_A], 33) == 0);
    CU_ASSERT(p11n_conn_peer_key(NULL, got) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_conn_peer_key(c1, NULL) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_conn_peer_id(NULL) == NULL);

    CU_ASSERT(p11n_peer_remove(cli, "server") == P11N_OK);
    CU_ASSERT(by_id.closed == 1 && by_id.reason == P11N_ERR_REVOKED);
    CU_ASSERT(by_hex.closed == 0 && stranger.closed == 0);
    roundtrip(&by_hex, 3);
    roundtrip(&stranger, 3);
    CU_ASSERT(p11n_peer_remove(cli, "server") == P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT(p11n_peer_remove(cli, NULL) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_peer_remove(NULL, "server") == P11N_ERR_INVALID_ARG);
    ctx_drop();
}

/* A reconnecting connection made by identifier looks the identifier up
 * at each attempt: revoked, it does not come back with the old key. */
static void test_reconnect_after_removal(void)
{
    two_ctxs(K_A, "a");
    p11n_ctx *srv = ctxs[0], *cli = ctxs[1];
    static server sv;
    uint16_t port = p11n_listener_port(listen_with(srv, keys[K_SRV], "KK", NULL, 0, &sv));
    side s;
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = keys[K_A];
    co.reconnect = 1;
    co.backoff_min_ms = 20;
    co.backoff_max_ms = 40;
    p11n_conn *c = t_dial_with(cli, "127.0.0.1", port, "server", &co, &s);
    PUMP_UNTIL(s.established == 1 && sv.n == 1);
    CU_ASSERT(p11n_peer_remove(cli, "server") == P11N_OK);
    CU_ASSERT(s.closed == 1 && s.reason == P11N_ERR_REVOKED && s.final == 0);
    PUMP_UNTIL(s.closed >= 2);
    CU_ASSERT(s.reason == P11N_ERR_UNKNOWN_PEER && s.established == 1);
    CU_ASSERT(strstr(s.text, "no longer in the peer store") != NULL);
    CU_ASSERT(sv.n == 1);
    p11n_close(c);
    PUMP_UNTIL(s.final == 1);
    ctx_drop();
}

/* A handshake in progress towards a key that is replaced fails at once:
 * the client has sent act one to a socket that never answers. */
static void test_handshake_in_progress(void)
{
    p11n_ctx *cli = ctx_make(1, "cli");
    CU_ASSERT_FATAL(p11n_ceremony_input(cli, pubs[K_SRV], "server", 0) == P11N_OK);
    uint16_t port = 0;
    int lfd = t_listen_loopback(&port);
    CU_ASSERT_FATAL(lfd >= 0);
    side s;
    size_t mark = t_log_mark();
    dial(cli, port, "server", "KK", keys[K_A], &s);
    PUMP_UNTIL(t_log_has(mark, "[cli] 3 conn #", "connected to 127.0.0.1"));
    t_pump(ctxs, 2, 20);
    CU_ASSERT(s.closed == 0);
    CU_ASSERT(p11n_ceremony_input(cli, pubs[K_SRV2], "server", P11N_PEER_REPLACE) == P11N_OK);
    CU_ASSERT(s.closed == 1 && s.reason == P11N_ERR_REVOKED);
    CU_ASSERT(strstr(s.text, "peer key revoked") != NULL);
    close(lfd);
    ctx_drop();
}

/* ---- a key's warning ---- */

static void test_key_warning_once(void)
{
    two_ctxs(K_B, "b");
    p11n_ctx *srv = ctxs[0], *cli = ctxs[1];
    keys[K_SRV]->warning = "a development key (test)";
    keys[K_SRV]->warned = 0;
    keys[K_B]->warning = "another weak key (test)";
    keys[K_B]->warned = 0;
    size_t mark = t_log_mark();
    static server sv, sv2;
    uint16_t port = p11n_listener_port(listen_with(srv, keys[K_SRV], "XK", NULL, 0, &sv));
    (void)listen_with(srv, keys[K_SRV], "KK", NULL, 0, &sv2);
    side x, y;
    dial(cli, port, "server", "XK", keys[K_B], &x);
    dial(cli, port, "server", "XK", keys[K_B], &y);
    PUMP_UNTIL(x.established && y.established && sv.n == 2);
    CU_ASSERT(t_log_count(mark, "a development key (test)") == 1);
    CU_ASSERT(t_log_has(mark, "[srv] 2 static key", hexes[K_SRV]));
    CU_ASSERT(t_log_count(mark, "another weak key (test)") == 1);
    CU_ASSERT(t_log_has(mark, "[cli] 2 static key", "another weak key (test)"));
    CU_ASSERT(p11n_key_warning(keys[K_SRV]) != NULL);
    keys[K_SRV]->warning = keys[K_B]->warning = NULL;
    ctx_drop();
}

/* ---- proxy credentials ---- */

static const char *long_pass(void)
{
    static char pass[121];
    for (size_t i = 0; i < sizeof(pass) - 1; i++)
        pass[i] = (char)('a' + (i * 7) % 26);
    return pass;
}

/* The SOCKS5 username/password request is sent from the dialer's SOCKS5
 * state, wiped as it goes: no byte of it is in the connection's write
 * queue when the handshake completes. */
static int wbuf_has_secret;
static void proxy_up(p11n_conn *c, const char *peer, void *arg)
{
    const char *tail = long_pass() + 60;
    wbuf_has_secret = 0;
    if (c->wbuf != NULL) {
        /* The whole capacity, not only the queued bytes: a stale copy
         * would sit in bytes the queue never wrote, which valgrind
         * counts as uninitialised; the scan reads a copy marked defined
         * so that it may look there. */
        uint8_t *copy = malloc(c->wcap);
        CU_ASSERT_FATAL(copy != NULL);
        memcpy(copy, c->wbuf, c->wcap);
        VALGRIND_MAKE_MEM_DEFINED(copy, c->wcap);
        wbuf_has_secret = memmem(copy, c->wcap, tail, strlen(tail)) != NULL;
        free(copy);
    }
    t_side_up(c, peer, arg);
}

static void test_proxy_credentials_wiped(void)
{
    if (!t_proxy_available()) {
        fprintf(stderr, "  microsocks not installed: skipped\n");
        return;
    }
    t_proxy px;
    CU_ASSERT_FATAL(t_proxy_start(&px, "machine1", long_pass()) == 0);
    two_ctxs(K_A, "a");
    p11n_ctx *srv = ctxs[0], *cli = ctxs[1];
    static server sv;
    uint16_t port = p11n_listener_port(listen_with(srv, keys[K_SRV], "KK", NULL, 0, &sv));
    char spec[300];
    snprintf(spec, sizeof(spec), "machine1:%s@127.0.0.1:%u", long_pass(), px.port);
    side s;
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = keys[K_A];
    co.ch.cb.established = proxy_up;
    co.socks5 = spec;
    wbuf_has_secret = -1;
    t_dial_with(cli, "127.0.0.1", port, "server", &co, &s);
    PUMP_UNTIL(s.established == 1);
    CU_ASSERT(wbuf_has_secret == 0);
    roundtrip(&s, 2);
    CU_ASSERT(strstr(t_log_text(), long_pass() + 60) == NULL);
    ctx_drop();
    t_proxy_stop(&px);
}

/* ---- with a token ---- */

/* The ceremony on the token; the context reloads it: a peer whose object
 * was removed, then one whose object was replaced, is revoked; a reload
 * that fails leaves the store as it was. */
static void test_reload_from_token(void)
{
    p11n_ctx *srv = ctx_make(0, "srv");
    p11n_ctx *cli = ctx_make(1, "cli");
    p11n_peer_entry e[2];
    memset(e, 0, sizeof(e));
    strcpy(e[0].id, "a");
    memcpy(e[0].pub, pubs[K_A], 33);
    strcpy(e[1].id, "b");
    memcpy(e[1].pub, pubs[K_B], 33);
    size_t bad = 0;
    CU_ASSERT_FATAL(p11n_ceremony_write(T.uri, e, 2, 0, &bad) == P11N_OK);
    CU_ASSERT_FATAL(p11n_peers_load_token(srv, T.uri) == 2);
    CU_ASSERT_FATAL(p11n_ceremony_input(cli, pubs[K_SRV], "server", 0) == P11N_OK);
    static server sv;
    uint16_t port = p11n_listener_port(listen_with(srv, keys[K_SRV], "XK", NULL, 0, &sv));
    side a, b;
    dial(cli, port, "server", "XK", keys[K_A], &a);
    dial(cli, port, "server", "XK", keys[K_B], &b);
    PUMP_UNTIL(a.established && b.established && sv.n == 2);
    side *sa = srv_side(&sv, "a"), *sb = srv_side(&sv, "b");

    /* "a" leaves the token; the store follows at the reload. */
    CU_ASSERT_FATAL(p11n_ceremony_remove(T.uri, "a") == P11N_OK);
    CU_ASSERT(sa->closed == 0);
    size_t mark = t_log_mark();
    CU_ASSERT(p11n_peers_load_token(srv, T.uri) == 1);
    CU_ASSERT(sa->closed == 1 && sa->reason == P11N_ERR_REVOKED);
    CU_ASSERT(t_log_has(mark, "[srv] 2 conn #", "peer key revoked"));
    CU_ASSERT(sb->closed == 0);
    roundtrip(&b, 4);
    side again;
    dial(cli, port, "server", "XK", keys[K_A], &again);
    PUMP_UNTIL(again.closed == 1 && sv.failed.closed == 1);
    CU_ASSERT(sv.n == 2 && sv.failed.reason == P11N_ERR_UNKNOWN_PEER);

    /* A reload that fails changes nothing. */
    char nosuch[2300];
    snprintf(nosuch, sizeof(nosuch), "pkcs11:token=no-such-token?module-path=%s&pin-value="
        T_PIN, T.module);
    CU_ASSERT(p11n_peers_load_token(srv, nosuch) < 0);
    CU_ASSERT(ctxs[0]->npeers == 1 && strcmp(ctxs[0]->peers[0].id, "b") == 0);
    CU_ASSERT(sb->closed == 0);

    /* "b" gets a new key on the token: revoked at the reload. */
    memcpy(e[1].pub, pubs[K_B2], 33);
    CU_ASSERT_FATAL(p11n_ceremony_write(T.uri, &e[1], 1, 1, &bad) == P11N_OK);
    CU_ASSERT(p11n_peers_load_token(srv, T.uri) == 1);
    CU_ASSERT(sb->closed == 1 && sb->reason == P11N_ERR_REVOKED);
    side renewed;
    dial(cli, port, "server", "XK", keys[K_B2], &renewed);
    PUMP_UNTIL(renewed.established == 1);
    roundtrip(&renewed, 2);
    CU_ASSERT(p11n_ceremony_remove(T.uri, "b") == P11N_OK);
    ctx_drop();
}

/* An object anyone can plant without the PIN never becomes a peer: the
 * reload skips it with a warning, and its key is refused by a KK listener
 * on the whole store and by an XK listener, while the real peer gets in. */
static void test_planted_object_ignored(void)
{
    p11n_ctx *srv = ctx_make(0, "srv");
    p11n_ctx *cli = ctx_make(1, "cli");
    p11n_peer_entry e;
    memset(&e, 0, sizeof(e));
    strcpy(e.id, "a");
    memcpy(e.pub, pubs[K_A], 33);
    size_t bad = 0;
    CU_ASSERT_FATAL(p11n_ceremony_write(T.uri, &e, 1, 0, &bad) == P11N_OK);
    t_token_plant_public_peer(T.uri, "mallory", pubs[K_B]);
    size_t mark = t_log_mark();
    CU_ASSERT(p11n_peers_load_token(srv, T.uri) == 1);
    CU_ASSERT(t_log_has(mark, "mallory", "ignored"));
    CU_ASSERT(p11n_ceremony_input(cli, pubs[K_SRV], "server", 0) == P11N_OK);
    static const char *const patterns[] = { "KK", "XK" };
    for (size_t i = 0; i < 2; i++) {
        static server sv;
        p11n_listener *l = listen_with(srv, keys[K_SRV], patterns[i], NULL, 0, &sv);
        uint16_t port = p11n_listener_port(l);
        side m, a;
        dial(cli, port, "server", patterns[i], keys[K_B], &m);
        PUMP_UNTIL(m.closed == 1 && sv.failed.closed == 1);
        /* An XK initiator counts itself established once it has sent act
         * three, before the responder has judged its key: what matters is
         * that the server never admitted it. */
        CU_ASSERT(sv.n == 0 && sv.failed.reason == P11N_ERR_UNKNOWN_PEER);
        if (i == 0)
            CU_ASSERT(m.established == 0);
        dial(cli, port, "server", patterns[i], keys[K_A], &a);
        PUMP_UNTIL(a.established == 1 && sv.n == 1);
        CU_ASSERT(sv.n == 1 && strcmp(sv.conns[0].peer, "a") == 0);
        p11n_close(a.conn);
        PUMP_UNTIL(a.closed >= 1 && a.final == 1);
        p11n_listener_close(l);
    }
    CU_ASSERT(p11n_ceremony_remove(T.uri, "mallory") == P11N_OK);
    CU_ASSERT(p11n_ceremony_remove(T.uri, "a") == P11N_OK);
    ctx_drop();
}

/* The server's key (K_SRV) on the token, behind the fault module with
 * the rules `fault` (P11N_FAULT). */
static p11n_key *token_server_key(const char *fault)
{
    static int imported;
    if (!imported) {
        struct p11n_token *tok = t_token_open(T.uri);
        t_token_import_key(tok, "srv", privs[K_SRV], 1, 1);
        p11n_token_close(tok);
        imported = 1;
    }
    char uri[2300];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=srv?module-path=%s&pin-value=" T_PIN,
        T.label, P11N_FAULT_MODULE);
    setenv("P11N_FAULT", fault, 1);
    p11n_key *k = NULL;
    int rc = p11n_key_load(uri, &k);
    unsetenv("P11N_FAULT");
    if (rc != P11N_OK)
        fprintf(stderr, "load: %s: %s\n", p11n_strerror(rc), p11n_token_last_error());
    CU_ASSERT_FATAL(rc == P11N_OK);
    return k;
}

/* An incoming handshake whose initiator is removed from the store while
 * the server's token works on it fails when it completes: the key is
 * known to be the removed one only then, and it is never admitted. */
static void test_revoked_while_handshaking(void)
{
    p11n_key *tkey = token_server_key("C_DeriveKey:delay=300");
    p11n_ctx *srv = ctx_make(0, "srv");
    p11n_ctx *cli = ctx_make(1, "cli");
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, pubs[K_A], "a", 0) == P11N_OK);
    static server sv;
    uint16_t port = p11n_listener_port(listen_with(srv, tkey, "KK", NULL, 0, &sv));
    side s;
    dial(cli, port, hexes[K_SRV], "KK", keys[K_A], &s);
    /* Act one is with a worker (the token is slow). */
    PUMP_UNTIL(srv->cl->conns != NULL && srv->cl->conns->job != NULL);
    CU_ASSERT(p11n_peer_remove(srv, "a") == P11N_OK);
    PUMP_UNTIL(sv.failed.closed == 1 && s.closed == 1);
    CU_ASSERT(sv.n == 0 && s.established == 0);
    CU_ASSERT(sv.failed.reason == P11N_ERR_REVOKED);
    CU_ASSERT(strstr(sv.failed.text, "peer key revoked during the handshake") != NULL);
    ctx_drop();
    p11n_key_free(tkey);
}

/* A token step that fails on a worker: the failing call and its CKR_
 * name reach the log line and the `closed` text. The server's key is
 * behind the fault module, every derivation after the load's self-check
 * failing. */
static void test_token_error_text(void)
{
    p11n_key *tkey = token_server_key("C_DeriveKey:fail>1=CKR_FUNCTION_FAILED");

    p11n_ctx *srv = ctx_make(0, "srv");
    p11n_ctx *cli = ctx_make(1, "cli");
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, pubs[K_A], "a", 0) == P11N_OK);
    static server sv;
    uint16_t port = p11n_listener_port(listen_with(srv, tkey, "XK", NULL, 0, &sv));
    side s;
    size_t mark = t_log_mark();
    dial(cli, port, hexes[K_SRV], "XK", keys[K_A], &s);
    PUMP_UNTIL(sv.failed.closed == 1 && s.closed == 1);
    fprintf(stderr, "  closed: %s\n", sv.failed.text);
    CU_ASSERT(strstr(sv.failed.text, "C_DeriveKey") != NULL);
    CU_ASSERT(strstr(sv.failed.text, "CKR_FUNCTION_FAILED") != NULL);
    CU_ASSERT(t_log_has(mark, "[srv] 2 conn #", "CKR_FUNCTION_FAILED"));
    CU_ASSERT(strstr(t_log_text(), "pin-value") == NULL);
    ctx_drop();
    p11n_key_free(tkey);
}

/* The header lets a `message` callback call anything and read the message
 * for the whole call: revoking its own peer there ends the connection,
 * and the message must stay readable (under ASan a freed one aborts). */
static p11n_ctx *revoke_store;
static unsigned long revoke_sum;

static void revoke_then_read(side *s, p11n_conn *c, const uint8_t *m, size_t len)
{
    (void)c;
    s->on_message = NULL;
    CU_ASSERT(p11n_peer_remove(revoke_store, "a") == P11N_OK);
    for (size_t i = 0; i < len; i++)
        revoke_sum += m[i];
}

static void test_revoke_inside_message(void)
{
    two_ctxs(K_A, "a");
    p11n_ctx *srv = ctxs[0], *cli = ctxs[1];
    static server sv;
    static const char *const ids[] = { "a" };
    uint16_t port = p11n_listener_port(listen_with(srv, keys[K_SRV], "KK", ids, 1, &sv));
    side a;
    dial(cli, port, "server", "KK", keys[K_A], &a);
    PUMP_UNTIL(a.established == 1 && sv.n == 1);
    side *sa = srv_side(&sv, "a");
    revoke_store = srv;
    revoke_sum = 0;
    sa->on_message = revoke_then_read;
    static const char text[] = "revoke me while you read me";
    CU_ASSERT_FATAL(p11n_send(a.conn, (const uint8_t *)text, sizeof(text) - 1) == P11N_OK);
    PUMP_UNTIL(sa->closed == 1);
    CU_ASSERT(sa->reason == P11N_ERR_REVOKED);
    unsigned long want = 0;
    for (size_t i = 0; i < sizeof(text) - 1; i++)
        want += (unsigned char)text[i];
    CU_ASSERT(revoke_sum == want);
    ctx_drop();
}

/* A worker thread's last token error belongs to the job that made it:
 * with one worker, a token failure followed by an act that fails on its
 * tag must not report the earlier CKR_ text. */
static void test_no_stale_token_error(void)
{
    p11n_key *tkey = token_server_key("C_DeriveKey:fail@2=CKR_FUNCTION_FAILED");
    ctx_workers = 1;
    p11n_ctx *srv = ctx_make(0, "srv");
    p11n_ctx *cli = ctx_make(1, "cli");
    ctx_workers = 0;
    CU_ASSERT_FATAL(p11n_ceremony_input(srv, pubs[K_A], "a", 0) == P11N_OK);
    static server sv;
    uint16_t port = p11n_listener_port(listen_with(srv, tkey, "XK", NULL, 0, &sv));
    side s;
    dial(cli, port, hexes[K_SRV], "XK", keys[K_A], &s);
    PUMP_UNTIL(sv.failed.closed == 1 && s.closed == 1);
    CU_ASSERT(strstr(sv.failed.text, "CKR_FUNCTION_FAILED") != NULL);
    /* Act 1 with a valid ephemeral point and a forged tag. */
    int fd = t_connect_loopback(port);
    uint8_t act[50] = { 0 };
    memcpy(act + 1, pubs[K_B], 33);
    memset(act + 34, 0x5a, 16);
    CU_ASSERT_FATAL(write(fd, act, sizeof(act)) == (ssize_t)sizeof(act));
    PUMP_UNTIL(sv.failed.closed == 2);
    fprintf(stderr, "  second closed: %s\n", sv.failed.text);
    CU_ASSERT(strstr(sv.failed.text, "CKR_") == NULL);
    close(fd);
    ctx_drop();
    p11n_key_free(tkey);
}

int main(void)
{
    keys_setup();
    t_token_setup(&T, "p11n-trust");
    static const p11n_test tests[] = {
        { "replace or remove a peer: revoked at once, refused next", test_replace_and_remove },
        { "peer identifier and key; the client's store changes", test_peer_reports_and_client_side },
        { "a handshake towards a replaced key fails at once", test_handshake_in_progress },
        { "a reconnect by identifier after its removal", test_reconnect_after_removal },
        { "a key's warning is logged once", test_key_warning_once },
        { "SOCKS5 credentials never reach the write queue", test_proxy_credentials_wiped },
        { "reload from the token revokes removed and replaced peers", test_reload_from_token },
        { "an object planted without the PIN is ignored and its key refused",
          test_planted_object_ignored },
        { "a peer removed during an incoming handshake is refused at its end",
          test_revoked_while_handshaking },
        { "a token failure's call and CKR_ name reach closed", test_token_error_text },
        { "revoking its own peer inside the message callback", test_revoke_inside_message },
        { "a job's failure never carries another job's token error", test_no_stale_token_error },
        { NULL, NULL },
    };
    int rc = p11n_test_main("net-trust", tests);
    for (int i = 0; i < NKEYS; i++)
        p11n_key_free(keys[i]);
    t_token_teardown(&T);
    t_log_free();
    return rc;
}
