/*
 * The context and its poll() loop: the fd set, a timer heap, the wake-up
 * eventfd, and the two ways to drive it (p11n_run* or an external loop
 * through p11n_poll_fds / p11n_process).
 *
 * One loop iteration: handle ready fds, fire expired timers, write every
 * connection's queued bytes (one send per connection, so messages queued
 * by callbacks in the same iteration share a syscall), free connections
 * that finished.
 */
#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>

#include "log.h"

#define DEF_MAX_HANDSHAKES 256
#define DEF_MAX_TOKEN_OPS 64
#define DEF_WORKERS 2
#define DEF_ACT_TIMEOUT_MS 10000
#define DEF_CONNECT_TIMEOUT_MS 10000
#define DEF_HIGH_WATER (1024 * 1024)
#define TRIM_INTERVAL_MS 1000

uint64_t p11n_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void p11n_addr_text(const struct sockaddr *sa, char out[P11N_ADDRSTR])
{
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, P11N_ADDRSTR, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, P11N_ADDRSTR, "%s:%u", ip, ntohs(s4->sin_port));
    } else {
        snprintf(out, P11N_ADDRSTR, "(unknown address family %d)", sa->sa_family);
    }
}

/* ---- fd set ---- */

int p11n_io_add(p11n_ctx *ctx, int fd, short events, p11n_io_fn fn, void *obj)
{
    if (fd < 0)
        return P11N_ERR_INVALID_ARG;
    if ((size_t)fd >= ctx->capbyfd) {
        size_t cap = ctx->capbyfd ? ctx->capbyfd : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        size_t *b = realloc(ctx->byfd, cap * sizeof(*b));
        if (b == NULL)
            return P11N_ERR_NOMEM;
        memset(b + ctx->capbyfd, 0, (cap - ctx->capbyfd) * sizeof(*b));
        ctx->byfd = b;
        ctx->capbyfd = cap;
    }
    if (ctx->nfd == ctx->capfd) {
        size_t cap = ctx->capfd ? ctx->capfd * 2 : 32;
        struct pollfd *p = realloc(ctx->pfd, cap * sizeof(*p));
        if (p == NULL)
            return P11N_ERR_NOMEM;
        ctx->pfd = p;
        p11n_io *io = realloc(ctx->io, cap * sizeof(*io));
        if (io == NULL)
            return P11N_ERR_NOMEM;
        ctx->io = io;
        ctx->capfd = cap;
    }
    size_t i = ctx->nfd++;
    ctx->pfd[i] = (struct pollfd){ .fd = fd, .events = events, .revents = 0 };
    ctx->io[i] = (p11n_io){ .fn = fn, .obj = obj };
    ctx->byfd[fd] = i + 1;
    return P11N_OK;
}

static size_t slot_of(const p11n_ctx *ctx, int fd)
{
    if (fd < 0 || (size_t)fd >= ctx->capbyfd)
        return 0;
    return ctx->byfd[fd];
}

void p11n_io_set(p11n_ctx *ctx, int fd, short events)
{
    size_t s = slot_of(ctx, fd);
    if (s != 0)
        ctx->pfd[s - 1].events = events;
}

/* The slot becomes a hole (poll() ignores negative fds) so that an
 * iteration over the set stays valid; holes are compacted afterwards. */
void p11n_io_del(p11n_ctx *ctx, int fd)
{
    size_t s = slot_of(ctx, fd);
    if (s == 0)
        return;
    ctx->pfd[s - 1].fd = -1;
    ctx->pfd[s - 1].events = 0;
    ctx->pfd[s - 1].revents = 0;
    ctx->byfd[fd] = 0;
    ctx->holes++;
}

static void io_compact(p11n_ctx *ctx)
{
    size_t j = 0;
    for (size_t i = 0; i < ctx->nfd; i++) {
        if (ctx->pfd[i].fd < 0)
            continue;
        if (i != j) {
            ctx->pfd[j] = ctx->pfd[i];
            ctx->io[j] = ctx->io[i];
            ctx->byfd[ctx->pfd[j].fd] = j + 1;
        }
        j++;
    }
    ctx->nfd = j;
    ctx->holes = 0;
}

/* ---- timers: a binary min-heap; each timer knows its slot ---- */

void p11n_timer_init(p11n_timer *t, p11n_timer_fn fn, void *obj)
{
    *t = (p11n_timer){ .fn = fn, .obj = obj };
}

static void heap_place(p11n_ctx *ctx, size_t i, p11n_timer *t)
{
    ctx->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(p11n_ctx *ctx, size_t i)
{
    p11n_timer *t = ctx->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (ctx->heap[parent]->at <= t->at)
            break;
        heap_place(ctx, i, ctx->heap[parent]);
        i = parent;
    }
    heap_place(ctx, i, t);
}

static void heap_down(p11n_ctx *ctx, size_t i)
{
    p11n_timer *t = ctx->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= ctx->nheap)
            break;
        if (child + 1 < ctx->nheap && ctx->heap[child + 1]->at < ctx->heap[child]->at)
            child++;
        if (t->at <= ctx->heap[child]->at)
            break;
        heap_place(ctx, i, ctx->heap[child]);
        i = child;
    }
    heap_place(ctx, i, t);
}

void p11n_timer_cancel(p11n_ctx *ctx, p11n_timer *t)
{
    if (t->slot == 0)
        return;
    size_t i = t->slot - 1;
    t->slot = 0;
    ctx->nheap--;
    if (i == ctx->nheap)
        return;
    p11n_timer *moved = ctx->heap[ctx->nheap];
    heap_place(ctx, i, moved);
    heap_up(ctx, i);
    heap_down(ctx, moved->slot - 1);
}

/* Arming cannot fail: every timer that exists has a heap slot reserved
 * (p11n_timers_reserve), so error paths never need to arm-or-undo. */
void p11n_timer_arm(p11n_ctx *ctx, p11n_timer *t, uint64_t at)
{
    p11n_timer_cancel(ctx, t);
    t->at = at;
    ctx->heap[ctx->nheap] = t;
    t->slot = ++ctx->nheap;
    heap_up(ctx, ctx->nheap - 1);
}

int p11n_timers_reserve(p11n_ctx *ctx, size_t n)
{
    size_t need = ctx->ntimers + n;
    if (need > ctx->capheap) {
        size_t cap = ctx->capheap ? ctx->capheap : 64;
        while (cap < need)
            cap *= 2;
        p11n_timer **h = realloc(ctx->heap, cap * sizeof(*h));
        if (h == NULL)
            return P11N_ERR_NOMEM;
        ctx->heap = h;
        ctx->capheap = cap;
    }
    ctx->ntimers = need;
    return P11N_OK;
}

void p11n_timers_release(p11n_ctx *ctx, size_t n)
{
    ctx->ntimers -= n;
}

static void timers_fire(p11n_ctx *ctx)
{
    while (ctx->nheap > 0 && ctx->heap[0]->at <= ctx->now) {
        p11n_timer *t = ctx->heap[0];
        p11n_timer_cancel(ctx, t);
        t->fn(t->obj);
    }
}

/* Work settle() can do now. A dead connection whose worker still runs
 * is not such work: it waits for the wake-up fd, and counting it would
 * make the loop spin for as long as the token operation takes. */
static int settle_pending(const p11n_ctx *ctx)
{
    if (ctx->flushq != NULL)
        return 1;
    for (const p11n_conn *c = ctx->dead; c != NULL; c = c->next_dead)
        if (!c->job_pending)
            return 1;
    return 0;
}

static int next_timeout(const p11n_ctx *ctx, int timeout_ms)
{
    if (settle_pending(ctx))
        return 0;
    if (ctx->nheap == 0)
        return timeout_ms;
    uint64_t now = p11n_now_ms();
    uint64_t at = ctx->heap[0]->at;
    int64_t wait = at > now ? (int64_t)(at - now) : 0;
    if (wait > INT32_MAX)
        wait = INT32_MAX;
    if (timeout_ms < 0 || wait < timeout_ms)
        return (int)wait;
    return timeout_ms;
}

/* ---- wake-up fd ---- */

void p11n_wake(p11n_ctx *ctx)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    ssize_t r = write(ctx->wakefd, &one, sizeof(one));
    (void)r;
}

static void on_wake(void *obj, int fd, short revents)
{
    (void)fd;
    p11n_ctx *ctx = obj;
    uint64_t v;
    ssize_t r = read(ctx->wakefd, &v, sizeof(v));
    (void)r;
    (void)revents;
    p11n_worker_collect(ctx);
}

/* ---- context ---- */

/* Zero in an option means "the default". */
static void default_to(unsigned *v, unsigned def)
{
    if (*v == 0)
        *v = def;
}

int p11n_ctx_new(const p11n_ctx_options *opts, p11n_ctx **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    p11n_ctx_options o = { 0 };
    if (opts != NULL)
        o = *opts;
    if (o.log_level < 0 || o.log_level > P11N_LOG_DEBUG)
        return P11N_ERR_INVALID_ARG;
    if (o.log_level == 0)
        o.log_level = P11N_LOG_INFO;
    default_to(&o.max_handshakes, DEF_MAX_HANDSHAKES);
    default_to(&o.max_token_ops, DEF_MAX_TOKEN_OPS);
    default_to(&o.workers, DEF_WORKERS);
    default_to(&o.act_timeout_ms, DEF_ACT_TIMEOUT_MS);
    default_to(&o.connect_timeout_ms, DEF_CONNECT_TIMEOUT_MS);
    if (o.write_high_water == 0)
        o.write_high_water = DEF_HIGH_WATER;

    p11n_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return P11N_ERR_NOMEM;
    ctx->opt = o;
    ctx->opt.token_uri = NULL;
    ctx->wakefd = -1;
    int rc = P11N_ERR_NOMEM;
    if (o.token_uri != NULL && (ctx->opt.token_uri = strdup(o.token_uri)) == NULL)
        goto fail;
    ctx->opt.dns_servers = NULL;
    if (o.dns_servers != NULL && (ctx->opt.dns_servers = strdup(o.dns_servers)) == NULL)
        goto fail;
    ctx->opt.socks5 = NULL;
    if (o.socks5 != NULL && (rc = p11n_proxy_parse(o.socks5, &ctx->proxy)) != P11N_OK)
        goto fail;
    rc = P11N_ERR_NOMEM;
    if ((ctx->rbuf = malloc(P11N_READ_CHUNK)) == NULL)
        goto fail;
    if ((rc = p11n_timers_reserve(ctx, 1)) != P11N_OK) /* trim */
        goto fail;
    ctx->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->wakefd < 0) {
        rc = P11N_ERR_IO;
        goto fail;
    }
    if ((rc = p11n_io_add(ctx, ctx->wakefd, POLLIN, on_wake, ctx)) != P11N_OK)
        goto fail;
    ctx->now = p11n_now_ms();
    p11n_timer_init(&ctx->trim, p11n_conn_trim, ctx);
    p11n_timer_arm(ctx, &ctx->trim, ctx->now + TRIM_INTERVAL_MS);
    /* Configured name servers are checked now rather than at the first
     * connect, where a typo would look like a name that does not resolve. */
    if (ctx->opt.dns_servers != NULL && (rc = p11n_resolver_open(ctx)) != P11N_OK)
        goto fail;
    *out = ctx;
    return P11N_OK;
fail:
    p11n_ctx_free(ctx);
    return rc;
}

void p11n_ctx_free(p11n_ctx *ctx)
{
    if (ctx == NULL)
        return;
    /* Workers first: after this no job touches a connection. */
    p11n_workers_free(ctx);
    ctx->dead = NULL; /* dead connections are still on ctx->conns */
    while (ctx->conns != NULL)
        p11n_conn_free(ctx->conns);
    while (ctx->listeners != NULL)
        p11n_listener_free(ctx->listeners);
    p11n_resolver_free(ctx);
    p11n_peers_free(ctx);
    if (ctx->wakefd >= 0)
        close(ctx->wakefd);
    free(ctx->rbuf);
    free(ctx->pfd);
    free(ctx->io);
    free(ctx->byfd);
    free(ctx->heap);
    free((char *)ctx->opt.token_uri);
    free((char *)ctx->opt.dns_servers);
    p11n_proxy_clear(&ctx->proxy);
    free(ctx);
}

/* ---- driving the loop ---- */

/* Work that does not wait for fds: queued writes and finished
 * connections. */
static void settle(p11n_ctx *ctx)
{
    p11n_conn_flush_all(ctx);
    p11n_conn_free_dead(ctx);
    if (ctx->holes > 0)
        io_compact(ctx);
}

static void dispatch(p11n_ctx *ctx)
{
    ctx->now = p11n_now_ms();
    /* New fds added by callbacks go past `n` and have revents 0. */
    size_t n = ctx->nfd;
    for (size_t i = 0; i < n; i++) {
        short rev = ctx->pfd[i].revents;
        if (rev == 0 || ctx->pfd[i].fd < 0)
            continue;
        ctx->pfd[i].revents = 0;
        ctx->io[i].fn(ctx->io[i].obj, ctx->pfd[i].fd, rev);
    }
    ctx->now = p11n_now_ms();
    timers_fire(ctx);
    settle(ctx);
}

/* A stop request is reported once; the context may then be run again. */
static int take_stop(p11n_ctx *ctx)
{
    if (!ctx->stopping)
        return 0;
    ctx->stopping = 0;
    return 1;
}

int p11n_run_once(p11n_ctx *ctx, int timeout_ms)
{
    if (ctx == NULL)
        return P11N_ERR_INVALID_ARG;
    if (take_stop(ctx))
        return P11N_ERR_SHUTDOWN;
    settle(ctx);
    int wait = next_timeout(ctx, timeout_ms);
    int r = poll(ctx->pfd, ctx->nfd, wait);
    if (r < 0 && errno != EINTR) {
        p11n_log(ctx, P11N_LOG_ERROR, "poll: %s", strerror(errno));
        return P11N_ERR_IO;
    }
    if (r < 0)
        for (size_t i = 0; i < ctx->nfd; i++)
            ctx->pfd[i].revents = 0;
    dispatch(ctx);
    return take_stop(ctx) ? P11N_ERR_SHUTDOWN : P11N_OK;
}

int p11n_run(p11n_ctx *ctx)
{
    if (ctx == NULL)
        return P11N_ERR_INVALID_ARG;
    int rc;
    while ((rc = p11n_run_once(ctx, -1)) == P11N_OK)
        ;
    return rc == P11N_ERR_SHUTDOWN ? P11N_OK : rc;
}

void p11n_stop(p11n_ctx *ctx)
{
    if (ctx == NULL)
        return;
    ctx->stopping = 1;
    p11n_wake(ctx);
}

int p11n_poll_fds(p11n_ctx *ctx, struct pollfd *fds, size_t cap, size_t *n, int *timeout_ms)
{
    if (ctx == NULL || n == NULL || timeout_ms == NULL || (fds == NULL && cap > 0))
        return P11N_ERR_INVALID_ARG;
    settle(ctx);
    *n = ctx->nfd;
    if (ctx->nfd > cap)
        return P11N_ERR_BUFFER_TOO_SMALL;
    for (size_t i = 0; i < ctx->nfd; i++)
        fds[i] = (struct pollfd){ .fd = ctx->pfd[i].fd, .events = ctx->pfd[i].events };
    *timeout_ms = next_timeout(ctx, -1);
    return P11N_OK;
}

int p11n_process(p11n_ctx *ctx, const struct pollfd *fds, size_t n)
{
    if (ctx == NULL || (fds == NULL && n > 0))
        return P11N_ERR_INVALID_ARG;
    for (size_t i = 0; i < n; i++) {
        size_t s = slot_of(ctx, fds[i].fd);
        if (s != 0 && fds[i].revents != 0)
            ctx->pfd[s - 1].revents = fds[i].revents;
    }
    dispatch(ctx);
    return take_stop(ctx) ? P11N_ERR_SHUTDOWN : P11N_OK;
}
