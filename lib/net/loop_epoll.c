/*
 * The epoll backend (Linux): the kernel keeps the interest list. Each
 * registration is tagged with a generation, so an event for one that has
 * been removed (its fd number perhaps reused at once) is dropped instead
 * of reaching the fd's new owner. The wake-up fd is an eventfd. An
 * external loop polls the epoll fd alone.
 */
#define _GNU_SOURCE /* POLLRDHUP: P11N_POLL_PEER_GONE */
#include "backend.h"

#ifdef P11N_HAVE_EPOLL

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>

#include "log.h"

/* Events taken from one epoll_wait. The rest stay ready and come with
 * the next wait (level-triggered). */
#define EPOLL_BATCH 256

typedef struct epoll_be {
    int epfd;
    p11n_wakefd wake;
    struct epoll_event ev[EPOLL_BATCH];  /* the last wait's results */
    int nev;
} epoll_be;

static uint32_t to_epoll(short ev)
{
    return (uint32_t)((ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0)
        | (ev & P11N_POLL_PEER_GONE ? EPOLLRDHUP : 0));
}

static short from_epoll(uint32_t ev)
{
    return (short)((ev & EPOLLIN ? POLLIN : 0) | (ev & EPOLLOUT ? POLLOUT : 0)
        | (ev & EPOLLERR ? POLLERR : 0) | (ev & EPOLLHUP ? POLLHUP : 0)
        | (ev & EPOLLRDHUP ? P11N_POLL_PEER_GONE : 0));
}

static int epoll_op(epoll_be *b, int op, int fd, const p11n_io *io)
{
    struct epoll_event ev = { .events = to_epoll(io->events) };
    ev.data.u64 = (uint64_t)io->gen << 32 | (uint32_t)fd;
    return epoll_ctl(b->epfd, op, fd, &ev);
}

static void be_free(p11n_fdset *s)
{
    epoll_be *b = s->be;
    if (b == NULL)
        return;
    p11n_wakefd_close(&b->wake);
    if (b->epfd >= 0)
        close(b->epfd);
    free(b);
    s->be = NULL;
}

static int be_init(p11n_fdset *s)
{
    epoll_be *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return P11N_ERR_NOMEM;
    s->be = b;
    b->wake.rfd = b->wake.wfd = -1;
    if ((b->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        return P11N_ERR_IO;
    return p11n_wakefd_open(s, &b->wake, 1);
}

static void be_wake(p11n_fdset *s)
{
    epoll_be *b = s->be;
    p11n_wakefd_signal(&b->wake);
}

static int be_add(p11n_fdset *s, int fd, p11n_io *io)
{
    if (epoll_op(s->be, EPOLL_CTL_ADD, fd, io) != 0)
        return errno == ENOMEM || errno == ENOSPC ? P11N_ERR_NOMEM : P11N_ERR_IO;
    return P11N_OK;
}

static void be_mod(p11n_fdset *s, int fd, const p11n_io *io)
{
    /* Fails only for an fd that is no longer open, whose owner is about
     * to find out from its own system calls. */
    if (epoll_op(s->be, EPOLL_CTL_MOD, fd, io) != 0)
        p11n_log(s->ctx, P11N_LOG_ERROR, "epoll_ctl(MOD, %d): %s", fd, strerror(errno));
}

static void be_del(p11n_fdset *s, int fd, const p11n_io *io)
{
    epoll_be *b = s->be;
    (void)io;
    /* ENOENT/EBADF: already closed, which removed it from the set. */
    (void)epoll_ctl(b->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void be_compact(p11n_fdset *s)
{
    (void)s;  /* no holes: the kernel keeps the set */
}

static int be_wait(p11n_fdset *s, int timeout_ms)
{
    epoll_be *b = s->be;
    int r = epoll_wait(b->epfd, b->ev, EPOLL_BATCH, timeout_ms);
    if (r >= 0) {
        b->nev = r;
        return P11N_OK;
    }
    b->nev = 0;
    if (errno == EINTR)
        return P11N_OK;
    p11n_log(s->ctx, P11N_LOG_ERROR, "epoll_wait: %s", strerror(errno));
    return P11N_ERR_IO;
}

static void be_dispatch(p11n_fdset *s)
{
    epoll_be *b = s->be;
    int n = b->nev;
    b->nev = 0;
    for (int i = 0; i < n; i++) {
        const struct epoll_event *e = &b->ev[i];
        int fd = (int)(uint32_t)e->data.u64;
        uint32_t gen = (uint32_t)(e->data.u64 >> 32);
        p11n_io *io = p11n_fdset_entry(s, fd);
        if (io != NULL && io->gen == gen)
            p11n_fdset_deliver(io, fd, from_epoll(e->events));
    }
}

static size_t be_export_count(const p11n_fdset *s)
{
    (void)s;
    return 1;
}

static void be_export(const p11n_fdset *s, struct pollfd *fds)
{
    const epoll_be *b = s->be;
    fds[0] = (struct pollfd){ .fd = b->epfd, .events = POLLIN };
}

/* The epoll fd is readable while any watched fd is ready: fetch those
 * without waiting. */
static int be_import(p11n_fdset *s, const struct pollfd *fds, size_t n)
{
    const epoll_be *b = s->be;
    for (size_t i = 0; i < n; i++)
        if (fds[i].fd == b->epfd && fds[i].revents != 0)
            return be_wait(s, 0);
    return P11N_OK;
}

const struct p11n_backend_ops p11n_backend_epoll = {
    .name = "epoll",
    .init = be_init,
    .free = be_free,
    .add = be_add,
    .mod = be_mod,
    .del = be_del,
    .compact = be_compact,
    .wait = be_wait,
    .dispatch = be_dispatch,
    .export_count = be_export_count,
    .export_fds = be_export,
    .import = be_import,
    .wake = be_wake,
};

#endif
