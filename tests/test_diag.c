/*
 * What an operator reads about a connection, checked over real loopback
 * connections: the handshake hash (the same at both ends, one per
 * session), the key rotations each way and when the last one was, the
 * fields of the connection events' log records (peer, address, reason),
 * the KK responder's account of an act 1 it cannot verify, and the peer
 * store's answer for one identifier (p11n_peer_key), what is wrong with a
 * malformed line of a peers file (p11n_peers_parse_why), and a URI as
 * messages show it (p11n_uri_display).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/uri.h>

#include "netutil.h"
#include "p11noise.h"
#include "testutil.h"

enum { K_SERVER, K_CLIENT, K_STRANGER, NKEYS };
static p11n_key *keys[NKEYS];
static uint8_t pubs[NKEYS][P11N_PUBKEY_LEN];

/* The server's connection events, as its log records gave them. */
#define MAX_EVENTS 16
struct event {
    char event[16], peer[80], addr[80], reason[240], text[512];
    unsigned long conn;
};
static struct event events[MAX_EVENTS];
static int nevents;

static void on_record(const p11n_log_record *r, void *arg)
{
    (void)arg;
    CU_ASSERT(r->size >= sizeof(*r));
    if (r->event == NULL || nevents == MAX_EVENTS)
        return;
    struct event *e = &events[nevents++];
    snprintf(e->event, sizeof(e->event), "%s", r->event);
    snprintf(e->peer, sizeof(e->peer), "%s", r->peer ? r->peer : "(none)");
    snprintf(e->addr, sizeof(e->addr), "%s", r->addr ? r->addr : "(none)");
    snprintf(e->reason, sizeof(e->reason), "%s", r->reason ? r->reason : "(none)");
    snprintf(e->text, sizeof(e->text), "%s", r->text);
    e->conn = r->conn_id;
}

/* The first event of that name, or an empty one (event "") when none
 * came: never NULL, so the checks read fields without a NULL path. */
static const struct event *find_event(const char *name)
{
    static const struct event none;
    for (int i = 0; i < nevents; i++)
        if (strcmp(events[i].event, name) == 0)
            return &events[i];
    return &none;
}

/* ctxs[0] the server (records), ctxs[1] a client knowing the server. */
static p11n_ctx *ctxs[2];

static void setup(void)
{
    t_soft_keys(0x64696167, keys, pubs, NKEYS);
    p11n_ctx_options so = P11N_CTX_OPTIONS_INIT;
    so.log_record = on_record;
    CU_ASSERT_FATAL(p11n_ctx_new(&so, &ctxs[0]) == P11N_OK);
    p11n_ctx_options co = P11N_CTX_OPTIONS_INIT;
    co.log = t_log_cb;
    co.log_arg = (void *)"cli";
    CU_ASSERT_FATAL(p11n_ctx_new(&co, &ctxs[1]) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[0], pubs[K_CLIENT], "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[1], pubs[K_SERVER], "server", 0) == P11N_OK);
    nevents = 0;
}

static void teardown(void)
{
    for (int i = 0; i < 2; i++) {
        p11n_ctx_free(ctxs[i]);
        ctxs[i] = NULL;
    }
    for (int i = 0; i < NKEYS; i++) {
        p11n_key_free(keys[i]);
        keys[i] = NULL;
    }
}

static int established, echoed, closed;

static void on_established(p11n_conn *c, const char *peer, void *arg)
{
    (void)c;
    (void)peer;
    (void)arg;
    established++;
}

static void on_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    (void)arg;
    CU_ASSERT(p11n_send(c, msg, len) == P11N_OK);  /* the server echoes */
}

static void on_echo(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    (void)c;
    (void)msg;
    (void)len;
    (void)arg;
    echoed++;
}

static void on_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)reason;
    (void)text;
    (void)arg;
    closed += final;
}

/* Pump until *counter reaches want (a hang guard, not a timing check). */
static int pump_to(const int *counter, int want)
{
    time_t guard = time(NULL) + 60;
    while (*counter < want && time(NULL) < guard)
        t_pump(ctxs, 2, 50);
    return *counter >= want;
}

static p11n_listener *serve(uint16_t *port)
{
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = keys[K_SERVER];
    lo.ch.cb.established = on_established;
    lo.ch.cb.message = on_message;
    lo.ch.cb.closed = on_closed;
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(ctxs[0], "127.0.0.1", 0, &lo, &l) == P11N_OK);
    *port = p11n_listener_port(l);
    return l;
}

static p11n_conn *dial(uint16_t port, int key, const char *prologue)
{
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = keys[key];
    co.ch.cb.established = on_established;
    co.ch.cb.message = on_echo;
    co.ch.cb.closed = on_closed;
    if (prologue != NULL) {
        co.ch.prologue = (const uint8_t *)prologue;
        co.ch.prologue_len = strlen(prologue);
    }
    p11n_conn *c = NULL;
    CU_ASSERT_FATAL(p11n_connect(ctxs[1], "127.0.0.1", port, "server", &co, &c) == P11N_OK);
    return c;
}

static int first_conn(p11n_conn *c, void *arg)
{
    *(p11n_conn **)arg = c;
    return 1;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Both ends hold the same hash; another session has another one. */
static void test_handshake_hash(void)
{
    setup();
    established = 0;
    uint16_t port;
    p11n_listener *l = serve(&port);
    p11n_conn *c = dial(port, K_CLIENT, NULL);
    uint8_t h[P11N_CONN_HASH_MAX], hs[P11N_CONN_HASH_MAX], h2[P11N_CONN_HASH_MAX];
    size_t len = 99, slen = 0, len2 = 0;
    CU_ASSERT(p11n_conn_handshake_hash(c, h, sizeof(h), &len) == P11N_ERR_STATE && len == 0);
    CU_ASSERT_FATAL(pump_to(&established, 2));
    CU_ASSERT(p11n_conn_handshake_hash(c, h, sizeof(h), &len) == P11N_OK && len == 32);
    p11n_conn *s = NULL;
    CU_ASSERT_FATAL(p11n_conn_foreach(ctxs[0], first_conn, &s) == 1 && s != NULL);
    CU_ASSERT(p11n_conn_handshake_hash(s, hs, sizeof(hs), &slen) == P11N_OK && slen == 32);
    CU_ASSERT(memcmp(h, hs, 32) == 0);
    static const uint8_t zero[32];
    CU_ASSERT(memcmp(h, zero, 32) != 0);
    /* The snapshot carries the same bytes. */
    p11n_conn_info info = P11N_CONN_INFO_INIT;
    CU_ASSERT(p11n_conn_info_get(c, &info) == P11N_OK);
    CU_ASSERT(info.handshake_hash_len == 32 && memcmp(info.handshake_hash, h, 32) == 0);
    uint8_t small[16];
    CU_ASSERT(p11n_conn_handshake_hash(c, small, sizeof(small), &len)
        == P11N_ERR_BUFFER_TOO_SMALL && len == 32);
    CU_ASSERT(p11n_conn_handshake_hash(NULL, h, sizeof(h), &len) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_conn_handshake_hash(c, h, sizeof(h), NULL) == P11N_ERR_INVALID_ARG);

    p11n_conn *c2 = dial(port, K_CLIENT, NULL);
    CU_ASSERT_FATAL(pump_to(&established, 4));
    CU_ASSERT(p11n_conn_handshake_hash(c2, h2, sizeof(h2), &len2) == P11N_OK && len2 == 32);
    CU_ASSERT(memcmp(h, h2, 32) != 0);  /* fresh ephemerals: another session */
    p11n_listener_close(l);
    teardown();
}

/* 600 messages each way: 1200 nonces, one rotation per direction at both
 * ends (BOLT #8 rotates after 1000 nonces, two per message). */
static void test_rotations(void)
{
    setup();
    established = echoed = 0;
    uint16_t port;
    p11n_listener *l = serve(&port);
    p11n_conn *c = dial(port, K_CLIENT, NULL);
    CU_ASSERT_FATAL(pump_to(&established, 2));
    p11n_conn_info before = P11N_CONN_INFO_INIT;
    CU_ASSERT(p11n_conn_info_get(c, &before) == P11N_OK);
    CU_ASSERT(before.rotations_in == 0 && before.rotations_out == 0
        && before.last_rotation_unix_ms == 0);
    uint64_t t0 = wall_ms();
    for (int i = 0; i < 600; i++)
        CU_ASSERT_FATAL(p11n_send(c, (const uint8_t *)"rotation", 8) == P11N_OK);
    CU_ASSERT_FATAL(pump_to(&echoed, 600));
    uint64_t t1 = wall_ms();
    p11n_conn *s = NULL;
    CU_ASSERT_FATAL(p11n_conn_foreach(ctxs[0], first_conn, &s) == 1);
    p11n_conn_info ci = P11N_CONN_INFO_INIT, si = P11N_CONN_INFO_INIT;
    CU_ASSERT(p11n_conn_info_get(c, &ci) == P11N_OK && p11n_conn_info_get(s, &si) == P11N_OK);
    CU_ASSERT(ci.rotations_out == 1 && ci.rotations_in == 1);
    CU_ASSERT(si.rotations_out == 1 && si.rotations_in == 1);
    CU_ASSERT(ci.last_rotation_unix_ms >= t0 && ci.last_rotation_unix_ms <= t1);
    CU_ASSERT(si.last_rotation_unix_ms >= t0 && si.last_rotation_unix_ms <= t1);
    CU_ASSERT(ci.msgs_out == 600 && si.msgs_in == 600);
    p11n_listener_close(l);
    teardown();
}

/* "established" and "closed" name the peer, its address and the reason. */
static void test_log_fields(void)
{
    setup();
    established = closed = 0;
    uint16_t port;
    p11n_listener *l = serve(&port);
    p11n_conn *c = dial(port, K_CLIENT, NULL);
    CU_ASSERT_FATAL(pump_to(&established, 2));
    p11n_close(c);
    CU_ASSERT_FATAL(pump_to(&closed, 2));
    const struct event *up = find_event("established"), *down = find_event("closed");
    CU_ASSERT_FATAL(up->event[0] != '\0' && down->event[0] != '\0');
    CU_ASSERT_STRING_EQUAL(up->peer, "client");
    CU_ASSERT(strncmp(up->addr, "127.0.0.1:", 10) == 0);
    CU_ASSERT_STRING_EQUAL(up->reason, "(none)");
    CU_ASSERT(up->conn != 0 && up->conn == down->conn);
    CU_ASSERT_STRING_EQUAL(down->peer, "client");
    CU_ASSERT_STRING_EQUAL(down->addr, up->addr);
    CU_ASSERT(strstr(down->reason, "closed by peer") != NULL);
    CU_ASSERT(strstr(down->text, down->reason) != NULL);  /* the line says it too */
    p11n_listener_close(l);
    teardown();
}

/* A KK responder cannot tell why act 1 verifies under no candidate: an
 * initiator not in its store and a known one with another prologue get
 * the same account, which does not claim the key is unknown. */
static void test_kk_unverified(void)
{
    static const struct {
        const char *what;
        int key;
        const char *prologue;
    } cases[] = {
        { "an initiator not in the store", K_STRANGER, NULL },
        { "a known initiator, another prologue", K_CLIENT, "not p11noise/1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        setup();
        closed = 0;
        uint16_t port;
        p11n_listener *l = serve(&port);
        (void)dial(port, cases[i].key, cases[i].prologue);
        CU_ASSERT_FATAL(pump_to(&closed, 2));
        const struct event *f = find_event("failed");
        CU_ASSERT_FATAL(f->event[0] != '\0');
        fprintf(stderr, "%s: %s\n", cases[i].what, f->text);
        CU_ASSERT(strstr(f->reason, "act 1 did not verify under any of the 1 accepted "
            "initiator keys: an initiator not in our ceremony, a changed key, a different "
            "pattern or prologue, or a corrupted act") != NULL);
        CU_ASSERT(strstr(f->text, p11n_strerror(P11N_ERR_UNKNOWN_PEER)) == NULL);
        CU_ASSERT_STRING_EQUAL(f->peer, "(none)");  /* nobody was authenticated */
        p11n_listener_close(l);
        teardown();
    }
}

static void test_peer_key(void)
{
    setup();
    uint8_t out[P11N_PUBKEY_LEN];
    memset(out, 0xaa, sizeof(out));
    CU_ASSERT(p11n_peer_key(ctxs[0], "client", out) == P11N_OK);
    CU_ASSERT(memcmp(out, pubs[K_CLIENT], sizeof(out)) == 0);
    uint8_t keep[P11N_PUBKEY_LEN];
    memcpy(keep, out, sizeof(keep));
    CU_ASSERT(p11n_peer_key(ctxs[0], "nobody", out) == P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT(memcmp(out, keep, sizeof(out)) == 0);
    CU_ASSERT(p11n_peer_key(ctxs[0], "clien", out) == P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT(p11n_peer_key(NULL, "client", out) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_peer_key(ctxs[0], NULL, out) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_peer_key(ctxs[0], "client", NULL) == P11N_ERR_INVALID_ARG);
    /* A replaced key is the one returned; a removed peer is gone. */
    CU_ASSERT(p11n_ceremony_input(ctxs[0], pubs[K_STRANGER], "client", P11N_PEER_REPLACE)
        == P11N_OK);
    CU_ASSERT(p11n_peer_key(ctxs[0], "client", out) == P11N_OK);
    CU_ASSERT(memcmp(out, pubs[K_STRANGER], sizeof(out)) == 0);
    CU_ASSERT(p11n_peer_remove(ctxs[0], "client") == P11N_OK);
    CU_ASSERT(p11n_peer_key(ctxs[0], "client", out) == P11N_ERR_UNKNOWN_PEER);
    teardown();
}

/* What p11-kit reads from a URI as its PIN, or NULL. */
static char *pin_of(const char *uri)
{
    P11KitUri *u = p11_kit_uri_new();
    char *pin = NULL;
    if (p11_kit_uri_parse(uri, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK
        && p11_kit_uri_get_pin_value(u) != NULL)
        pin = strdup(p11_kit_uri_get_pin_value(u));
    p11_kit_uri_free(u);
    return pin;
}

/* p11-kit reads no PIN from the text shown, and the PIN it reads from
 * the input (of 4 characters or more) is not in the text shown. */
static void check_shown_pin_free(const char *in, const char *shown)
{
    char *pin = pin_of(shown);
    CU_ASSERT(pin == NULL);
    free(pin);
    pin = pin_of(in);
    if (pin != NULL && strlen(pin) >= 4) {
        if (strstr(shown, pin) != NULL)
            fprintf(stderr, "'%s' shown as '%s'\n", in, shown);
        CU_ASSERT(strstr(shown, pin) == NULL);
    }
    free(pin);
}

static void test_uri_display(void)
{
    static const struct {
        const char *what, *in, *out;
    } rows[] = {
        { "escapes of printable bytes resolved, pin-value removed, pin-source kept",
            "pkcs11:token=my%2Btoken;object=a%2Fb?pin-value=1234&pin-source=file:/p",
            "pkcs11:token=my+token;object=a/b?pin-source=file:/p" },
        /* p11-kit drops raw whitespace: a space shown raw would join
         * "pin-val" and "ue" into the name it reads as a PIN. */
        { "an escaped space stays escaped", "pkcs11:token=my%20token%09x",
            "pkcs11:token=my%20token%09x" },
        { "a space escaped after the name", "pkcs11:token=a?pin-value%20=1234", "pkcs11:token=a" },
        { "a space escaped inside the name", "pkcs11:token=a?pin-val%20ue=1234", "pkcs11:token=a" },
        { "a space escaped before a path pin-value", "pkcs11:token=a;%20pin-value=1234",
            "pkcs11:token=a" },
        { "whitespace inside an escape of the name", "pkcs11:token=a?%7 0in-va\nlue=1234",
            "pkcs11:token=a" },
        { "the scheme in capitals", "PKCS11:token=a?pin-value=1234", "pkcs11:token=a" },
        { "whitespace before and inside the scheme", " pk\ncs11 :token=a?pin-value=1234",
            "pkcs11:token=a" },
        { "an unescaped '&' in a PIN: its tail up to a known attribute goes",
            "pkcs11:token=a?pin-value=12&34&x=5&module-name=m&y=6",
            "pkcs11:token=a?module-name=m&y=6" },
        { "an empty path component starts the query, as in p11-kit",
            "pkcs11:token=a;;pin-value=9876&object=b", "pkcs11:token=a?object=b" },
        { "... a blank one too, or one at the start", "pkcs11: \n;x=y&pin-value=9876",
            "pkcs11:?x=y" },
        { "more between the scheme and its ':'", "pkcs11x:token=a?pin-value=1234",
            "pkcs11:token=a" },
        { "an unescaped ';' or '?' in a path PIN: its tail goes too",
            "pkcs11:pin-value=12;34?56&pin-source=f", "pkcs11:?pin-source=f" },
        { "a query of pin-value alone: no '?' left",
            "pkcs11:token=t?pin-value=12%2034", "pkcs11:token=t" },
        { "pin-value first, last, or in the path", "pkcs11:pin-value=1;token=t?a=b&pin-value=2",
            "pkcs11:token=t?a=b" },
        { "pin-value spelled escaped or in capitals", "pkcs11:token=t?pin-values=4&pin%2Dvalue=1"
            "&PIN-VALUE=2&pin-valu%65%3D3&pin-val\tu e =5", "pkcs11:token=t?pin-values=4" },
        { "control bytes and DEL stay escaped", "pkcs11:object=a%0Ab%1b%7F",
            "pkcs11:object=a%0Ab%1B%7F" },
        { "raw control bytes are escaped", "pkcs11:object=a\nb\033", "pkcs11:object=a%0Ab%1B" },
        { "the URI's own delimiters stay escaped", "pkcs11:token=a%3Bb%3Fc%26d%3De%25f",
            "pkcs11:token=a%3Bb%3Fc%26d%3De%25f" },
        { "UTF-8 stays escaped", "pkcs11:token=%E2%82%AC", "pkcs11:token=%E2%82%AC" },
        { "a lone or bad '%' is shown as it is", "pkcs11:token=100%;object=%zz",
            "pkcs11:token=100%;object=%zz" },
        { "another scheme: only unprintable bytes escaped", "file:/k%20ey\t\xff",
            "file:/k%20ey%09%FF" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char out[256];
        size_t n = p11n_uri_display(rows[i].in, out, sizeof(out));
        if (strcmp(out, rows[i].out) != 0 || n != strlen(rows[i].out))
            fprintf(stderr, "%s: got '%s' (%zu)\n", rows[i].what, out, n);
        CU_ASSERT_STRING_EQUAL(out, rows[i].out);
        CU_ASSERT(n == strlen(rows[i].out));
        check_shown_pin_free(rows[i].in, out);
    }
    /* Cut as snprintf cuts: NUL-terminated, the whole length returned. */
    char small[8];
    memset(small, 'x', sizeof(small));
    CU_ASSERT(p11n_uri_display("pkcs11:token=abc", small, sizeof(small)) == 16);
    CU_ASSERT_STRING_EQUAL(small, "pkcs11:");
    CU_ASSERT(p11n_uri_display("pkcs11:token=abc", NULL, 0) == 16);
    CU_ASSERT(p11n_uri_display(NULL, small, sizeof(small)) == 0 && small[0] == '\0');
}

/* Each malformed line: its number, its class of error, what is wrong. */
static void test_peers_why(void)
{
#define PUB "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
#define PUB_X "4f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
    static const struct {
        const char *what, *line2;
        int err;
        const char *why;
    } rows[] = {
        { "wrong length", "p2 " PUB "00", P11N_ERR_PARSE,
            "wrong length: the key has 68 hex digits, not 66" },
        { "uncompressed key", "p2 04" PUB_X PUB_X, P11N_ERR_PARSE,
            "uncompressed key (130 hex digits): give the 66-digit compressed form" },
        { "bad character", "p2 03" PUB_X "\x01", P11N_ERR_PARSE,
            "bad byte 0x01 in the key (hex digits only)" },
        { "bad printable character", "p2 g" PUB_X, P11N_ERR_PARSE,
            "bad character 'g' in the key" },
        { "extra field", "p2 " PUB " extra", P11N_ERR_PARSE, "extra field after the key" },
        { "one field", "p2", P11N_ERR_PARSE, "IDENTIFIER PUBHEX expected: one field only" },
        { "BOM", "\xef\xbb\xbfp2 " PUB, P11N_ERR_PARSE, "byte order mark" },
        { "bad identifier", "p/2 " PUB, P11N_ERR_BAD_IDENTIFIER,
            "the identifier is not 1-64 characters" },
        { "long identifier",
            "p2345678901234567890123456789012345678901234567890123456789012345 " PUB,
            P11N_ERR_BAD_IDENTIFIER, "the identifier is not 1-64 characters" },
        { "not compressed", "p2 05" PUB_X, P11N_ERR_BAD_PUBKEY,
            "does not start with 02 or 03" },
        { "not on the curve", "p2 02" "ffffffffffffffffffffffffffffffff"
            "ffffffffffffffffffffffffffffffff", P11N_ERR_BAD_PUBKEY, "not a point of secp256k1" },
        { "identifier again", "p1 " PUB, P11N_ERR_EXISTS, "identifier p1 already on line 1" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char text[512], why[160] = "unset";
        snprintf(text, sizeof(text), "p1 " PUB "\n%s\n# after\n", rows[i].line2);
        p11n_peer_entry *e = NULL;
        size_t n = 0, bad = 0;
        int rc = p11n_peers_parse_why(text, strlen(text), &e, &n, &bad, why, sizeof(why));
        if (rc != rows[i].err || bad != 2 || strstr(why, rows[i].why) == NULL)
            fprintf(stderr, "%s: %d line %zu '%s'\n", rows[i].what, rc, bad, why);
        CU_ASSERT(rc == rows[i].err && bad == 2 && e == NULL);
        CU_ASSERT(strstr(why, rows[i].why) != NULL);
        CU_ASSERT(strstr(why, PUB_X) == NULL);  /* never the key itself */
    }
    /* A NUL, and a good file: no reason, the entries. */
    char why[160] = "unset";
    p11n_peer_entry *e = NULL;
    size_t n = 0, bad = 0;
    static const char nul[] = "p1 " PUB "\n\np\0\n";
    CU_ASSERT(p11n_peers_parse_why(nul, sizeof(nul) - 1, &e, &n, &bad, why, sizeof(why))
        == P11N_ERR_PARSE && bad == 3 && strstr(why, "NUL") != NULL);
    static const char good[] = "p1 " PUB "\n";
    CU_ASSERT(p11n_peers_parse_why(good, sizeof(good) - 1, &e, &n, &bad, why, sizeof(why))
        == P11N_OK && n == 1 && why[0] == '\0');
    p11n_free(e);
    /* Without a buffer, as p11n_peers_parse. */
    CU_ASSERT(p11n_peers_parse_why("x\n", 2, &e, &n, &bad, NULL, 0) == P11N_ERR_PARSE
        && bad == 1);
#undef PUB
#undef PUB_X
}

int main(void)
{
    static const p11n_test tests[] = {
        { "handshake hash: equal at both ends, another per session, STATE before",
            test_handshake_hash },
        { "key rotations counted each way, with the time of the last", test_rotations },
        { "log records of established and closed carry peer, address, reason",
            test_log_fields },
        { "KK act 1 under no candidate: the reason lists what it may be", test_kk_unverified },
        { "p11n_peer_key: the store's key, UNKNOWN_PEER, after replace and remove",
            test_peer_key },
        { "p11n_uri_display: readable, no PIN, unprintable bytes escaped", test_uri_display },
        { "peers text: each malformed line's number, class and reason", test_peers_why },
        { NULL, NULL },
    };
    int rc = p11n_test_main("diag", tests);
    t_log_free();
    return rc;
}
