/*
 * Asynchronous name resolution: one c-ares channel per context, created
 * on first use. Its sockets join the context's poll set through the
 * socket-state callback, and its retransmissions run off a loop timer
 * (ares_timeout). Nothing here blocks, and nothing here knows who
 * asked: a query is a host, a port and a callback.
 */
#include "resolve.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ares.h>

#include "log.h"

struct p11n_resolver {
    p11n_ctx *ctx;
    ares_channel ch;
    p11n_timer timer;
};

/* One query. Its owner may go away first: cancelling clears `fn` and
 * the answer is dropped when it comes. */
struct p11n_resolve_req {
    p11n_resolve_fn fn;           /* NULL: cancelled */
    void *arg;
    int starting;                 /* inside p11n_resolve_start */
    int answered;                 /* ... and the answer came already */
};

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_global_init(void)
{
    ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

static void update_timer(struct p11n_resolver *r)
{
    struct timeval tv;
    if (ares_timeout(r->ch, NULL, &tv) == NULL) {
        p11n_timer_cancel(r->ctx, &r->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
    p11n_timer_arm(r->ctx, &r->timer, r->ctx->now + ms);
}

static void on_timer(void *obj)
{
    struct p11n_resolver *r = obj;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    update_timer(r);
}

static void on_sock(void *obj, int fd, short revents)
{
    struct p11n_resolver *r = obj;
    ares_socket_t rfd = (revents & (POLLIN | POLLHUP | POLLERR)) ? fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = (revents & (POLLOUT | POLLERR)) ? fd : ARES_SOCKET_BAD;
    ares_process_fd(r->ch, rfd, wfd);
    update_timer(r);
}

/* c-ares opens, changes and closes its sockets: mirror that in the poll
 * set. */
static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct p11n_resolver *r = data;
    short ev = (short)((readable ? POLLIN : 0) | (writable ? POLLOUT : 0));
    p11n_io_del(r->ctx, fd);
    if (ev == 0)
        return;
    if (p11n_io_add(r->ctx, fd, ev, on_sock, r) != P11N_OK)
        /* The query then ends by its own timeout. */
        p11n_log(r->ctx, P11N_LOG_ERROR, "resolver: out of memory watching a socket");
}

static int resolver_get(p11n_ctx *ctx, struct p11n_resolver **out)
{
    if (ctx->resolver != NULL) {
        *out = ctx->resolver;
        return P11N_OK;
    }
    pthread_once(&ares_once, ares_global_init);
    if (ares_init_rc != ARES_SUCCESS) {
        p11n_log(ctx, P11N_LOG_ERROR, "c-ares: %s", ares_strerror(ares_init_rc));
        return P11N_ERR_RESOLVE;
    }
    struct p11n_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return P11N_ERR_NOMEM;
    if (p11n_timers_reserve(ctx, 1) != P11N_OK) {
        free(r);
        return P11N_ERR_NOMEM;
    }
    r->ctx = ctx;
    p11n_timer_init(&r->timer, on_timer, r);
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = r;
    int rc = ares_init_options(&r->ch, &o, ARES_OPT_SOCK_STATE_CB);
    if (rc != ARES_SUCCESS) {
        p11n_log(ctx, P11N_LOG_ERROR, "c-ares channel: %s", ares_strerror(rc));
        p11n_timers_release(ctx, 1);
        free(r);
        return rc == ARES_ENOMEM ? P11N_ERR_NOMEM : P11N_ERR_RESOLVE;
    }
    if (ctx->opt.dns_servers != NULL
        && (rc = ares_set_servers_ports_csv(r->ch, ctx->opt.dns_servers)) != ARES_SUCCESS) {
        p11n_log(ctx, P11N_LOG_ERROR, "name servers '%s': %s", ctx->opt.dns_servers,
            ares_strerror(rc));
        ares_destroy(r->ch);
        p11n_timers_release(ctx, 1);
        free(r);
        return rc == ARES_ENOMEM ? P11N_ERR_NOMEM : P11N_ERR_INVALID_ARG;
    }
    ctx->resolver = r;
    *out = r;
    return P11N_OK;
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct p11n_resolve_req *req = arg;
    p11n_resolve_fn fn = req->fn;
    void *fn_arg = req->arg;
    if (req->starting)
        req->answered = 1;  /* p11n_resolve_start frees it */
    else
        free(req);
    (void)timeouts;
    if (fn == NULL) {
        ares_freeaddrinfo(res);
        return;
    }
    if (status != ARES_SUCCESS || res == NULL) {
        ares_freeaddrinfo(res);
        fn(fn_arg, P11N_ERR_RESOLVE, ares_strerror(status), NULL, 0);
        return;
    }
    struct sockaddr_storage addrs[P11N_MAX_ADDRS];
    size_t n = 0;
    for (const struct ares_addrinfo_node *a = res->nodes; a != NULL && n < P11N_MAX_ADDRS;
         a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6)
            || a->ai_addrlen > sizeof(addrs[0]))
            continue;
        /* One TCP address per host address (c-ares may list several
         * socket types). */
        int dup = 0;
        for (size_t i = 0; i < n && !dup; i++)
            dup = memcmp(&addrs[i], a->ai_addr, a->ai_addrlen) == 0;
        if (dup)
            continue;
        memset(&addrs[n], 0, sizeof(addrs[n]));
        memcpy(&addrs[n], a->ai_addr, a->ai_addrlen);
        n++;
    }
    ares_freeaddrinfo(res);
    fn(fn_arg, n > 0 ? P11N_OK : P11N_ERR_RESOLVE, "no IPv4 or IPv6 address", addrs, n);
}

int p11n_resolver_open(p11n_ctx *ctx)
{
    struct p11n_resolver *r;
    return resolver_get(ctx, &r);
}

int p11n_resolve_start(p11n_ctx *ctx, const char *host, uint16_t port, p11n_resolve_fn fn,
    void *arg, p11n_resolve_req **out)
{
    *out = NULL;
    struct p11n_resolver *r;
    int rc = resolver_get(ctx, &r);
    if (rc != P11N_OK)
        return rc;
    struct p11n_resolve_req *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return P11N_ERR_NOMEM;
    req->fn = fn;
    req->arg = arg;
    req->starting = 1;
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = ARES_AI_NUMERICSERV;
    /* May answer at once (hosts file): on_answer runs before this returns. */
    ares_getaddrinfo(r->ch, host, service, &hints, on_answer, req);
    update_timer(r);
    if (req->answered) {
        free(req);
        return P11N_OK;
    }
    req->starting = 0;
    *out = req;
    return P11N_OK;
}

void p11n_resolve_cancel(p11n_resolve_req *req)
{
    if (req != NULL)
        req->fn = NULL;
}

void p11n_resolver_free(p11n_ctx *ctx)
{
    struct p11n_resolver *r = ctx->resolver;
    if (r == NULL)
        return;
    /* Pending queries end here with ARES_EDESTRUCTION; their owners
     * are gone and cancelled them, so on_answer only frees the requests. */
    ares_destroy(r->ch);
    p11n_timer_cancel(ctx, &r->timer);
    p11n_timers_release(ctx, 1);
    ctx->resolver = NULL;
    free(r);
}
