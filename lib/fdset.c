/*
 * The loop's set of watched fds, behind p11n_io_add / p11n_io_set /
 * p11n_io_del, with two backends:
 *
 *  - epoll (Linux, the default): the kernel keeps the interest list, so a
 *    wait costs in proportion to the fds that are ready, not to the fds
 *    watched (one poll() over 10,000 idle sockets costs milliseconds);
 *  - poll(): portable, and the fallback (P11N_LOOP_POLL, or P11N_LOOP=poll
 *    in the environment).
 *
 * Both are level-triggered, so a callback that leaves bytes unread is
 * called again on the next turn, whichever backend runs.
 *
 * A callback may add and remove fds while results are being dispatched,
 * and a removed fd number may be reused at once (accept, connect). Poll
 * turns a removed slot into a hole that the dispatch skips; epoll tags
 * each registration with a generation, so an event for a registration
 * that has been removed is dropped instead of reaching the fd's new
 * owner.
 */
#include "net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#ifdef P11N_HAVE_EPOLL
#include <sys/epoll.h>
#endif

/* Events taken from one epoll_wait. The rest stay ready and come with
 * the next wait (level-triggered). */
#define EPOLL_BATCH 256

int p11n_fdset_init(p11n_ctx *ctx, int backend)
{
    p11n_fdset *s = &ctx->fds;
    s->backend = backend;
    s->epfd = -1;
    if (backend != P11N_LOOP_EPOLL)
        return P11N_OK;
#ifdef P11N_HAVE_EPOLL
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0)
        return P11N_ERR_IO;
    s->ev = calloc(EPOLL_BATCH, sizeof(struct epoll_event));
    if (s->ev == NULL)
        return P11N_ERR_NOMEM;
    return P11N_OK;
#else
    return P11N_ERR_UNSUPPORTED;
#endif
}

void p11n_fdset_free(p11n_ctx *ctx)
{
    p11n_fdset *s = &ctx->fds;
    if (s->epfd >= 0)
        close(s->epfd);
    s->epfd = -1;
    free(s->ev);
    free(s->pfd);
    free(s->byfd);
    memset(s, 0, sizeof(*s));
    s->epfd = -1;
}

static p11n_io *entry(const p11n_fdset *s, int fd)
{
    if (fd < 0 || (size_t)fd >= s->capbyfd || s->byfd[fd].fn == NULL)
        return NULL;
    return &s->byfd[fd];
}

#ifdef P11N_HAVE_EPOLL
static uint32_t to_epoll(short ev)
{
    return (uint32_t)((ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0));
}

static short from_epoll(uint32_t ev)
{
    return (short)((ev & EPOLLIN ? POLLIN : 0) | (ev & EPOLLOUT ? POLLOUT : 0)
        | (ev & EPOLLERR ? POLLERR : 0) | (ev & EPOLLHUP ? POLLHUP : 0));
}

static int epoll_op(p11n_fdset *s, int op, int fd, const p11n_io *io)
{
    struct epoll_event ev = { .events = to_epoll(io->events) };
    ev.data.u64 = (uint64_t)io->gen << 32 | (uint32_t)fd;
    return epoll_ctl(s->epfd, op, fd, &ev);
}
#endif

int p11n_io_add(p11n_ctx *ctx, int fd, short events, p11n_io_fn fn, void *obj)
{
    p11n_fdset *s = &ctx->fds;
    if (fd < 0 || fn == NULL)
        return P11N_ERR_INVALID_ARG;
    if (entry(s, fd) != NULL)
        p11n_io_del(ctx, fd); /* a stale registration of a reused number */
    if ((size_t)fd >= s->capbyfd) {
        size_t cap = s->capbyfd ? s->capbyfd : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        p11n_io *b = realloc(s->byfd, cap * sizeof(*b));
        if (b == NULL)
            return P11N_ERR_NOMEM;
        memset(b + s->capbyfd, 0, (cap - s->capbyfd) * sizeof(*b));
        s->byfd = b;
        s->capbyfd = cap;
    }
    p11n_io io = { .fn = fn, .obj = obj, .events = events, .gen = ++s->gen };
    if (s->backend == P11N_LOOP_EPOLL) {
#ifdef P11N_HAVE_EPOLL
        if (epoll_op(s, EPOLL_CTL_ADD, fd, &io) != 0)
            return errno == ENOMEM || errno == ENOSPC ? P11N_ERR_NOMEM : P11N_ERR_IO;
#endif
    } else {
        if (s->nfd == s->capfd) {
            size_t cap = s->capfd ? s->capfd * 2 : 32;
            struct pollfd *p = realloc(s->pfd, cap * sizeof(*p));
            if (p == NULL)
                return P11N_ERR_NOMEM;
            s->pfd = p;
            s->capfd = cap;
        }
        s->pfd[s->nfd] = (struct pollfd){ .fd = fd, .events = events, .revents = 0 };
        io.slot = ++s->nfd;
    }
    s->byfd[fd] = io;
    s->count++;
    return P11N_OK;
}

void p11n_io_set(p11n_ctx *ctx, int fd, short events)
{
    p11n_fdset *s = &ctx->fds;
    p11n_io *io = entry(s, fd);
    /* Connections restate their events after every flush: most calls
     * change nothing and cost no system call. */
    if (io == NULL || io->events == events)
        return;
    io->events = events;
    if (s->backend == P11N_LOOP_EPOLL) {
#ifdef P11N_HAVE_EPOLL
        /* Fails only for an fd that is no longer open, whose owner is
         * about to find out from its own system calls. */
        if (epoll_op(s, EPOLL_CTL_MOD, fd, io) != 0)
            p11n_log(ctx, P11N_LOG_ERROR, "epoll_ctl(MOD, %d): %s", fd, strerror(errno));
#endif
    } else {
        s->pfd[io->slot - 1].events = events;
    }
}

void p11n_io_del(p11n_ctx *ctx, int fd)
{
    p11n_fdset *s = &ctx->fds;
    p11n_io *io = entry(s, fd);
    if (io == NULL)
        return;
    if (s->backend == P11N_LOOP_EPOLL) {
#ifdef P11N_HAVE_EPOLL
        /* ENOENT/EBADF: already closed, which removed it from the set. */
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
#endif
    } else {
        /* A hole (poll() ignores negative fds) keeps an iteration over
         * the set valid; holes are compacted between iterations. */
        struct pollfd *p = &s->pfd[io->slot - 1];
        *p = (struct pollfd){ .fd = -1 };
        s->holes++;
    }
    memset(io, 0, sizeof(*io));
    s->count--;
}

void p11n_fdset_compact(p11n_ctx *ctx)
{
    p11n_fdset *s = &ctx->fds;
    if (s->holes == 0)
        return;
    size_t j = 0;
    for (size_t i = 0; i < s->nfd; i++) {
        if (s->pfd[i].fd < 0)
            continue;
        if (i != j) {
            s->pfd[j] = s->pfd[i];
            s->byfd[s->pfd[j].fd].slot = j + 1;
        }
        j++;
    }
    s->nfd = j;
    s->holes = 0;
}

/* ---- waiting and dispatching ---- */

/* Call an fd's owner with what it still wants of `rev` (its interest may
 * have changed since the wait, e.g. reading paused by an earlier
 * callback). */
static void deliver(p11n_io *io, int fd, short rev)
{
    rev &= (short)(io->events | POLLERR | POLLHUP | POLLNVAL);
    if (rev == 0)
        return;
    /* Copied: the callback may add fds and move the table. */
    p11n_io_fn fn = io->fn;
    fn(io->obj, fd, rev);
}

#ifdef P11N_HAVE_EPOLL
static void epoll_dispatch(p11n_fdset *s)
{
    int n = s->nev;
    s->nev = 0;
    for (int i = 0; i < n; i++) {
        const struct epoll_event *e = &((const struct epoll_event *)s->ev)[i];
        int fd = (int)(uint32_t)e->data.u64;
        uint32_t gen = (uint32_t)(e->data.u64 >> 32);
        p11n_io *io = entry(s, fd);
        if (io != NULL && io->gen == gen)
            deliver(io, fd, from_epoll(e->events));
    }
}

static int epoll_collect(p11n_ctx *ctx, int timeout_ms)
{
    p11n_fdset *s = &ctx->fds;
    int r = epoll_wait(s->epfd, s->ev, EPOLL_BATCH, timeout_ms);
    if (r < 0) {
        s->nev = 0;
        if (errno == EINTR)
            return P11N_OK;
        p11n_log(ctx, P11N_LOG_ERROR, "epoll_wait: %s", strerror(errno));
        return P11N_ERR_IO;
    }
    s->nev = r;
    return P11N_OK;
}
#endif

int p11n_fdset_wait(p11n_ctx *ctx, int timeout_ms)
{
    p11n_fdset *s = &ctx->fds;
#ifdef P11N_HAVE_EPOLL
    if (s->backend == P11N_LOOP_EPOLL)
        return epoll_collect(ctx, timeout_ms);
#endif
    int r = poll(s->pfd, s->nfd, timeout_ms);
    if (r >= 0)
        return P11N_OK;
    for (size_t i = 0; i < s->nfd; i++)
        s->pfd[i].revents = 0;
    if (errno == EINTR)
        return P11N_OK;
    p11n_log(ctx, P11N_LOG_ERROR, "poll: %s", strerror(errno));
    return P11N_ERR_IO;
}

void p11n_fdset_dispatch(p11n_ctx *ctx)
{
    p11n_fdset *s = &ctx->fds;
#ifdef P11N_HAVE_EPOLL
    if (s->backend == P11N_LOOP_EPOLL) {
        epoll_dispatch(s);
        return;
    }
#endif
    /* Fds added by callbacks go past `n` and have no results yet. */
    size_t n = s->nfd;
    for (size_t i = 0; i < n; i++) {
        short rev = s->pfd[i].revents;
        int fd = s->pfd[i].fd;
        if (rev == 0 || fd < 0)
            continue;
        s->pfd[i].revents = 0;
        deliver(&s->byfd[fd], fd, rev);
    }
}

/* ---- the external loop ---- */

size_t p11n_fdset_export_count(const p11n_ctx *ctx)
{
    const p11n_fdset *s = &ctx->fds;
    return s->backend == P11N_LOOP_EPOLL ? 1 : s->nfd;
}

void p11n_fdset_export(const p11n_ctx *ctx, struct pollfd *fds)
{
    const p11n_fdset *s = &ctx->fds;
    if (s->backend == P11N_LOOP_EPOLL) {
        fds[0] = (struct pollfd){ .fd = s->epfd, .events = POLLIN };
        return;
    }
    for (size_t i = 0; i < s->nfd; i++)
        fds[i] = (struct pollfd){ .fd = s->pfd[i].fd, .events = s->pfd[i].events };
}

int p11n_fdset_import(p11n_ctx *ctx, const struct pollfd *fds, size_t n)
{
    p11n_fdset *s = &ctx->fds;
    if (s->backend == P11N_LOOP_EPOLL) {
        /* The epoll fd is readable while any watched fd is ready: fetch
         * those without waiting. */
        for (size_t i = 0; i < n; i++)
            if (fds[i].fd == s->epfd && fds[i].revents != 0)
                return p11n_fdset_wait(ctx, 0);
        return P11N_OK;
    }
    for (size_t i = 0; i < n; i++) {
        const p11n_io *io = entry(s, fds[i].fd);
        if (io != NULL && fds[i].revents != 0)
            s->pfd[io->slot - 1].revents = fds[i].revents;
    }
    return P11N_OK;
}
