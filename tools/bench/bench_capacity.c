/*
 * Server capacity: handshakes per second one listener process sustains
 * while a client process keeps CAP_INFLIGHT handshakes in flight. The
 * server is a bench_fork child pinned to one CPU (when the machine lets
 * it), so the figure is what one core of a server does; the client runs
 * unpinned. Each handshake is a fresh connection, closed once the client
 * knows both sides have authenticated each other.
 *
 * p11noise: a p11n_listen listener against p11n_connect clients, KK.
 * Reference: an OpenSSL TLS 1.3 server, non-blocking, one process, mutual
 * authentication with pinned self-signed P-256 certificates, the same
 * load. Both sides only on 127.0.0.1, each repetition bounded in time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define CAP_INFLIGHT 64
/* A repetition whose first CAP_INFLIGHT handshakes are not through in
 * this time fails instead of hanging. */
#define CAP_GRACE_S 5.0

/* The server's CPU: the last one this process may run on (the client and
 * the rest of the machine tend to start on the first). */
static void pin_to_one_cpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return;
    for (int cpu = CPU_SETSIZE - 1; cpu >= 0; cpu--) {
        if (CPU_ISSET(cpu, &set)) {
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            (void)sched_setaffinity(0, sizeof(set), &set);
            return;
        }
    }
}

/* The time counted: at least 0.2 s, so even a smoke run sees many
 * handshakes through. */
static double cap_seconds(const bench_opts *o)
{
    return o->rep_seconds > 0.2 ? o->rep_seconds : 0.2;
}

/* Counting starts once the first CAP_INFLIGHT handshakes are through
 * (the server forked and warm; `warm` < 0 until then) and ends
 * cap_seconds later; connections still in flight then finish uncounted. */
static double cap_end(double warm, const bench_opts *o)
{
    return warm < 0 ? 1e9 : warm + cap_seconds(o);
}

/* What one repetition measured: the counted handshakes, the wall-clock
 * and the server's CPU time (all its threads) over the counted span. */
struct cap_span {
    pid_t server;
    double cpu0, wall0;
    size_t counted;
    double secs, cpu;
};

/* CPU seconds the process has used so far, or -1. */
static double cpu_seconds(pid_t pid)
{
    clockid_t clk;
    struct timespec ts;
    if (clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void span_start(struct cap_span *m)
{
    m->cpu0 = cpu_seconds(m->server);
    m->wall0 = bench_now();
}

static void span_end(struct cap_span *m, size_t counted)
{
    m->counted = counted;
    m->secs = bench_now() - m->wall0;
    m->cpu = cpu_seconds(m->server) - m->cpu0;
}

/* Handshakes per wall-clock second, or per CPU-second of the server. */
static int span_rate(const struct cap_span *m, int per_cpu, bench_stat *out)
{
    double d = per_cpu ? m->cpu : m->secs;
    if (d <= 0 || m->cpu0 < 0)
        return -1;
    bench_stat_add(out, (double)m->counted / d);
    return 0;
}

/* The port of a child's listener, over a pipe; -1 on failure. */
static int read_port(int fd, uint16_t *port)
{
    return bench_read_all(fd, port, sizeof(*port));
}

/* ---- p11noise ---- */

struct p11n_cap_server {
    const bench_hs_side *self;
    const uint8_t *client_pub;
    int report_fd;
};

static p11n_ctx *cap_ctx(void)
{
    p11n_ctx_options opt;
    p11n_ctx *ctx = NULL;
    opt = (p11n_ctx_options)P11N_CTX_OPTIONS_INIT;
    opt.log_level = P11N_LOG_ERROR;
    opt.max_handshakes = 4 * CAP_INFLIGHT;
    return p11n_ctx_new(&opt, &ctx) == P11N_OK ? ctx : NULL;
}

static void srv_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c, (void)reason, (void)text, (void)final, (void)arg;
}

static int p11n_cap_serve(void *arg)
{
    struct p11n_cap_server *s = arg;
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    const char *peers[1] = { "client" };
    p11n_listener *l = NULL;
    p11n_key *key = s->self->key;
    p11n_ctx *ctx;
    uint16_t port;

    pin_to_one_cpu();
    if (s->self->uri != NULL) {
        if (s->self->token != NULL)
            bench_token_use(s->self->token);
        if (p11n_key_load(s->self->uri, &key) != P11N_OK)
            return -1;
    }
    ctx = cap_ctx();
    if (ctx == NULL || p11n_ceremony_input(ctx, s->client_pub, "client", 0) != P11N_OK)
        return -1;
    lo.ch.key = key;
    lo.ch.cb.closed = srv_closed;
    lo.peers = peers;
    lo.npeers = 1;
    if (p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) != P11N_OK)
        return -1;
    port = p11n_listener_port(l);
    if (bench_write_all(s->report_fd, &port, sizeof(port)) != 0)
        return -1;
    return p11n_run(ctx) == P11N_OK ? 0 : -1;
}

struct cap_client {
    size_t done, failed, pending;
};

/* The initiator has read act two: both sides are authenticated. */
static void cli_established(p11n_conn *c, const char *peer, void *arg)
{
    struct cap_client *cl = arg;
    (void)peer;
    cl->done++;
    cl->pending--;
    p11n_close(c);
}

static void cli_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct cap_client *cl = arg;
    (void)text, (void)final;
    if (reason != P11N_OK && p11n_conn_peer(c) == NULL) {
        cl->failed++;
        cl->pending--;
    }
}

/* Handshakes per second over cap_seconds with CAP_INFLIGHT in flight;
 * those still in flight at the end are left uncounted. */
static int p11n_cap_rep(const bench_opts *o, p11n_ctx *ctx, p11n_key *key, uint16_t port,
    struct cap_span *m)
{
    struct cap_client cl = { 0 };
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    double t0 = bench_now(), t, warm = -1;
    size_t counted = 0, base = 0;

    co.ch.key = key;
    co.ch.cb.established = cli_established;
    co.ch.cb.closed = cli_closed;
    co.ch.cb.arg = &cl;
    while ((t = bench_now() - t0) < cap_end(warm, o)) {
        if (warm < 0 && cl.done >= CAP_INFLIGHT) {
            warm = t;
            base = cl.done;
            span_start(m);
        }
        counted = cl.done - base;
        while (cl.pending < CAP_INFLIGHT) {
            p11n_conn *c;
            if (p11n_connect(ctx, "127.0.0.1", port, "server", &co, &c) != P11N_OK)
                return -1;
            cl.pending++;
        }
        if (cl.failed > 0 || (warm < 0 && t > CAP_GRACE_S)
            || p11n_run_once(ctx, 100) == P11N_ERR_IO)
            return -1;
    }
    span_end(m, counted);
    return 0;
}

int bench_p11n_capacity(const bench_opts *o, const bench_hs_side *server,
    const bench_hs_side *client, int per_cpu, bench_stat *out)
{
    struct p11n_cap_server srv = { .self = server, .client_pub = client->pub };
    p11n_ctx *ctx = NULL;
    p11n_key *key = client->key;
    int fds[2], rc = -1;
    uint16_t port;
    pid_t pid;
    struct cap_span m = { .cpu0 = -1 };

    if (pipe(fds) != 0)
        return -1;
    srv.report_fd = fds[1];
    pid = m.server = bench_fork(p11n_cap_serve, &srv);
    close(fds[1]);
    if (pid < 0 || read_port(fds[0], &port) != 0)
        goto done;
    if (client->uri != NULL) {
        if (client->token != NULL)
            bench_token_use(client->token);
        if (p11n_key_load(client->uri, &key) != P11N_OK)
            goto done;
    }
    ctx = cap_ctx();
    if (ctx == NULL || p11n_ceremony_input(ctx, server->pub, "server", 0) != P11N_OK
        || p11n_cap_rep(o, ctx, key, port, &m) != 0)
        goto done;
    rc = span_rate(&m, per_cpu, out);
done:
    p11n_ctx_free(ctx);
    if (client->uri != NULL)
        p11n_key_free(key);
    close(fds[0]);
    bench_child_stop(pid);
    return rc;
}

/* ---- TLS 1.3, pinned certificates ---- */

/* One connection of the TLS server or client, non-blocking. */
struct tls_conn {
    int fd;
    SSL *ssl;
    int shaken;   /* 1: handshake complete (the server then writes one
                   * byte), 2: the server wrote it */
};

static void tls_conn_close(struct tls_conn *c, int abort)
{
    SSL_free(c->ssl);
    if (c->fd >= 0) {
        if (abort)
            bench_close_abort(c->fd);
        else
            close(c->fd);
    }
    c->ssl = NULL;
    c->fd = -1;
    c->shaken = 0;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 ? 0 : -1;
}

/* Advance one connection: the handshake, then the server's byte (server)
 * or reading it (client). 1 when the connection is done, 0 while it
 * waits (*events what for), -1 on failure. */
static int tls_step(struct tls_conn *c, int server, short *events)
{
    int r, e;
    uint8_t b;
    if (!c->shaken) {
        r = server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
        if (r == 1)
            c->shaken = 1;
    }
    if (c->shaken)
        r = server ? SSL_write(c->ssl, "k", 1) : SSL_read(c->ssl, &b, 1);
    if (c->shaken && r == 1)
        return 1;
    e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return -1;
    *events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
    return 0;
}

static int tls_conn_open(struct tls_conn *c, SSL_CTX *ctx, int fd)
{
    c->fd = fd;
    c->shaken = 0;
    c->ssl = fd >= 0 && set_nonblock(fd) == 0 ? SSL_new(ctx) : NULL;
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        tls_conn_close(c, 1);
        return -1;
    }
    return 0;
}

struct tls_cap_server {
    SSL_CTX *ctx;
    int lfd;
};

/* The server's step: once its byte is written it waits for the client
 * to close first (closing with the client's last bytes unread could
 * reset the connection before the byte is read). */
static void tls_serve_step(struct tls_conn *c, short *ev)
{
    int r = c->shaken == 2 ? -1 : tls_step(c, 1, ev);
    if (r > 0) {
        c->shaken = 2;
        *ev = POLLIN;
    } else if (r < 0) {
        tls_conn_close(c, 0);
    }
}

#define TLS_CAP_SLOTS (4 * CAP_INFLIGHT)

/* Non-blocking TLS server in one process: poll over the listener and
 * every connection in progress, as a TLS server on one core runs. */
static int tls_cap_serve(void *arg)
{
    struct tls_cap_server *s = arg;
    static struct tls_conn conns[TLS_CAP_SLOTS];
    struct pollfd pf[TLS_CAP_SLOTS + 1];
    short ev[TLS_CAP_SLOTS];

    pin_to_one_cpu();
    if (set_nonblock(s->lfd) != 0)
        return -1;
    for (int i = 0; i < TLS_CAP_SLOTS; i++) {
        conns[i].fd = -1;
        ev[i] = 0;
    }
    for (;;) {
        pf[0] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
        for (int i = 0; i < TLS_CAP_SLOTS; i++)
            pf[i + 1] = (struct pollfd){ .fd = conns[i].fd, .events = ev[i] };
        if (poll(pf, TLS_CAP_SLOTS + 1, -1) < 0 && errno != EINTR)
            return -1;
        for (int i = 0; i < TLS_CAP_SLOTS; i++) {
            if (conns[i].fd < 0 || pf[i + 1].revents == 0)
                continue;
            tls_serve_step(&conns[i], &ev[i]);
        }
        for (int i = 0; i < TLS_CAP_SLOTS && (pf[0].revents & POLLIN); i++) {
            if (conns[i].fd >= 0)
                continue;
            int fd = accept(s->lfd, NULL, NULL);
            if (fd < 0)
                break;
            if (tls_conn_open(&conns[i], s->ctx, fd) == 0)
                tls_serve_step(&conns[i], &ev[i]);
        }
    }
}

/* A non-blocking connect to the server's port, TCP_NODELAY set. */
static int tls_cap_dial(SSL_CTX *ctx, uint16_t port, struct tls_conn *c, short *ev)
{
    if (tls_conn_open(c, ctx, bench_connect(port)) != 0)
        return -1;
    return tls_step(c, 0, ev) < 0 ? -1 : 0;
}

static int tls_cap_rep(const bench_opts *o, SSL_CTX *ctx, uint16_t port, struct cap_span *m)
{
    struct tls_conn conns[CAP_INFLIGHT];
    struct pollfd pf[CAP_INFLIGHT];
    short ev[CAP_INFLIGHT];
    double t0 = bench_now(), t, warm = -1;
    size_t done = 0, counted = 0, base = 0;
    int rc = -1;

    for (int i = 0; i < CAP_INFLIGHT; i++)
        conns[i] = (struct tls_conn){ .fd = -1 };
    for (int i = 0; i < CAP_INFLIGHT; i++)
        if (tls_cap_dial(ctx, port, &conns[i], &ev[i]) != 0)
            goto done;
    while ((t = bench_now() - t0) < cap_end(warm, o)) {
        if (warm < 0 && done >= CAP_INFLIGHT) {
            warm = t;
            base = done;
            span_start(m);
        }
        counted = done - base;
        if (warm < 0 && t > CAP_GRACE_S)
            goto done;
        for (int i = 0; i < CAP_INFLIGHT; i++)
            pf[i] = (struct pollfd){ .fd = conns[i].fd, .events = ev[i] };
        if (poll(pf, CAP_INFLIGHT, 100) < 0 && errno != EINTR)
            goto done;
        for (int i = 0; i < CAP_INFLIGHT; i++) {
            if (conns[i].fd < 0 || pf[i].revents == 0)
                continue;
            int r = tls_step(&conns[i], 0, &ev[i]);
            if (r < 0)
                goto done;
            if (r == 0)
                continue;
            done++;
            tls_conn_close(&conns[i], 1);
            if (tls_cap_dial(ctx, port, &conns[i], &ev[i]) != 0)
                goto done;
        }
    }
    span_end(m, counted);
    rc = 0;
done:
    for (int i = 0; i < CAP_INFLIGHT; i++)
        if (conns[i].fd >= 0)
            tls_conn_close(&conns[i], 1);
    return rc;
}

int bench_tls_capacity(const bench_opts *o, int per_cpu, bench_stat *out)
{
    SSL_CTX *sctx = NULL, *cctx = NULL;
    struct tls_cap_server srv;
    uint16_t port;
    pid_t pid = -1;
    struct cap_span m = { .cpu0 = -1 };
    int rc = -1;

    if (bench_tls_pinned_ctxs((void **)&sctx, (void **)&cctx) != 0)
        return -1;
    srv.ctx = sctx;
    srv.lfd = bench_listen(&port, 4 * CAP_INFLIGHT);
    if (srv.lfd < 0)
        goto done;
    pid = m.server = bench_fork(tls_cap_serve, &srv);
    if (pid < 0 || tls_cap_rep(o, cctx, port, &m) != 0)
        goto done;
    rc = span_rate(&m, per_cpu, out);
done:
    if (srv.lfd >= 0)
        close(srv.lfd);
    bench_child_stop(pid);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    return rc;
}
