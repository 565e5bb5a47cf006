/*
 * A peer that writes much faster than it reads, for `p11noise listen
 * --echo` (tests/net.sh): it queues MIB MiB of 65535-byte messages at
 * once, reads nothing for its first PAUSE_MS milliseconds, then reads
 * every echo back and checks it byte for byte, in order.
 *
 *   slowpeer KEY_URI SERVER_PUBHEX PORT MIB PAUSE_MS
 *
 * Exits 0 once every echo came back and the connection closed cleanly;
 * 1 on a lost or wrong echo or a connection that ended early. The pause
 * only makes the echo server's queue fill up; with backpressure the
 * result does not depend on how long it lasts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "p11noise.h"
#include "testutil.h"

struct peer {
    p11n_conn *conn;
    unsigned count;               /* messages sent */
    unsigned got;                 /* echoes received */
    int established, closed, reason, bad;
    char why[200];
};

static uint8_t msg[P11N_MAX_MESSAGE], want[P11N_MAX_MESSAGE];

static void fill(unsigned i, uint8_t *buf)
{
    uint64_t seed = (uint64_t)i * 0x9e3779b97f4a7c15u + 3;
    t_fill(buf, P11N_MAX_MESSAGE, &seed);
}

static void on_established(p11n_conn *c, const char *peer, void *arg)
{
    struct peer *p = arg;
    (void)peer;
    p->established = 1;
    p->conn = c;
}

static void on_message(p11n_conn *c, const uint8_t *m, size_t len, void *arg)
{
    struct peer *p = arg;
    (void)c;
    fill(p->got, want);
    if (len != P11N_MAX_MESSAGE || memcmp(m, want, len) != 0) {
        if (!p->bad)
            fprintf(stderr, "slowpeer: echo %u is wrong (%zu bytes)\n", p->got, len);
        p->bad = 1;
    }
    p->got++;
}

static void on_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct peer *p = arg;
    (void)c;
    (void)final;
    p->closed = 1;
    p->reason = reason;
    p->conn = NULL;
    snprintf(p->why, sizeof(p->why), "%s (%s)", text, p11n_strerror(reason));
}

static uint64_t ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: slowpeer KEY_URI SERVER_PUBHEX PORT MIB PAUSE_MS\n");
        return 2;
    }
    unsigned port = (unsigned)atoi(argv[3]);
    size_t mib = (size_t)atoi(argv[4]);
    uint64_t pause_ms = (uint64_t)atoi(argv[5]);
    struct peer p;
    memset(&p, 0, sizeof(p));
    p.count = (unsigned)(mib * 1024 * 1024 / P11N_MAX_MESSAGE);

    p11n_key *key = NULL;
    p11n_ctx *ctx = NULL;
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log_level = P11N_LOG_WARN;
    o.write_high_water = (mib + 1) * 1024 * 1024; /* everything queued at once */
    if (p11n_key_load(argv[1], &key) != P11N_OK || p11n_ctx_new(&o, &ctx) != P11N_OK) {
        fprintf(stderr, "slowpeer: setup failed\n");
        return 1;
    }
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = key;
    co.ch.cb = (p11n_callbacks){ .established = on_established, .message = on_message,
        .closed = on_closed, .arg = &p };
    p11n_conn *c = NULL;
    if (p11n_connect(ctx, "127.0.0.1", (uint16_t)port, argv[2], &co, &c) != P11N_OK) {
        fprintf(stderr, "slowpeer: connect failed\n");
        return 1;
    }
    uint64_t guard = ms_now() + 120000, resume_at = 0;
    int resumed = 0, closing = 0, status = 1;
    while (ms_now() < guard && !p.closed) {
        if (p11n_run_once(ctx, 10) != P11N_OK)
            break;
        if (p.established && resume_at == 0) {
            if (p11n_conn_pause_read(p.conn, 1) != P11N_OK)
                break;
            for (unsigned i = 0; i < p.count; i++) {
                fill(i, msg);
                if (p11n_send(p.conn, msg, sizeof(msg)) != P11N_OK) {
                    fprintf(stderr, "slowpeer: cannot queue message %u\n", i);
                    goto out;
                }
            }
            resume_at = ms_now() + pause_ms;
        }
        if (resume_at != 0 && !resumed && ms_now() >= resume_at) {
            resumed = 1;
            if (p11n_conn_pause_read(p.conn, 0) != P11N_OK)
                break;
        }
        if (p.got == p.count && !closing) {
            closing = 1;
            p11n_close(p.conn);
        }
    }
    if (!p.closed) {
        fprintf(stderr, "slowpeer: gave up (%u of %u echoes)\n", p.got, p.count);
        status = 1;
    } else if (p.got != p.count) {
        fprintf(stderr, "slowpeer: connection ended after %u of %u echoes: %s\n", p.got, p.count,
            p.why);
        status = 1;
    } else if (p.bad || p.reason != P11N_OK) {
        fprintf(stderr, "slowpeer: %s\n", p.bad ? "wrong echoes" : p.why);
    } else {
        printf("slowpeer: %u echoes of %d bytes, all checked\n", p.got, P11N_MAX_MESSAGE);
        status = 0;
    }
out:
    p11n_ctx_free(ctx);
    p11n_key_free(key);
    return status;
}
