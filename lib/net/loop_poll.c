/*
 * The poll() backend: the pollfd array is the interest list. A removed
 * fd leaves a hole (fd -1, which poll() ignores) so that a dispatch in
 * progress stays valid; holes are compacted between iterations. The
 * wake-up fd is a pipe, the portable kind.
 */
#include "backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

typedef struct poll_be {
    struct pollfd *pfd;
    size_t nfd, capfd, holes;
    p11n_wakefd wake;
} poll_be;

static void be_free(p11n_fdset *s)
{
    poll_be *b = s->be;
    if (b == NULL)
        return;
    p11n_wakefd_close(&b->wake);
    free(b->pfd);
    free(b);
    s->be = NULL;
}

static int be_init(p11n_fdset *s)
{
    poll_be *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return P11N_ERR_NOMEM;
    s->be = b;
    return p11n_wakefd_open(s, &b->wake, 0);
}

static void be_wake(p11n_fdset *s)
{
    poll_be *b = s->be;
    p11n_wakefd_signal(&b->wake);
}

static int be_add(p11n_fdset *s, int fd, p11n_io *io)
{
    poll_be *b = s->be;
    if (b->nfd == b->capfd) {
        size_t cap = b->capfd ? b->capfd * 2 : 32;
        struct pollfd *p = realloc(b->pfd, cap * sizeof(*p));
        if (p == NULL)
            return P11N_ERR_NOMEM;
        b->pfd = p;
        b->capfd = cap;
    }
    b->pfd[b->nfd] = (struct pollfd){ .fd = fd, .events = io->events, .revents = 0 };
    io->slot = ++b->nfd;
    return P11N_OK;
}

static void be_mod(p11n_fdset *s, int fd, const p11n_io *io)
{
    poll_be *b = s->be;
    (void)fd;
    b->pfd[io->slot - 1].events = io->events;
}

static void be_del(p11n_fdset *s, int fd, const p11n_io *io)
{
    poll_be *b = s->be;
    (void)fd;
    b->pfd[io->slot - 1] = (struct pollfd){ .fd = -1 };
    b->holes++;
}

static void be_compact(p11n_fdset *s)
{
    poll_be *b = s->be;
    if (b->holes == 0)
        return;
    size_t j = 0;
    for (size_t i = 0; i < b->nfd; i++) {
        if (b->pfd[i].fd < 0)
            continue;
        if (i != j) {
            b->pfd[j] = b->pfd[i];
            s->byfd[b->pfd[j].fd].slot = j + 1;
        }
        j++;
    }
    b->nfd = j;
    b->holes = 0;
}

static int be_wait(p11n_fdset *s, int timeout_ms)
{
    poll_be *b = s->be;
    if (poll(b->pfd, b->nfd, timeout_ms) >= 0)
        return P11N_OK;
    for (size_t i = 0; i < b->nfd; i++)
        b->pfd[i].revents = 0;
    if (errno == EINTR)
        return P11N_OK;
    p11n_log(s->ctx, P11N_LOG_ERROR, "poll: %s", strerror(errno));
    return P11N_ERR_IO;
}

static void be_dispatch(p11n_fdset *s)
{
    poll_be *b = s->be;
    /* Fds added by callbacks go past `n` and have no results yet. */
    size_t n = b->nfd;
    for (size_t i = 0; i < n; i++) {
        short rev = b->pfd[i].revents;
        int fd = b->pfd[i].fd;
        if (rev == 0 || fd < 0)
            continue;
        b->pfd[i].revents = 0;
        p11n_fdset_deliver(&s->byfd[fd], fd, rev);
    }
}

static size_t be_export_count(const p11n_fdset *s)
{
    const poll_be *b = s->be;
    return b->nfd;
}

static void be_export(const p11n_fdset *s, struct pollfd *fds)
{
    const poll_be *b = s->be;
    for (size_t i = 0; i < b->nfd; i++)
        fds[i] = (struct pollfd){ .fd = b->pfd[i].fd, .events = b->pfd[i].events };
}

static int be_import(p11n_fdset *s, const struct pollfd *fds, size_t n)
{
    poll_be *b = s->be;
    for (size_t i = 0; i < n; i++) {
        const p11n_io *io = p11n_fdset_entry(s, fds[i].fd);
        if (io != NULL && fds[i].revents != 0)
            b->pfd[io->slot - 1].revents = fds[i].revents;
    }
    return P11N_OK;
}

const struct p11n_backend_ops p11n_backend_poll = {
    .name = "poll",
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
