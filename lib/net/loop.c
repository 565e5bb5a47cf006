/*
 * The context and its loop: a timer heap, the wake-up fd, and the
 * two ways to drive it (p11n_run* or an external loop through
 * p11n_poll_fds / p11n_process); the fds and the epoll/poll backend are
 * in fdset.c.
 *
 * One loop iteration: handle ready fds, fire expired timers, then settle:
 * deliver messages kept for resumed connections, write every queued
 * connection's bytes (one send per connection, so messages queued by
 * callbacks in the same iteration share a syscall), free connections
 * that finished. Every step costs in proportion to the fds that are
 * ready, the timers that expire and the connections with work queued,
 * not to the connections open.
 */
#include "net.h"
#include "backend.h"
#include "resolve.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "log.h"
#include "secure.h"

#ifdef P11N_HAVE_EPOLL
#include <sys/eventfd.h>
#endif

/* Above what max_unauth_token_ops holds queued (about 400 acts of one
 * key at the defaults): acts waiting for the token, which are not
 * evictable, never fill the table by themselves. */
#define DEF_MAX_HANDSHAKES 1024
#define DEF_MAX_TOKEN_OPS 256
#define DEF_WORKERS 4
#define DEF_ACT1_TIMEOUT_MS 2000
#define DEF_MAX_UNAUTH_TOKEN_OPS 512
#define DEF_MAX_ESTABLISHED 16384
#define DEF_KEEPALIVE_IDLE_S 60
#define DEF_KEEPALIVE_INTERVAL_S 10
#define DEF_KEEPALIVE_COUNT 6
#define DEF_LOG_REFUSALS_PER_S 5
#define DEF_STALL_TIMEOUT_MS 120000
#define DEF_ACT_TIMEOUT_MS 10000
#define DEF_CONNECT_TIMEOUT_MS 10000
#define DEF_HIGH_WATER (1024 * 1024)

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

/* Work settle() can do now. A token step still running is not such
 * work: its job comes back through the wake-up fd. */
static int settle_pending(const p11n_ctx *ctx)
{
    return ctx->hooks != NULL && ctx->hooks->pending(ctx);
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

/* ---- wake-up (the backend's fd) ---- */

void p11n_wake(p11n_ctx *ctx)
{
    p11n_fdset_wake(ctx);
}

/* The wake-up fd's read end is readable: empty it (a pipe may hold many
 * bytes, an eventfd one counter) and tell the fdset's owner. */
static void wakefd_ready(void *obj, int fd, short revents)
{
    p11n_fdset *s = obj;
    uint64_t buf[8];
    (void)revents;
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    s->on_wake(s->wake_obj);
}

int p11n_wakefd_open(p11n_fdset *s, p11n_wakefd *w, int eventfd_kind)
{
    w->rfd = w->wfd = -1;
#ifdef P11N_HAVE_EPOLL
    if (eventfd_kind) {
        if ((w->rfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
            return P11N_ERR_IO;
        w->wfd = w->rfd;
        return p11n_io_add(s->ctx, w->rfd, POLLIN, wakefd_ready, s);
    }
#else
    (void)eventfd_kind;
#endif
    int p[2];
    if (pipe(p) != 0)
        return P11N_ERR_IO;
    w->rfd = p[0];
    w->wfd = p[1];
    for (int i = 0; i < 2; i++)
        if (fcntl(p[i], F_SETFL, O_NONBLOCK) != 0 || fcntl(p[i], F_SETFD, FD_CLOEXEC) != 0)
            return P11N_ERR_IO;
    return p11n_io_add(s->ctx, w->rfd, POLLIN, wakefd_ready, s);
}

void p11n_wakefd_signal(const p11n_wakefd *w)
{
    /* Eight bytes, as an eventfd wants; a pipe takes them as well. EAGAIN
     * means a wake-up is already pending, so the loop will wake anyway. */
    uint64_t one = 1;
    ssize_t r = write(w->wfd, &one, sizeof(one));
    (void)r;
}

void p11n_wakefd_close(p11n_wakefd *w)
{
    if (w->wfd >= 0 && w->wfd != w->rfd)
        close(w->wfd);
    if (w->rfd >= 0)
        close(w->rfd);
    w->rfd = w->wfd = -1;
}

static void on_wake(void *obj)
{
    p11n_ctx *ctx = obj;
    p11n_worker_collect(ctx);
    p11n_post_run(ctx);
}

/* ---- context ---- */

/* The backend asked for, else P11N_LOOP from the environment, else
 * epoll where there is one. */
static int pick_backend(p11n_ctx *ctx, int asked)
{
    if (asked != P11N_LOOP_DEFAULT)
        return asked;
    const char *env = getenv("P11N_LOOP");
    if (env != NULL && strcmp(env, "poll") == 0)
        return P11N_LOOP_POLL;
    if (env != NULL && env[0] != '\0' && strcmp(env, "epoll") != 0)
        p11n_log(ctx, P11N_LOG_WARN, "P11N_LOOP=%s is neither poll nor epoll: ignored", env);
#ifdef P11N_HAVE_EPOLL
    return P11N_LOOP_EPOLL;
#else
    return P11N_LOOP_POLL;
#endif
}

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
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    if (opts != NULL && p11n_options_copy(&o, sizeof(o), opts) != P11N_OK)
        return P11N_ERR_INVALID_ARG;
    if (o.log_level < 0 || o.log_level > P11N_LOG_DEBUG || o.loop < P11N_LOOP_DEFAULT
        || o.loop > P11N_LOOP_EPOLL)
        return P11N_ERR_INVALID_ARG;
    /* Silent unless asked: a library prints nothing of its own accord. */
    if (o.log_level == 0 && o.log != NULL)
        o.log_level = P11N_LOG_INFO;
    default_to(&o.max_handshakes, DEF_MAX_HANDSHAKES);
    default_to(&o.max_token_ops, DEF_MAX_TOKEN_OPS);
    default_to(&o.workers, DEF_WORKERS);
    default_to(&o.act_timeout_ms, DEF_ACT_TIMEOUT_MS);
    default_to(&o.connect_timeout_ms, DEF_CONNECT_TIMEOUT_MS);
    default_to(&o.act1_timeout_ms, DEF_ACT1_TIMEOUT_MS);
    default_to(&o.max_unauth_token_ops, DEF_MAX_UNAUTH_TOKEN_OPS);
    /* At least one thread is kept for outgoing work whenever there are
     * two: a flood of unauthenticated acts never holds every session. */
    default_to(&o.unauth_workers, o.workers > 1 ? o.workers - 1 : 1);
    if (o.unauth_workers > o.workers)
        o.unauth_workers = o.workers;
    default_to(&o.max_established, DEF_MAX_ESTABLISHED);
    if (o.keepalive_idle_s < -1)
        return P11N_ERR_INVALID_ARG;
    if (o.keepalive_idle_s == 0)
        o.keepalive_idle_s = DEF_KEEPALIVE_IDLE_S;
    default_to(&o.keepalive_interval_s, DEF_KEEPALIVE_INTERVAL_S);
    default_to(&o.keepalive_count, DEF_KEEPALIVE_COUNT);
    default_to(&o.log_refusals_per_s, DEF_LOG_REFUSALS_PER_S);
    default_to(&o.stall_timeout_ms, DEF_STALL_TIMEOUT_MS);
    if (o.write_high_water == 0)
        o.write_high_water = DEF_HIGH_WATER;

    p11n_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return P11N_ERR_NOMEM;
    if (p11n_post_init(ctx) != P11N_OK) {
        free(ctx);
        return P11N_ERR_NOMEM;
    }
    ctx->opt = o;
    ctx->opt.token_uri = NULL;
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
    ctx->opt.loop = pick_backend(ctx, o.loop);
    if ((rc = p11n_fdset_init(ctx, ctx->opt.loop, on_wake, ctx)) != P11N_OK)
        goto fail;
    ctx->now = p11n_now_ms();
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
    /* Connections and listeners first, so that every job is orphaned;
     * then the threads stop and the jobs left free what they hold. */
    if (ctx->hooks != NULL)
        ctx->hooks->teardown(ctx);
    p11n_workers_free(ctx);
    p11n_resolver_free(ctx);
    p11n_peers_free(ctx);
    p11n_fdset_free(ctx);
    p11n_post_free(ctx);
    free(ctx->rbuf);
    free(ctx->heap);
    /* The token URI may carry pin-value. */
    if (ctx->opt.token_uri != NULL)
        p11n_wipe((char *)ctx->opt.token_uri, strlen(ctx->opt.token_uri));
    free((char *)ctx->opt.token_uri);
    free((char *)ctx->opt.dns_servers);
    p11n_proxy_clear(&ctx->proxy);
    free(ctx);
}

/* ---- driving the loop ---- */

/* Work that does not wait for fds: messages kept for resumed
 * connections, queued writes, and finished connections. Returns 1 if
 * that called the application back: its state has changed (a writer may
 * now send, a final `closed` may end its loop), so the loop must not go
 * to sleep before the application has seen it. */
static int settle(p11n_ctx *ctx)
{
    unsigned long calls = ctx->app_calls;
    if (ctx->hooks != NULL)
        ctx->hooks->settle(ctx);
    p11n_fdset_compact(ctx);
    return ctx->app_calls != calls;
}

static void dispatch(p11n_ctx *ctx)
{
    ctx->now = p11n_now_ms();
    p11n_fdset_dispatch(ctx);
    ctx->now = p11n_now_ms();
    timers_fire(ctx);
    (void)settle(ctx);
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
    int wait = settle(ctx) ? 0 : next_timeout(ctx, timeout_ms);
    int rc = p11n_fdset_wait(ctx, wait);
    if (rc != P11N_OK)
        return rc;
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
    /* Kept across a BUFFER_TOO_SMALL: the retry must still not wait. */
    ctx->called_back |= settle(ctx);
    *n = p11n_fdset_export_count(ctx);
    *timeout_ms = ctx->called_back ? 0 : next_timeout(ctx, -1);
    if (*n > cap)
        return P11N_ERR_BUFFER_TOO_SMALL;
    ctx->called_back = 0;
    p11n_fdset_export(ctx, fds);
    return P11N_OK;
}

int p11n_process(p11n_ctx *ctx, const struct pollfd *fds, size_t n)
{
    if (ctx == NULL || (fds == NULL && n > 0))
        return P11N_ERR_INVALID_ARG;
    int rc = p11n_fdset_import(ctx, fds, n);
    dispatch(ctx);
    if (take_stop(ctx))
        return P11N_ERR_SHUTDOWN;
    return rc;
}
