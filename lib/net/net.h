/*
 * The context: its options, timers, watched fds and the hooks the loop
 * runs for the connection layer; the peer store. Shared by every file
 * of the network layer; nothing here is exported. The connection and
 * listener structures are conn.h's, seen by their own files alone; the
 * helpers (dialer.h, resolve.h, worker.h, proxy.h, channel.h) never see
 * them.
 *
 * Ownership: the context owns every listener and connection. Connections
 * are never freed while a callback may still see them: a finished
 * connection goes on the context's dead list and is freed at the end of
 * the loop iteration. No worker ever sees a connection: a job owns what
 * it works on, and a connection that goes away orphans its job.
 */
#ifndef P11N_NET_H
#define P11N_NET_H

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "p11noise.h"
#include "proxy.h"

/* Every read from an established socket goes into one buffer shared by
 * the whole context: per-connection memory stays small, and the decoder
 * copies only partial frames. */
#define P11N_READ_CHUNK (128 * 1024)
/* Addresses tried per connection attempt. */
#define P11N_MAX_ADDRS 16
/* Text of "[addr]:port" for logs. */
#define P11N_ADDRSTR 64

typedef void (*p11n_io_fn)(void *obj, int fd, short revents);
typedef void (*p11n_timer_fn)(void *obj);

typedef struct p11n_timer {
    uint64_t at;      /* monotonic ms */
    size_t slot;      /* heap index + 1; 0 when not armed */
    p11n_timer_fn fn;
    void *obj;
} p11n_timer;

/* One watched fd (fdset.c). */
typedef struct p11n_io {
    p11n_io_fn fn;                /* NULL: not watched */
    void *obj;
    short events;                 /* POLLIN / POLLOUT wanted */
    uint32_t gen;                 /* epoll: which registration an event is for */
    size_t slot;                  /* poll: index + 1 in pfd */
} p11n_io;

#if defined(__linux__)
#define P11N_HAVE_EPOLL 1
#endif

/* The watched fds and the backend that waits on them (backend.h). */
typedef struct p11n_fdset {
    p11n_ctx *ctx;                /* for log lines */
    const struct p11n_backend_ops *ops;
    void *be;                     /* the backend's state */
    p11n_io *byfd;                /* indexed by fd */
    size_t capbyfd;
    size_t count;                 /* fds watched */
    uint32_t gen;
    p11n_timer_fn on_wake;        /* called on the loop thread after p11n_wake */
    void *wake_obj;
} p11n_fdset;

struct p11n_workers;
struct p11n_resolver;

struct p11n_ctx {
    p11n_ctx_options opt;         /* defaults filled in; token_uri, dns_servers owned;
                                     socks5 NULL (parsed into `proxy`) */

    p11n_fdset fds;

    p11n_timer **heap;            /* min-heap on `at` */
    size_t nheap, capheap;
    size_t ntimers;               /* timers that exist: heap slots reserved */
    uint64_t now;

    volatile sig_atomic_t stopping;

    uint8_t *rbuf;                /* P11N_READ_CHUNK bytes */

    unsigned long app_calls;      /* application callbacks made (to see if settle() made any) */
    int called_back;              /* p11n_poll_fds: settle() called back, not yet reported */
    struct p11n_conn_layer *cl;   /* the connection layer's (conn.h); NULL before its first
                                     connection or listener */

    p11n_peer_entry *peers;
    size_t npeers, cappeers;

    struct p11n_resolver *resolver;
    struct p11n_workers *workers;
    p11n_proxy proxy;             /* default for p11n_connect */
    const struct p11n_loop_hooks *hooks; /* the connection layer's, once it has any */

    pthread_mutex_t post_mu;      /* p11n_post: calls waiting for the loop thread */
    struct p11n_posted *post_head, *post_tail;
};

/* What the loop runs for the connection layer, which hands them over
 * (p11n_loop_attach) when it makes its first connection or listener:
 * the loop calls into no connection or listener file by name. */
typedef struct p11n_loop_hooks {
    /* Work that does not wait for fds, before each wait and after each
     * dispatch (kept messages, queued writes, finished connections). */
    void (*settle)(p11n_ctx *ctx);
    /* settle() has work now: the next wait must not sleep. */
    int (*pending)(const p11n_ctx *ctx);
    /* The context goes: free every connection and listener. */
    void (*teardown)(p11n_ctx *ctx);
} p11n_loop_hooks;

/* ---- fdset.c ---- */
/* An event besides POLLIN/POLLOUT: the peer has shut down its sending
 * side (Linux's POLLRDHUP, on both backends), asked for while no bytes
 * are wanted; 0 where the system has no such event. A file that uses it
 * defines _GNU_SOURCE before any include. */
#ifdef POLLRDHUP
#define P11N_POLL_PEER_GONE POLLRDHUP
#else
#define P11N_POLL_PEER_GONE 0
#endif

/* Watch fd (one registration per fd; adding a watched fd replaces it).
 * Errors: INVALID_ARG, NOMEM, IO. */
int p11n_io_add(p11n_ctx *ctx, int fd, short events, p11n_io_fn fn, void *obj);
void p11n_io_set(p11n_ctx *ctx, int fd, short events);
/* Stop watching fd; call before closing it. */
void p11n_io_del(p11n_ctx *ctx, int fd);
/* The backend (P11N_LOOP_POLL or _EPOLL) with its wake-up fd, which
 * calls on_wake(obj) on the loop thread after p11n_fdset_wake. Errors:
 * IO, NOMEM, UNSUPPORTED (no epoll on this system). */
int p11n_fdset_init(p11n_ctx *ctx, int backend, p11n_timer_fn on_wake, void *obj);
/* Any thread. */
void p11n_fdset_wake(p11n_ctx *ctx);
void p11n_fdset_free(p11n_ctx *ctx);
/* Wait up to timeout_ms and keep the results; dispatch hands them to the
 * fds' callbacks. Errors: IO. */
int p11n_fdset_wait(p11n_ctx *ctx, int timeout_ms);
void p11n_fdset_dispatch(p11n_ctx *ctx);
/* Drop the holes removed fds left (poll); not during a dispatch. */
void p11n_fdset_compact(p11n_ctx *ctx);
/* External loop: the pollfds to hand out (the epoll fd alone, or every
 * fd), and the results coming back. Import errors: IO. */
size_t p11n_fdset_export_count(const p11n_ctx *ctx);
void p11n_fdset_export(const p11n_ctx *ctx, struct pollfd *fds);
int p11n_fdset_import(p11n_ctx *ctx, const struct pollfd *fds, size_t n);

/* ---- loop.c ---- */
uint64_t p11n_now_ms(void);
void p11n_timer_init(p11n_timer *t, p11n_timer_fn fn, void *obj);
/* Each timer object reserves its heap slot when created (NOMEM) and
 * releases it when destroyed, so arming never fails. */
int p11n_timers_reserve(p11n_ctx *ctx, size_t n);
void p11n_timers_release(p11n_ctx *ctx, size_t n);
void p11n_timer_arm(p11n_ctx *ctx, p11n_timer *t, uint64_t at);
void p11n_timer_cancel(p11n_ctx *ctx, p11n_timer *t);
void p11n_wake(p11n_ctx *ctx);
/* "1.2.3.4:5" or "[::1]:5" */
void p11n_addr_text(const struct sockaddr *sa, char out[P11N_ADDRSTR]);

#include "sized.h"   /* p11n_options_copy, for the option structures */


/* ---- post.c ---- */
/* Errors: NOMEM. */
int p11n_post_init(p11n_ctx *ctx);
/* On wake-up: run the posted calls, oldest first. */
void p11n_post_run(p11n_ctx *ctx);
/* Drop the calls not yet run. */
void p11n_post_free(p11n_ctx *ctx);

/* ---- peers.c ---- */
const p11n_peer_entry *p11n_peer_by_id(const p11n_ctx *ctx, const char *id);
const p11n_peer_entry *p11n_peer_by_pub(const p11n_ctx *ctx, const uint8_t *pub);
void p11n_peers_free(p11n_ctx *ctx);

/* ---- trust.c ---- */
/* The store changed: end every connection (established, or handshaking
 * with a key already chosen) whose key the store no longer holds under
 * its identifier, with REVOKED. Connections to a peer named by key are
 * not bound to the store and stay. */
void p11n_trust_revoke_stale(p11n_ctx *ctx);

#endif
