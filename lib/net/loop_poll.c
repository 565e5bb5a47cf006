/*
 * The poll() backend: the pollfd array is the interest list. A removed
 * fd leaves a hole (fd -1, which poll() ignores) so that a dispatch in
 * progress stays valid; holes are compacted between iterations. The
 * wake-up fd is a pipe, the portable kind.
 */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef struct poll_be {
    struct pollfd *pfd;
    size_t nfd, capfd, holes;
    int wake[2];                  /* read end, write end */
} poll_be;

static void on_wake(void *obj, int fd, short revents)
{
    p11n_fdset *s = obj;
    (void)revents;
    char buf[64];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    s->on_wake(s->wake_obj);
}

static void be_free(p11n_fdset *s)
{
    poll_be *b = s->be;
    if (b == NULL)
        return;
    for (int i = 0; i < 2; i++)
        if (b->wake[i] >= 0)
            close(b->wake[i]);
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
    b->wake[0] = b->wake[1] = -1;
    if (pipe(b->wake) != 0) {
        b->wake[0] = b->wake[1] = -1;
        return P11N_ERR_IO;
    }
    for (int i = 0; i < 2; i++)
        if (fcntl(b->wake[i], F_SETFL, O_NONBLOCK) != 0
            || fcntl(b->wake[i], F_SETFD, FD_CLOEXEC) != 0)
            return P11N_ERR_IO;
    return p11n_io_add(s->ctx, b->wake[0], POLLIN, on_wake, s);
}

static void be_wake(p11n_fdset *s)
{
    poll_be *b = s->be;
    /* EAGAIN: the pipe is full, so the loop will wake anyway. */
    ssize_t r = write(b->wake[1], "", 1);
    (void)r;
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
