/*
 * The loop's set of watched fds, behind p11n_io_add / p11n_io_set /
 * p11n_io_del: the registrations by fd, and the backend that waits on
 * them behind its ops table (backend.h), one file each:
 *
 *  - epoll (loop_epoll.c; Linux, the default): the kernel keeps the
 *    interest list, so a wait costs in proportion to the fds that are
 *    ready, not to the fds watched;
 *  - poll() (loop_poll.c): portable, and the fallback (P11N_LOOP_POLL, or
 *    P11N_LOOP=poll in the environment).
 *
 * Both are level-triggered, so a callback that leaves bytes unread is
 * called again on the next turn, whichever backend runs. A callback may
 * add and remove fds while results are being dispatched, and a removed
 * fd number may be reused at once (accept, connect): each backend makes
 * sure an event for a removed registration never reaches the fd's new
 * owner.
 */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

static const struct p11n_backend_ops *backend_ops(int backend)
{
    if (backend == P11N_LOOP_POLL)
        return &p11n_backend_poll;
#ifdef P11N_HAVE_EPOLL
    if (backend == P11N_LOOP_EPOLL)
        return &p11n_backend_epoll;
#endif
    return NULL;
}

int p11n_fdset_init(p11n_ctx *ctx, int backend, p11n_timer_fn on_wake, void *obj)
{
    p11n_fdset *s = &ctx->fds;
    s->ctx = ctx;
    s->on_wake = on_wake;
    s->wake_obj = obj;
    if ((s->ops = backend_ops(backend)) == NULL)
        return P11N_ERR_UNSUPPORTED;
    return s->ops->init(s);
}

void p11n_fdset_free(p11n_ctx *ctx)
{
    p11n_fdset *s = &ctx->fds;
    if (s->ops != NULL)
        s->ops->free(s);
    free(s->byfd);
    memset(s, 0, sizeof(*s));
}

void p11n_fdset_wake(p11n_ctx *ctx)
{
    ctx->fds.ops->wake(&ctx->fds);
}

p11n_io *p11n_fdset_entry(const p11n_fdset *s, int fd)
{
    if (fd < 0 || (size_t)fd >= s->capbyfd || s->byfd[fd].fn == NULL)
        return NULL;
    return &s->byfd[fd];
}

int p11n_io_add(p11n_ctx *ctx, int fd, short events, p11n_io_fn fn, void *obj)
{
    p11n_fdset *s = &ctx->fds;
    if (fd < 0 || fn == NULL)
        return P11N_ERR_INVALID_ARG;
    if (p11n_fdset_entry(s, fd) != NULL)
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
    int rc = s->ops->add(s, fd, &io);
    if (rc != P11N_OK)
        return rc;
    s->byfd[fd] = io;
    s->count++;
    return P11N_OK;
}

void p11n_io_set(p11n_ctx *ctx, int fd, short events)
{
    p11n_fdset *s = &ctx->fds;
    p11n_io *io = p11n_fdset_entry(s, fd);
    /* Connections restate their events after every flush: most calls
     * change nothing and cost no system call. */
    if (io == NULL || io->events == events)
        return;
    io->events = events;
    s->ops->mod(s, fd, io);
}

void p11n_io_del(p11n_ctx *ctx, int fd)
{
    p11n_fdset *s = &ctx->fds;
    p11n_io *io = p11n_fdset_entry(s, fd);
    if (io == NULL)
        return;
    s->ops->del(s, fd, io);
    memset(io, 0, sizeof(*io));
    s->count--;
}

void p11n_fdset_compact(p11n_ctx *ctx)
{
    ctx->fds.ops->compact(&ctx->fds);
}

/* Call an fd's owner with what it still wants of `rev` (its interest may
 * have changed since the wait, e.g. reading paused by an earlier
 * callback). */
void p11n_fdset_deliver(p11n_io *io, int fd, short rev)
{
    rev &= (short)(io->events | POLLERR | POLLHUP | POLLNVAL);
    if (rev == 0)
        return;
    /* Copied: the callback may add fds and move the table. */
    p11n_io_fn fn = io->fn;
    fn(io->obj, fd, rev);
}

int p11n_fdset_wait(p11n_ctx *ctx, int timeout_ms)
{
    return ctx->fds.ops->wait(&ctx->fds, timeout_ms);
}

void p11n_fdset_dispatch(p11n_ctx *ctx)
{
    ctx->fds.ops->dispatch(&ctx->fds);
}

size_t p11n_fdset_export_count(const p11n_ctx *ctx)
{
    return ctx->fds.ops->export_count(&ctx->fds);
}

void p11n_fdset_export(const p11n_ctx *ctx, struct pollfd *fds)
{
    ctx->fds.ops->export_fds(&ctx->fds, fds);
}

int p11n_fdset_import(p11n_ctx *ctx, const struct pollfd *fds, size_t n)
{
    return ctx->fds.ops->import(&ctx->fds, fds, n);
}
