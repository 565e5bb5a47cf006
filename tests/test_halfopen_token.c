/*
 * Eviction spares a handshake whose act is with the token: a KK listener
 * with one handshake slot and a token key whose derivations the fault
 * module delays. While a legitimate initiator's act 1 is on the worker,
 * a newcomer finds nothing to evict and is refused (LIMIT, "none waiting
 * for its peer"); the initiator's handshake then completes. Without a
 * token step in flight, the same newcomer evicts an idle one instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "netutil.h"
#include "p11noise.h"
#include "softhsm.h"
#include "testutil.h"

static struct t_token T;

static const uint8_t SERVER_PRIV[32] = {
    0x3a, 0x91, 0x5c, 0x07, 0xe2, 0x48, 0xb3, 0x1d, 0x66, 0xf0, 0x29, 0x84, 0x5b, 0xc7, 0x12, 0x9e,
    0x40, 0xd5, 0x7a, 0x23, 0x88, 0x0f, 0xb1, 0x6c, 0x35, 0xe9, 0x52, 0x04, 0x9d, 0x77, 0x1a, 0xc3,
};
static const uint8_t CLIENT_PRIV[32] = {
    0x14, 0x6b, 0xd2, 0x39, 0x80, 0x5f, 0xa7, 0x0e, 0xc1, 0x33, 0x9a, 0x48, 0x71, 0x26, 0xef, 0x05,
    0x9c, 0x52, 0x3b, 0xe0, 0x17, 0x84, 0x6d, 0xa9, 0x2e, 0xf3, 0x58, 0x0b, 0xc6, 0x41, 0x97, 0x3d,
};

typedef struct who {
    int established, closed, reason;
    char text[300];
} who;

static void w_up(p11n_conn *c, const char *peer, void *arg)
{
    (void)c;
    (void)peer;
    ((who *)arg)->established++;
}

static void w_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)final;
    who *w = arg;
    w->closed++;
    w->reason = reason;
    snprintf(w->text, sizeof(w->text), "%s", text);
}

static p11n_ctx *ctxs[2];

static int pump_until_log(size_t mark, const char *a, const char *b)
{
    time_t guard = time(NULL) + 60;
    while (!t_log_has(mark, a, b) && time(NULL) < guard)
        t_pump(ctxs, 2, 20);
    return t_log_has(mark, a, b);
}

static int raw_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        abort();
    return fd;
}

static void test_token_step_not_evicted(void)
{
    /* The server's key on the token, every derivation 1.5 s late. */
    struct p11n_token *tok = t_token_open(T.uri);
    t_token_import_key(tok, "server", SERVER_PRIV, 1, 1);
    p11n_token_close(tok);
    char uri[2300];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=server?module-path=%s&pin-value=" T_PIN,
        T.label, P11N_FAULT_MODULE);
    setenv("P11N_FAULT", "C_DeriveKey:delay=1500", 1);
    p11n_key *skey = NULL, *ckey = NULL;
    CU_ASSERT_FATAL(p11n_key_load(uri, &skey) == P11N_OK);
    unsetenv("P11N_FAULT");
    CU_ASSERT_FATAL(p11n_key_from_private("secp256k1", CLIENT_PRIV, 32, &ckey) == P11N_OK);
    uint8_t spub[P11N_PUBKEY_LEN], cpub[P11N_PUBKEY_LEN];
    size_t len = 0;
    CU_ASSERT_FATAL(p11n_key_public(skey, spub, sizeof(spub), &len) == P11N_OK);
    CU_ASSERT_FATAL(p11n_key_public(ckey, cpub, sizeof(cpub), &len) == P11N_OK);

    const char *names[2] = { "srv", "cli" };
    for (int i = 0; i < 2; i++) {
        p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
        o.log = t_log_cb;
        o.log_arg = (void *)names[i];
        o.log_level = P11N_LOG_DEBUG;
        CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctxs[i]) == P11N_OK);
    }
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[0], cpub, "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[1], spub, "server", 0) == P11N_OK);
    who srv = { 0 }, cli = { 0 };
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = skey;
    lo.ch.cb = (p11n_callbacks){ .established = w_up, .closed = w_closed, .arg = &srv };
    lo.max_handshakes = 1;
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(ctxs[0], "127.0.0.1", 0, &lo, &l) == P11N_OK);
    uint16_t port = p11n_listener_port(l);

    /* The legitimate initiator's act 1 goes to the (slow) token. */
    size_t mark = t_log_mark();
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = ckey;
    co.ch.cb = (p11n_callbacks){ .established = w_up, .closed = w_closed, .arg = &cli };
    p11n_conn *c = NULL;
    CU_ASSERT_FATAL(p11n_connect(ctxs[1], "127.0.0.1", port, "server", &co, &c) == P11N_OK);
    CU_ASSERT(pump_until_log(mark, "[srv]", "token read handed to a worker"));
    /* A newcomer: the only handshake is with the token, not evictable. */
    int fd = raw_connect(port);
    CU_ASSERT(pump_until_log(mark, "refused: 1 handshakes in progress", "none waiting for its "
        "peer [limit reached]"));
    CU_ASSERT(srv.closed == 0);
    time_t guard = time(NULL) + 60;
    while (cli.established == 0 && cli.closed == 0 && time(NULL) < guard)
        t_pump(ctxs, 2, 20);
    CU_ASSERT(cli.established == 1 && srv.established == 1);
    close(fd);

    /* An idle socket holds the slot now: the next newcomer evicts it. */
    mark = t_log_mark();
    int idle = raw_connect(port);
    CU_ASSERT(pump_until_log(mark, "[srv]", "incoming from"));
    int next = raw_connect(port);
    CU_ASSERT(pump_until_log(mark, "evicted: handshake table full (1 of the listener's "
        "max_handshakes)", NULL));
    CU_ASSERT(srv.reason == P11N_ERR_EVICTED);
    close(idle);
    close(next);
    for (int i = 0; i < 2; i++) {
        p11n_ctx_free(ctxs[i]);
        ctxs[i] = NULL;
    }
    p11n_key_free(skey);
    p11n_key_free(ckey);
}

int main(void)
{
    t_token_setup(&T, "p11n-halfopen");
    static const p11n_test tests[] = {
        { "a handshake step on the token is not evicted", test_token_step_not_evicted },
        { NULL, NULL },
    };
    int rc = p11n_test_main("halfopen-token", tests);
    t_token_teardown(&T);
    t_log_free();
    return rc;
}
