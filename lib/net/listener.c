/*
 * Listening sockets. Accepted sockets become connections in the
 * handshake state (conn.c); the listener keeps the accept-side policy:
 * the pattern, the key, and which initiators may get in.
 */
#define _GNU_SOURCE /* accept4 */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "log.h"

/* Accepting more than this per wake-up would let a connection flood
 * starve established connections of loop time. */
#define ACCEPT_BATCH 32

/* Out of descriptors or memory, the pending connection stays in the
 * backlog and poll() reports it again at once: without a pause the loop
 * would spin, logging one line per turn. */
#define ACCEPT_PAUSE_MS 100

/* Timers a listener holds: the accept pause and the refusal summary. */
#define LISTENER_TIMERS 2

static void on_resume(void *obj)
{
    p11n_listener *l = obj;
    p11n_io_set(l->ctx, l->fd, POLLIN);
}

static void accept_failed(p11n_listener *l, int err)
{
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == ECONNABORTED)
        return;
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        p11n_log(l->ctx, P11N_LOG_ERROR, "accept on %s: %s", l->addr, strerror(err));
        return;
    }
    p11n_log(l->ctx, P11N_LOG_ERROR, "accept on %s: %s; not accepting for %d ms", l->addr,
        strerror(err), ACCEPT_PAUSE_MS);
    p11n_io_set(l->ctx, l->fd, 0);
    p11n_timer_arm(l->ctx, &l->pause, l->ctx->now + ACCEPT_PAUSE_MS);
}

static void on_accept(void *obj, int lfd, short revents)
{
    (void)lfd;
    p11n_listener *l = obj;
    (void)revents;
    /* Admitting a connection may evict another, whose `closed` callback
     * may close this listener: the reference keeps it alive until the
     * loop below is done with it. */
    l->refs++;
    for (int i = 0; i < ACCEPT_BATCH && !l->closed; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            accept_failed(l, errno);
            break;
        }
        /* Errors are logged there; the listener goes on. */
        (void)p11n_conn_accepted(l, fd, (const struct sockaddr *)&ss);
    }
    p11n_listener_unref(l);
}

/* Keep the accepted identifiers, not their keys: each handshake looks
 * them up in the store (trust.c). Checked now so that a typo fails here
 * rather than as refused handshakes. */
static int load_ids(p11n_listener *l, const p11n_listen_options *o)
{
    p11n_ctx *ctx = l->ctx;
    size_t n = o->npeers;
    if (n == 0) {
        if (!l->ch->wire->responder_chooses)
            return P11N_OK;
        if (ctx->npeers == 0)
            return P11N_ERR_INVALID_ARG;  /* KK: no candidate at all */
        return ctx->npeers > P11N_MAX_KK_CANDIDATES ? P11N_ERR_LIMIT : P11N_OK;
    }
    if (l->ch->wire->responder_chooses && n > P11N_MAX_KK_CANDIDATES)
        return P11N_ERR_LIMIT;
    l->ids = calloc(n, sizeof(*l->ids));
    if (l->ids == NULL)
        return P11N_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (o->peers[i] == NULL)
            return P11N_ERR_INVALID_ARG;
        const p11n_peer_entry *e = p11n_peer_by_id(ctx, o->peers[i]);
        if (e == NULL) {
            p11n_log(ctx, P11N_LOG_ERROR, "listen: peer '%s' is not in the peer store",
                o->peers[i]);
            return P11N_ERR_UNKNOWN_PEER;
        }
        memcpy(l->ids[i], e->id, sizeof(l->ids[i]));
    }
    l->nids = n;
    return P11N_OK;
}

static int parse_ip(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len = sizeof(*s4);
        return P11N_OK;
    }
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof(*s6);
        return P11N_OK;
    }
    return P11N_ERR_INVALID_ARG;
}

static void set_bound(p11n_listener *l, const struct sockaddr_storage *ss)
{
    p11n_addr_text((const struct sockaddr *)ss, l->addr);
    l->port = ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                              : ((const struct sockaddr_in *)ss)->sin_port);
}

static int open_socket(p11n_listener *l, const struct sockaddr_storage *ss, socklen_t len)
{
    p11n_ctx *ctx = l->ctx;
    char where[P11N_ADDRSTR];
    p11n_addr_text((const struct sockaddr *)ss, where);
    l->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on %s: socket: %s", where, strerror(errno));
        return P11N_ERR_IO;
    }
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* "::" means IPv6 only; listen on "0.0.0.0" too for both families. */
    if (ss->ss_family == AF_INET6)
        setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(l->fd, (const struct sockaddr *)ss, len) < 0) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on %s: bind: %s", where, strerror(errno));
        return P11N_ERR_IO;
    }
    if (listen(l->fd, SOMAXCONN) < 0) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on %s: %s", where, strerror(errno));
        return P11N_ERR_IO;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (getsockname(l->fd, (struct sockaddr *)&bound, &blen) < 0) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on %s: getsockname: %s", where, strerror(errno));
        return P11N_ERR_IO;
    }
    set_bound(l, &bound);
    return P11N_OK;
}

static void listener_discard(p11n_listener *l);

/* Check the options and build the listener without its socket.
 * Errors: INVALID_ARG, NOMEM, UNKNOWN_PEER, LIMIT. */
static int listener_new(p11n_ctx *ctx, const p11n_listen_options *opts, p11n_listener **out)
{
    p11n_listen_options copy;
    if (opts == NULL || p11n_options_copy(&copy, sizeof(copy), opts) != P11N_OK)
        return P11N_ERR_INVALID_ARG;
    opts = &copy;
    if (ctx == NULL || opts->ch.key == NULL || (opts->peers == NULL && opts->npeers > 0)
        || (opts->ch.prologue == NULL && opts->ch.prologue_len > 0))
        return P11N_ERR_INVALID_ARG;
    if (p11n_conn_layer_attach(ctx) != P11N_OK
        || p11n_timers_reserve(ctx, LISTENER_TIMERS) != P11N_OK)
        return P11N_ERR_NOMEM;
    p11n_listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        p11n_timers_release(ctx, LISTENER_TIMERS);
        return P11N_ERR_NOMEM;
    }
    l->ctx = ctx;
    l->fd = -1;
    p11n_timer_init(&l->pause, on_resume, l);
    p11n_admit_listener_init(l);
    l->max_handshakes = opts->max_handshakes ? opts->max_handshakes : ctx->opt.max_handshakes;
    l->max_established = opts->max_established;
    int rc = p11n_channel_new(&opts->ch, &l->ch);
    if (rc == P11N_OK)
        rc = load_ids(l, opts);
    if (rc != P11N_OK) {
        listener_discard(l);
        return rc;
    }
    *out = l;
    return P11N_OK;
}

/* Undo listener_new (and close l->fd when set). */
static void listener_discard(p11n_listener *l)
{
    if (l->fd >= 0)
        close(l->fd);
    free(l->ids);
    p11n_channel_unref(l->ch);
    p11n_timers_release(l->ctx, LISTENER_TIMERS);
    free(l);
}

/* The socket is open: watch it and announce. Errors: NOMEM (the caller
 * discards the listener). */
static int listener_start(p11n_listener *l)
{
    p11n_ctx *ctx = l->ctx;
    int rc = p11n_io_add(ctx, l->fd, POLLIN, on_accept, l);
    if (rc != P11N_OK)
        return rc;
    l->next = ctx->cl->listeners;
    ctx->cl->listeners = l;
    if (l->nids == 0)
        p11n_log_ev(ctx, P11N_LOG_INFO, "listening", 0,
            "listening on %s (%s, accepting any peer in the store)", l->addr,
            l->ch->wire->name);
    else
        p11n_log_ev(ctx, P11N_LOG_INFO, "listening", 0, "listening on %s (%s, %zu accepted "
            "peer%s)", l->addr, l->ch->wire->name, l->nids, l->nids == 1 ? "" : "s");
    p11n_log_key_warning(ctx, l->ch->key);
    return P11N_OK;
}

int p11n_listen(p11n_ctx *ctx, const char *ip, uint16_t port, const p11n_listen_options *opts,
    p11n_listener **out)
{
    if (out != NULL)
        *out = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (ip == NULL || out == NULL || parse_ip(ip, port, &ss, &sslen) != P11N_OK)
        return P11N_ERR_INVALID_ARG;
    p11n_listener *l;
    int rc = listener_new(ctx, opts, &l);
    if (rc != P11N_OK)
        return rc;
    if ((rc = open_socket(l, &ss, sslen)) != P11N_OK || (rc = listener_start(l)) != P11N_OK) {
        listener_discard(l);
        return rc;
    }
    *out = l;
    return P11N_OK;
}

/* A socket someone else bound (socket activation): a listening TCP
 * stream socket, or it is refused before anything changes. */
static int adopt_check(p11n_ctx *ctx, int fd, struct sockaddr_storage *ss)
{
    int type = 0, acc = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on descriptor %d: %s", fd, strerror(errno));
        return P11N_ERR_INVALID_ARG;
    }
    len = sizeof(acc);
    if (type != SOCK_STREAM || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0
        || !acc) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on descriptor %d: not a listening stream socket",
            fd);
        return P11N_ERR_INVALID_ARG;
    }
    len = sizeof(*ss);
    if (getsockname(fd, (struct sockaddr *)ss, &len) < 0
        || (ss->ss_family != AF_INET && ss->ss_family != AF_INET6)) {
        p11n_log(ctx, P11N_LOG_ERROR, "listen on descriptor %d: not an IPv4 or IPv6 socket", fd);
        return P11N_ERR_INVALID_ARG;
    }
    return P11N_OK;
}

int p11n_listen_fd(p11n_ctx *ctx, int fd, const p11n_listen_options *opts, p11n_listener **out)
{
    if (out != NULL)
        *out = NULL;
    if (ctx == NULL || fd < 0 || out == NULL)
        return P11N_ERR_INVALID_ARG;
    struct sockaddr_storage ss;
    int rc = adopt_check(ctx, fd, &ss);
    if (rc != P11N_OK)
        return rc;
    p11n_listener *l;
    if ((rc = listener_new(ctx, opts, &l)) != P11N_OK)
        return rc;
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0
        || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) {
        listener_discard(l);
        return P11N_ERR_IO;
    }
    l->fd = fd;
    set_bound(l, &ss);
    if ((rc = listener_start(l)) != P11N_OK) {
        /* Not ours on failure: give it back as it came. */
        fcntl(fd, F_SETFL, fl);
        fcntl(fd, F_SETFD, fdfl);
        l->fd = -1;
        listener_discard(l);
        return rc;
    }
    *out = l;
    return P11N_OK;
}

uint16_t p11n_listener_port(const p11n_listener *l)
{
    return l != NULL ? l->port : 0;
}

/* Unlink and free; connections still referring to it keep it alive
 * (their handshake reads its accepted identifiers) until they are freed. */
void p11n_listener_free(p11n_listener *l)
{
    p11n_ctx *ctx = l->ctx;
    if (!l->closed) {
        l->closed = 1;
        for (p11n_listener **pp = &ctx->cl->listeners; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == l) {
                *pp = l->next;
                break;
            }
        }
        p11n_io_del(ctx, l->fd);
        close(l->fd);
        l->fd = -1;
        p11n_timer_cancel(ctx, &l->pause);
        p11n_admit_listener_flush(l);
        p11n_timers_release(ctx, LISTENER_TIMERS);
    }
    if (l->refs > 0)
        return;
    free(l->ids);
    p11n_channel_unref(l->ch);
    free(l);
}

void p11n_listener_unref(p11n_listener *l)
{
    if (--l->refs == 0 && l->closed)
        p11n_listener_free(l);
}

void p11n_listener_close(p11n_listener *l)
{
    if (l == NULL || l->closed)
        return;
    p11n_log_ev(l->ctx, P11N_LOG_INFO, "listener-closed", 0, "listener %s closed", l->addr);
    p11n_listener_free(l);
}
