/*
 * Throughput through the event loop, as applications use it: the client
 * queues messages with p11n_send() until it would block, then runs the
 * loop; the server's `message` callback counts them. Over loopback, two
 * processes, software keys, one connection.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

struct sink {
    uint64_t want, got;           /* payload bytes of the current request */
    int have_request;
};

/* A request is one 16-byte message (count, size); the server answers with
 * one byte once count * size payload bytes have arrived. */
static void sink_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct sink *s = arg;
    if (!s->have_request) {
        uint64_t req[2];
        if (len != sizeof(req)) {
            p11n_close(c);
            return;
        }
        memcpy(req, msg, sizeof(req));
        s->want = req[0] * req[1];
        s->got = 0;
        s->have_request = 1;
        return;
    }
    s->got += len;
    if (s->got >= s->want) {
        s->have_request = 0;
        if (p11n_send(c, (const uint8_t *)"k", 1) != P11N_OK)
            p11n_close(c);
    }
}

struct loop_server {
    p11n_key *key;
    uint8_t client_pub[P11N_PUBKEY_LEN];
    int port_fd;
};

static int sink_serve(void *arg)
{
    struct loop_server *a = arg;
    struct sink s = { 0 };
    p11n_ctx *ctx = NULL;
    p11n_listener *l = NULL;
    p11n_listen_options lo;
    p11n_ctx_options co;
    const char *peers[1] = { "client" };
    uint16_t port;

    co = (p11n_ctx_options)P11N_CTX_OPTIONS_INIT;
    co.log_level = P11N_LOG_ERROR;
    if (p11n_ctx_new(&co, &ctx) != P11N_OK
        || p11n_ceremony_input(ctx, a->client_pub, "client", 0) != P11N_OK)
        return -1;
    lo = (p11n_listen_options)P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = a->key;
    lo.ch.cb.message = sink_message;
    lo.ch.cb.arg = &s;
    lo.peers = peers;
    lo.npeers = 1;
    if (p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) != P11N_OK)
        return -1;
    port = p11n_listener_port(l);
    if (bench_write_all(a->port_fd, &port, sizeof(port)) != 0)
        return -1;
    return p11n_run(ctx) == P11N_OK ? 0 : -1;
}

struct pump {
    p11n_ctx *ctx;
    p11n_conn *conn;
    int established, acked, failed;
    const uint8_t *msg;           /* the current repetition */
    size_t size, left;
};

/* Queue messages until the queue is full or all are queued. Called again
 * from the `writable` callback, as the API intends: a writer that instead
 * waited for `writable` in its own loop around p11n_run_once() would sit
 * out the poll timeout each time the queue drained inside the loop. */
static void pump_fill(struct pump *p)
{
    while (p->left > 0 && p->conn != NULL) {
        int rc = p11n_send(p->conn, p->msg, p->size);
        if (rc == P11N_ERR_WOULD_BLOCK)
            return;
        if (rc != P11N_OK) {
            p->failed = 1;
            return;
        }
        p->left--;
    }
}

static void pump_writable(p11n_conn *c, void *arg)
{
    (void)c;
    pump_fill(arg);
}

static void pump_established(p11n_conn *c, const char *peer, void *arg)
{
    struct pump *p = arg;
    (void)peer;
    p->conn = c;
    p->established = 1;
}

static void pump_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct pump *p = arg;
    (void)c;
    (void)msg;
    (void)len;
    p->acked = 1;
}

static void pump_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct pump *p = arg;
    (void)c;
    (void)text;
    (void)final;
    if (reason != P11N_OK)
        p->failed = 1;
    p->conn = NULL;
}

static int run_until(struct pump *p, const int *flag)
{
    while (!*flag) {
        if (p->failed || p11n_run_once(p->ctx, 1000) == P11N_ERR_IO)
            return -1;
    }
    return 0;
}

/* One repetition of the throughput figure: p->msg and p->size set. */
static int pump_rep(void *arg, size_t count, double *secs)
{
    struct pump *p = arg;
    uint64_t req[2] = { count, p->size };
    double t0 = bench_now();

    p->acked = 0;
    if (p->conn == NULL || p11n_send(p->conn, (const uint8_t *)req, sizeof(req)) != P11N_OK)
        return -1;
    p->left = count;
    pump_fill(p);
    if (run_until(p, &p->acked) != 0 || p->left != 0)
        return -1;
    *secs = bench_now() - t0;
    return 0;
}

int bench_loop_throughput(const bench_opts *o, size_t size, bench_stat *out)
{
    struct loop_server srv;
    struct pump p = { 0 };
    p11n_key *ckey = NULL;
    uint8_t spub[P11N_PUBKEY_LEN], *msg = calloc(1, size);
    p11n_ctx_options co;
    p11n_connect_options cn;
    p11n_conn *conn;
    int fds[2] = { -1, -1 }, rc = -1;
    pid_t pid = -1;
    uint16_t port;
    size_t len;

    memset(&srv, 0, sizeof(srv));
    if (msg == NULL || pipe(fds) != 0
        || p11n_key_generate("secp256k1", &srv.key) != P11N_OK
        || p11n_key_generate("secp256k1", &ckey) != P11N_OK
        || p11n_key_public(srv.key, spub, sizeof(spub), &len) != P11N_OK
        || p11n_key_public(ckey, srv.client_pub, sizeof(srv.client_pub), &len) != P11N_OK)
        goto done;
    srv.port_fd = fds[1];
    pid = bench_fork(sink_serve, &srv);
    if (pid < 0 || bench_read_all(fds[0], &port, sizeof(port)) != 0)
        goto done;
    co = (p11n_ctx_options)P11N_CTX_OPTIONS_INIT;
    co.log_level = P11N_LOG_ERROR;
    cn = (p11n_connect_options)P11N_CONNECT_OPTIONS_INIT;
    cn.ch.key = ckey;
    cn.ch.cb.established = pump_established;
    cn.ch.cb.message = pump_message;
    cn.ch.cb.closed = pump_closed;
    cn.ch.cb.writable = pump_writable;
    cn.ch.cb.arg = &p;
    if (p11n_ctx_new(&co, &p.ctx) != P11N_OK
        || p11n_ceremony_input(p.ctx, spub, "server", 0) != P11N_OK
        || p11n_connect(p.ctx, "127.0.0.1", port, "server", &cn, &conn) != P11N_OK
        || run_until(&p, &p.established) != 0)
        goto done;
    p.msg = msg;
    p.size = size;
    rc = bench_mbps_reps(o, size, 20.0, pump_rep, &p, out);
done:
    p11n_ctx_free(p.ctx);
    bench_child_stop(pid);
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    p11n_key_free(srv.key);
    p11n_key_free(ckey);
    free(msg);
    return rc;
}
