/*
 * A loop backend: how the watched fds are waited on (poll(), epoll), as
 * a const ops table in a file of its own (loop_poll.c, loop_epoll.c).
 * fdset.c keeps what every backend shares: the table of registrations
 * by fd, and delivery to their callbacks. Each backend owns its state
 * and its wake-up fd (a p11n_wakefd, whose opening, draining and waking
 * live once in loop.c for both kinds of fd).
 */
#ifndef P11N_BACKEND_H
#define P11N_BACKEND_H

#include "net.h"

struct p11n_backend_ops {
    const char *name;                        /* in log lines */
    /* State in s->be, and the wake-up fd, watched. Errors: IO, NOMEM. */
    int (*init)(p11n_fdset *s);
    void (*free)(p11n_fdset *s);
    /* Register a new fd (may set io->slot). Errors: NOMEM, IO. */
    int (*add)(p11n_fdset *s, int fd, p11n_io *io);
    void (*mod)(p11n_fdset *s, int fd, const p11n_io *io);
    void (*del)(p11n_fdset *s, int fd, const p11n_io *io);
    /* Between iterations: drop what removals left behind. */
    void (*compact)(p11n_fdset *s);
    /* Wait and keep the results (errno set on IO). Errors: IO. */
    int (*wait)(p11n_fdset *s, int timeout_ms);
    void (*dispatch)(p11n_fdset *s);
    size_t (*export_count)(const p11n_fdset *s);
    void (*export_fds)(const p11n_fdset *s, struct pollfd *fds);
    int (*import)(p11n_fdset *s, const struct pollfd *fds, size_t n);
    /* Any thread: make the next (or current) wait return. */
    void (*wake)(p11n_fdset *s);
};

extern const struct p11n_backend_ops p11n_backend_poll;
#ifdef P11N_HAVE_EPOLL
extern const struct p11n_backend_ops p11n_backend_epoll;
#endif

/* A backend's wake-up fd: written from any thread, drained on the loop
 * thread, which then calls the fdset's on_wake. One read end, one write
 * end (the same fd for an eventfd). */
typedef struct p11n_wakefd {
    int rfd, wfd;
} p11n_wakefd;
/* Opens it (an eventfd if `eventfd_kind` and the system has one, else a
 * non-blocking pipe) and watches its read end in `s`. On error the fds
 * opened so far stay in `w` for p11n_wakefd_close. Errors: IO, NOMEM. */
int p11n_wakefd_open(p11n_fdset *s, p11n_wakefd *w, int eventfd_kind);
/* Any thread: make the loop's next (or current) wait return. */
void p11n_wakefd_signal(const p11n_wakefd *w);
/* Closes both ends (their registration goes with the fdset). */
void p11n_wakefd_close(p11n_wakefd *w);

/* The registration of fd, or NULL. */
p11n_io *p11n_fdset_entry(const p11n_fdset *s, int fd);
/* Call fd's owner with what it still wants of `rev`. */
void p11n_fdset_deliver(p11n_io *io, int fd, short rev);

#endif
