/*
 * A peer that sends chosen bytes, for what `p11noise listen` prints
 * (tests/cli.sh): each HEX argument is one message (any bytes, newlines
 * included), then the channel is closed gracefully.
 *
 *   rawsend KEY_URI SERVER_PUBHEX PORT HEX...
 *
 * Exits 0 once every message was sent and the connection closed cleanly,
 * 1 otherwise (with the reason on stderr); killed by SIGALRM after
 * GIVE_UP_S seconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11noise.h"
#include "testutil.h"

/* Bounds the run should the listener never answer: SIGALRM ends it. */
#define GIVE_UP_S 20

struct peer {
    p11n_conn *conn;
    int established, closed, reason;
    char why[200];
};

static void on_established(p11n_conn *c, const char *peer, void *arg)
{
    struct peer *p = arg;
    (void)peer;
    p->established = 1;
    p->conn = c;
}

static void on_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct peer *p = arg;
    (void)c;
    if (!final)
        return;
    p->closed = 1;
    p->reason = reason;
    p->conn = NULL;
    snprintf(p->why, sizeof(p->why), "%s (%s)", text, p11n_strerror(reason));
}

/* Queue every message of argv; 0 or 1 after printing why not. */
static int send_all(p11n_conn *c, int n, char **hex)
{
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        uint8_t *msg = t_unhex(hex[i], &len);
        int rc = p11n_send(c, msg, len);
        free(msg);
        if (rc != P11N_OK) {
            fprintf(stderr, "rawsend: message %d: %s\n", i + 1, p11n_strerror(rc));
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: rawsend KEY_URI SERVER_PUBHEX PORT HEX...\n");
        return 2;
    }
    struct peer p;
    memset(&p, 0, sizeof(p));
    p11n_key *key = NULL;
    p11n_ctx *ctx = NULL;
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log_level = P11N_LOG_WARN;
    if (p11n_key_load(argv[1], &key) != P11N_OK || p11n_ctx_new(&o, &ctx) != P11N_OK) {
        fprintf(stderr, "rawsend: setup failed\n");
        return 1;
    }
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = key;
    co.ch.cb = (p11n_callbacks){ .established = on_established, .closed = on_closed, .arg = &p };
    p11n_conn *c = NULL;
    int status = 1;
    if (p11n_connect(ctx, "127.0.0.1", (uint16_t)atoi(argv[3]), argv[2], &co, &c) != P11N_OK) {
        fprintf(stderr, "rawsend: connect failed\n");
        goto out;
    }
    alarm(GIVE_UP_S);
    int sent = 0;
    while (!p.closed) {
        if (p11n_run_once(ctx, 10) != P11N_OK)
            break;
        if (p.established && !sent) {
            sent = 1;
            if (send_all(p.conn, argc - 4, argv + 4) != 0)
                goto out;
            p11n_close(p.conn);
        }
    }
    if (!p.closed)
        fprintf(stderr, "rawsend: the loop failed\n");
    else if (!sent || p.reason != P11N_OK)
        fprintf(stderr, "rawsend: %s\n", p.why);
    else
        status = 0;
out:
    p11n_ctx_free(ctx);
    p11n_key_free(key);
    return status;
}
