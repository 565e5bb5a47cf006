/*
 * The dialer (dialer.h): one outgoing attempt as a small state machine
 *
 *   START -> RESOLVING -> CONNECTING (each address in turn) -> (PROXY) -> done
 *
 * with one timer for the step in progress. The proxy phase is the
 * sans-I/O SOCKS5 client (socks/socks5.h) fed from the socket; the
 * target's name goes to the proxy unresolved, and the client state,
 * which holds the credentials until they are sent, is wiped when the
 * attempt ends either way. Its requests are sent straight from that
 * state, so no copy of a password lands in any other buffer.
 */
#include "dialer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "log.h"
#include "secure.h"
#include "socks5.h"
#include "tcpopt.h"

/* Replies are at most P11N_SOCKS5_IN_MAX bytes; a small read keeps the
 * target's first bytes (if any) from being pulled in with them. */
#define PROXY_READ 64
#define TEXT_LEN 240

enum dial_phase { D_START, D_RESOLVING, D_CONNECTING, D_PROXY };

struct p11n_dialer {
    p11n_ctx *ctx;
    char who[32];
    const char *host;             /* borrowed */
    uint16_t port;
    const p11n_proxy *proxy;      /* borrowed; NULL: direct */
    p11n_dial_fn fn;
    void *arg;
    enum dial_phase phase;
    p11n_timer timer;
    int proxy_connecting;         /* the proxy phase's timer is the CONNECT reply's */
    p11n_resolve_req *req;
    struct sockaddr_storage addrs[P11N_MAX_ADDRS];
    size_t naddrs, addr_i;
    int fd;
    int last_err;                 /* errno of the last address that failed */
    char addr[P11N_ADDRSTR];      /* the address being tried */
    p11n_socks5 socks;            /* D_PROXY */
};

static void try_next_address(p11n_dialer *d);

/* What is dialled: the proxy, or the target itself. */
static const char *dial_host(const p11n_dialer *d)
{
    return d->proxy != NULL ? d->proxy->host : d->host;
}

static uint16_t dial_port(const p11n_dialer *d)
{
    return d->proxy != NULL ? d->proxy->port : d->port;
}

static void close_socket(p11n_dialer *d)
{
    if (d->fd < 0)
        return;
    p11n_io_del(d->ctx, d->fd);
    close(d->fd);
    d->fd = -1;
}

static void dialer_free(p11n_dialer *d)
{
    close_socket(d);
    p11n_resolve_cancel(d->req);
    p11n_timer_cancel(d->ctx, &d->timer);
    p11n_timers_release(d->ctx, 1);
    p11n_socks5_clear(&d->socks);
    free(d);
}

/* The attempt is over: hand the socket (or the reason) to the caller,
 * the dialer gone first so that the callback may start another. */
static void finish(p11n_dialer *d, int rc, const char *text)
{
    p11n_dial_fn fn = d->fn;
    void *arg = d->arg;
    char addr[P11N_ADDRSTR];
    memcpy(addr, d->addr, sizeof(addr));
    int fd = -1;
    if (rc == P11N_OK) {
        p11n_io_del(d->ctx, d->fd);
        fd = d->fd;
        d->fd = -1;
    }
    dialer_free(d);
    fn(arg, rc, text, fd, addr);
}

void p11n_dial_cancel(p11n_dialer *d)
{
    if (d != NULL)
        dialer_free(d);
}

/* ---- the proxy phase ---- */

static void proxy_fail(p11n_dialer *d, int rc, const char *what)
{
    char text[2 * TEXT_LEN];
    snprintf(text, sizeof(text), "SOCKS5 proxy %s:%u %s: %s", d->proxy->host, d->proxy->port,
        what, p11n_strerror(rc));
    finish(d, rc, text);
}

static void proxy_lost(p11n_dialer *d, int err)
{
    char text[TEXT_LEN];
    snprintf(text, sizeof(text), "SOCKS5 proxy %s:%u: connection lost %s: %s", d->proxy->host,
        d->proxy->port, p11n_socks5_phase_text(&d->socks), strerror(err));
    finish(d, err == ECONNRESET || err == EPIPE ? P11N_ERR_RESET : P11N_ERR_IO, text);
}

/* Send what the client wants to say; wait for POLLOUT for the rest.
 * Returns -1 when the attempt ended. */
static int proxy_send(p11n_dialer *d)
{
    const uint8_t *p;
    size_t len;
    p11n_socks5_output(&d->socks, &p, &len);
    while (len > 0) {
        ssize_t n = send(d->fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            proxy_lost(d, errno);
            return -1;
        }
        p11n_socks5_consumed(&d->socks, (size_t)n);  /* wipes what was sent */
        p11n_socks5_output(&d->socks, &p, &len);
    }
    p11n_io_set(d->ctx, d->fd, (short)(POLLIN | (len > 0 ? POLLOUT : 0)));
    return 0;
}

/* The proxy phase is a half-open connection of ours. The proxy's own
 * answers (method selection, authentication) get the short deadline of a
 * first act (act1_timeout_ms): a proxy that accepts and then says nothing
 * is cut off fast. The CONNECT reply waits for the proxy to reach the
 * target (through Tor: a circuit, often seconds), so it gets
 * connect_timeout_ms, re-armed when the request goes out. Neither is
 * longer than connect_timeout_ms. */
static unsigned proxy_deadline_ms(const p11n_ctx *ctx, int phase, const char **option)
{
    if (phase == P11N_SOCKS5_CONNECT || ctx->opt.act1_timeout_ms > ctx->opt.connect_timeout_ms) {
        *option = "connect_timeout_ms";
        return ctx->opt.connect_timeout_ms;
    }
    *option = "act1_timeout_ms";
    return ctx->opt.act1_timeout_ms;
}

/* Arm the deadline of the phase the negotiation is in, once per phase. */
static void proxy_arm(p11n_dialer *d)
{
    int phase = p11n_socks5_phase(&d->socks);
    int connect = phase == P11N_SOCKS5_CONNECT;
    if (d->timer.slot != 0 && connect == d->proxy_connecting)
        return;
    d->proxy_connecting = connect;
    const char *option;
    p11n_timer_arm(d->ctx, &d->timer, d->ctx->now + proxy_deadline_ms(d->ctx, phase, &option));
}

static void proxy_begin(p11n_dialer *d)
{
    p11n_ctx *ctx = d->ctx;
    d->phase = D_PROXY;
    int rc = p11n_socks5_init(&d->socks, d->host, d->port, d->proxy->user, d->proxy->pass);
    if (rc != P11N_OK) {
        proxy_fail(d, rc, "request for the target refused before sending");
        return;
    }
    d->proxy_connecting = 0;
    p11n_timer_cancel(ctx, &d->timer);
    proxy_arm(d);
    p11n_log(ctx, P11N_LOG_DEBUG, "%s: SOCKS5 negotiation with %s for %s:%u%s", d->who, d->addr,
        d->host, d->port, d->proxy->user ? " (username/password)" : "");
    (void)proxy_send(d);
}

/* The tunnel is open once the reply is in; we speak first in every
 * pattern (we are the initiator), so bytes after it mean the target is
 * not a p11noise responder. */
static void proxy_read(p11n_dialer *d)
{
    uint8_t buf[PROXY_READ];
    ssize_t n = recv(d->fd, buf, sizeof(buf), 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            proxy_lost(d, errno);
        return;
    }
    if (n == 0) {
        char what[120];
        snprintf(what, sizeof(what), "closed the connection %s",
            p11n_socks5_phase_text(&d->socks));
        proxy_fail(d, p11n_socks5_eof(&d->socks), what);
        return;
    }
    size_t used = 0;
    int rc = p11n_socks5_feed(&d->socks, buf, (size_t)n, &used);
    if (rc < 0) {
        proxy_fail(d, rc, "refused the tunnel");
        return;
    }
    if (rc == 0) {
        proxy_arm(d);
        (void)proxy_send(d);
        return;
    }
    if (used < (size_t)n) {
        proxy_fail(d, P11N_ERR_SOCKS_MALFORMED, "passed data from the target before the handshake");
        return;
    }
    char bound[80] = "?";
    (void)p11n_socks5_bound_text(&d->socks, bound, sizeof(bound));
    p11n_log(d->ctx, P11N_LOG_INFO, "%s: SOCKS5 tunnel through %s to %s:%u open (bound %s)",
        d->who, d->addr, d->host, d->port, bound);
    finish(d, P11N_OK, NULL);
}

/* ---- connecting ---- */

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void connected(p11n_dialer *d)
{
    p11n_timer_cancel(d->ctx, &d->timer);
    p11n_log(d->ctx, P11N_LOG_INFO, "%s connected to %s%s", d->who,
        d->proxy ? "the SOCKS5 proxy at " : "", d->addr);
    if (d->proxy != NULL)
        proxy_begin(d);
    else
        finish(d, P11N_OK, NULL);
}

static void connect_done(p11n_dialer *d)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) {
        connected(d);
        return;
    }
    p11n_log(d->ctx, P11N_LOG_INFO, "%s: connect to %s: %s", d->who, d->addr, strerror(err));
    close_socket(d);
    d->last_err = err;
    try_next_address(d);
}

static void on_io(void *obj, int fd, short revents)
{
    (void)fd;
    p11n_dialer *d = obj;
    if (d->phase == D_CONNECTING) {
        connect_done(d);
        return;
    }
    if ((revents & POLLOUT) && proxy_send(d) != 0)
        return;
    if (revents & (POLLIN | POLLHUP | POLLERR))
        proxy_read(d);
}

/* Open a socket and start connecting to one address. Returns 0 when
 * under way (or done), -1 to go on with the next address. */
static int try_address(p11n_dialer *d, const struct sockaddr_storage *ss)
{
    p11n_ctx *ctx = d->ctx;
    p11n_addr_text((const struct sockaddr *)ss, d->addr);
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        d->last_err = errno;
        p11n_log(ctx, P11N_LOG_INFO, "%s: socket for %s: %s", d->who, d->addr, strerror(errno));
        return -1;
    }
    (void)p11n_tcp_setup(ctx, fd);
    int r = connect(fd, (const struct sockaddr *)ss, sa_len(ss));
    if (r < 0 && errno != EINPROGRESS) {
        d->last_err = errno;
        p11n_log(ctx, P11N_LOG_INFO, "%s: connect to %s: %s", d->who, d->addr, strerror(errno));
        close(fd);
        return -1;
    }
    if (p11n_io_add(ctx, fd, POLLOUT, on_io, d) != P11N_OK) {
        close(fd);
        finish(d, P11N_ERR_NOMEM, "out of memory");
        return 0;
    }
    d->fd = fd;
    d->phase = D_CONNECTING;
    p11n_log(ctx, P11N_LOG_DEBUG, "%s trying %s", d->who, d->addr);
    if (r == 0)
        connected(d);
    else
        p11n_timer_arm(ctx, &d->timer, ctx->now + ctx->opt.connect_timeout_ms);
    return 0;
}

static void try_next_address(p11n_dialer *d)
{
    while (d->addr_i < d->naddrs)
        if (try_address(d, &d->addrs[d->addr_i++]) == 0)
            return;
    char text[TEXT_LEN];
    snprintf(text, sizeof(text), "every address of %s%s:%u failed (last: %s)",
        d->proxy ? "the SOCKS5 proxy " : "", dial_host(d), dial_port(d),
        d->last_err ? strerror(d->last_err) : "timed out");
    finish(d, d->proxy ? P11N_ERR_SOCKS_UNREACHABLE : P11N_ERR_CONNECT, text);
}

/* ---- resolving ---- */

static void log_addresses(const p11n_dialer *d)
{
    char list[P11N_ADDRSTR * 4] = "";
    size_t used = 0;
    for (size_t i = 0; i < d->naddrs && i < 4; i++) {
        char a[P11N_ADDRSTR];
        p11n_addr_text((const struct sockaddr *)&d->addrs[i], a);
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? " " : "", a);
        if (used >= sizeof(list))
            break;
    }
    char via[P11N_ADDRSTR + 40] = "direct";
    if (d->proxy != NULL)
        snprintf(via, sizeof(via), "via SOCKS5 proxy %s:%u", d->proxy->host, d->proxy->port);
    p11n_log(d->ctx, P11N_LOG_INFO, "%s to %s:%u (%s): %zu address%s%s: %s%s", d->who, d->host,
        d->port, via, d->naddrs, d->naddrs == 1 ? "" : "es", d->proxy ? " of the proxy" : "",
        list, d->naddrs > 4 ? " ..." : "");
}

static void resolved(void *arg, int rc, const char *text, const struct sockaddr_storage *addrs,
    size_t n)
{
    p11n_dialer *d = arg;
    d->req = NULL;
    p11n_timer_cancel(d->ctx, &d->timer);
    if (rc != P11N_OK || n == 0) {
        char t[TEXT_LEN];
        snprintf(t, sizeof(t), "cannot resolve %s%s: %s", d->proxy ? "the proxy " : "",
            dial_host(d), text ? text : "no address");
        finish(d, d->proxy ? P11N_ERR_SOCKS_UNREACHABLE : P11N_ERR_RESOLVE, t);
        return;
    }
    d->naddrs = n < P11N_MAX_ADDRS ? n : P11N_MAX_ADDRS;
    memcpy(d->addrs, addrs, d->naddrs * sizeof(*addrs));
    d->addr_i = 0;
    if (p11n_log_on(d->ctx, P11N_LOG_INFO))
        log_addresses(d);
    try_next_address(d);
}

/* A numeric address skips the resolver. */
static int numeric(const char *host, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        return 1;
    }
    return 0;
}

static void begin(p11n_dialer *d)
{
    p11n_ctx *ctx = d->ctx;
    d->phase = D_RESOLVING;
    struct sockaddr_storage ss;
    if (numeric(dial_host(d), dial_port(d), &ss)) {
        resolved(d, P11N_OK, NULL, &ss, 1);
        return;
    }
    p11n_timer_arm(ctx, &d->timer, ctx->now + ctx->opt.connect_timeout_ms);
    p11n_log(ctx, P11N_LOG_DEBUG, "%s resolving %s", d->who, dial_host(d));
    /* The answer may come before this returns (hosts file); d may be
     * gone then, so nothing follows a success. */
    int rc = p11n_resolve_start(ctx, dial_host(d), dial_port(d), resolved, d, &d->req);
    if (rc != P11N_OK)
        finish(d, rc, "cannot start resolving the host name");
}

/* The proxy phase's deadline passed: say which answer was missing and
 * which option set the deadline. */
static void proxy_timed_out(p11n_dialer *d)
{
    const char *option;
    char text[TEXT_LEN];
    unsigned ms = proxy_deadline_ms(d->ctx, p11n_socks5_phase(&d->socks), &option);
    snprintf(text, sizeof(text), "timed out after %u ms %s (%s)", ms,
        p11n_socks5_phase_text(&d->socks), option);
    proxy_fail(d, P11N_ERR_TIMEOUT, text);
}

static void on_timer(void *obj)
{
    p11n_dialer *d = obj;
    p11n_ctx *ctx = d->ctx;
    char text[TEXT_LEN];
    switch (d->phase) {
    case D_START:
        begin(d);
        return;
    case D_RESOLVING:
        snprintf(text, sizeof(text), "resolving %s took over %u ms", dial_host(d),
            ctx->opt.connect_timeout_ms);
        finish(d, P11N_ERR_TIMEOUT, text);
        return;
    case D_CONNECTING:
        p11n_log(ctx, P11N_LOG_INFO, "%s: connect to %s: no answer in %u ms", d->who, d->addr,
            ctx->opt.connect_timeout_ms);
        d->last_err = ETIMEDOUT;
        close_socket(d);
        try_next_address(d);
        return;
    case D_PROXY:
        proxy_timed_out(d);
        return;
    }
}

int p11n_dial_start(p11n_ctx *ctx, const char *who, const char *host, uint16_t port,
    const p11n_proxy *proxy, p11n_dial_fn fn, void *arg, p11n_dialer **out)
{
    *out = NULL;
    if (p11n_timers_reserve(ctx, 1) != P11N_OK)
        return P11N_ERR_NOMEM;
    p11n_dialer *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        p11n_timers_release(ctx, 1);
        return P11N_ERR_NOMEM;
    }
    d->ctx = ctx;
    snprintf(d->who, sizeof(d->who), "%s", who);
    d->host = host;
    d->port = port;
    d->proxy = proxy != NULL && proxy->host != NULL ? proxy : NULL;
    d->fn = fn;
    d->arg = arg;
    d->fd = -1;
    d->phase = D_START;
    p11n_timer_init(&d->timer, on_timer, d);
    /* From the loop, so that fn never runs inside this call. */
    p11n_timer_arm(ctx, &d->timer, ctx->now);
    *out = d;
    return P11N_OK;
}
