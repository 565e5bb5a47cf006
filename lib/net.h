/*
 * Event loop internals shared by lib/loop.c, conn.c, listener.c,
 * resolve.c, worker.c and peers.c. Nothing here is exported.
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

#include "channel.h"
#include "p11noise.h"

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

/* A SOCKS5 proxy: host NULL means none. The password is wiped on clear. */
typedef struct p11n_proxy {
    char *host;
    uint16_t port;
    char *user, *pass;            /* both or neither */
} p11n_proxy;

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

    p11n_conn *conns;             /* every live connection (doubly linked) */
    p11n_conn *flushq;            /* connections with bytes to write */
    p11n_conn *readq;             /* resumed connections with received bytes kept */
    p11n_conn *trimq;             /* connections that may hold buffers to release */
    unsigned long app_calls;      /* application callbacks made (to see if settle() made any) */
    int called_back;              /* p11n_poll_fds: settle() called back, not yet reported */
    p11n_conn *dead;              /* finished, to free after this iteration */
    p11n_listener *listeners;
    unsigned handshakes_in;       /* incoming handshakes in progress */
    unsigned long next_id;
    p11n_timer trim;              /* releases idle write buffers */

    p11n_peer_entry *peers;
    size_t npeers, cappeers;

    struct p11n_resolver *resolver;
    struct p11n_workers *workers;
    p11n_proxy proxy;             /* default for p11n_connect */
};

enum p11n_conn_state {
    P11N_CS_START,        /* waiting for the loop to begin an attempt */
    P11N_CS_DIALING,      /* the dialer: resolve, connect, proxy phase */
    P11N_CS_HANDSHAKE,
    P11N_CS_ESTABLISHED,
    P11N_CS_CLOSING,      /* graceful: flushing queued messages */
    P11N_CS_BACKOFF,      /* waiting to reconnect */
    P11N_CS_DEAD
};

struct p11n_conn {
    p11n_ctx *ctx;
    p11n_conn *prev, *next;       /* ctx->conns */
    p11n_conn *next_flush;        /* ctx->flushq */
    p11n_conn *next_dead;         /* ctx->dead */
    p11n_conn *next_read;         /* ctx->readq */
    p11n_conn *trim_prev, *trim_next; /* ctx->trimq */
    unsigned long id;             /* "#id" in logs */
    enum p11n_conn_state state;
    int fd;
    unsigned incoming : 1;
    unsigned in_flushq : 1;
    unsigned want_writable : 1;   /* p11n_send said WOULD_BLOCK */
    unsigned app_closed : 1;      /* p11n_close called: no reconnect */
    unsigned counted : 1;         /* counted in ctx/listener handshakes_in */
    unsigned wrote : 1;           /* wrote since the last trim */
    unsigned partial : 1;         /* decoder holds part of a frame */
    unsigned paused : 1;          /* p11n_conn_pause_read: no reads, no messages */
    unsigned in_readq : 1;
    unsigned in_trimq : 1;
    unsigned peer_eof : 1;        /* closing: the peer's end of stream was read */
    unsigned shut_wr : 1;         /* closing: flushed, our side shut down, lingering */

    struct p11n_channel *ch;      /* key, pattern, prologue, callbacks: a reference */
    void *arg;                    /* the callbacks' argument (p11n_conn_set_arg) */

    /* handshake setup */
    uint8_t remote[P11N_PUBKEY_LEN]; /* outgoing: the key dialled; then the authenticated key */
    char peer[2 * P11N_PUBKEY_LEN + 1]; /* authenticated peer: identifier or hex; "" before */
    char peer_id[P11N_MAX_IDENTIFIER + 1]; /* its identifier in the store; "" if none */
    char peer_name[2 * P11N_PUBKEY_LEN + 1]; /* outgoing: the peer asked for */
    unsigned by_key : 1;          /* outgoing: named by key (hex), so not bound to the store:
                                     store changes never revoke it */
    p11n_listener *listener;      /* incoming: holds a reference */

    /* outgoing */
    char *host;
    uint16_t port;
    int reconnect;
    unsigned backoff_min, backoff_max, failures;
    p11n_proxy proxy;             /* dialled instead of host:port when set */
    struct p11n_dialer *dialer;   /* during P11N_CS_DIALING */

    /* handshake */
    p11n_handshake *hs;
    uint8_t act[P11N_MAX_ACT];
    size_t act_len;               /* bytes of act[] in use */
    size_t act_want;              /* bytes the act being read needs */
    struct p11n_job *job;         /* a handshake step on a worker: it holds hs and
                                     the act until it comes back */

    p11n_transport *t;

    /* received bytes kept[kept_pos..kept_len) not yet fed to the decoder:
     * the rest of a read when the application paused in the middle */
    uint8_t *kept;
    size_t kept_pos, kept_len;

    /* write queue: bytes wbuf[wpos..wlen) wait for the socket */
    uint8_t *wbuf;
    size_t wpos, wlen, wcap;

    p11n_timer timer;             /* connect, act, flush or backoff deadline */
    p11n_timer idle;
    uint64_t started, last_active;
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    char addr[P11N_ADDRSTR];      /* the peer's address, for logs */
};

struct p11n_listener {
    p11n_ctx *ctx;
    p11n_listener *next;
    int fd;
    int closed;
    unsigned refs;                /* connections accepted and not yet freed */
    unsigned handshakes;          /* in progress */
    unsigned max_handshakes;
    uint16_t port;
    char addr[P11N_ADDRSTR];
    p11n_timer pause;             /* accepting resumes (after EMFILE and the like) */
    struct p11n_channel *ch;      /* shared with the accepted connections */
    /* Accepted initiators by identifier (none: everyone in the store),
     * resolved to keys in the store as each handshake needs them, so
     * that a removed or replaced key is refused from the next one on. */
    char (*ids)[P11N_MAX_IDENTIFIER + 1];
    size_t nids;
    int warned_many;              /* logged that the store outgrew the KK bound */
};

/* ---- fdset.c ---- */
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

/* ---- conn.c ---- */
int p11n_conn_accepted(p11n_listener *l, int fd, const struct sockaddr *sa);
void p11n_conn_flush_all(p11n_ctx *ctx);
/* Deliver the messages kept for connections whose reading resumed. */
void p11n_conn_read_kept(p11n_ctx *ctx);
void p11n_conn_free_dead(p11n_ctx *ctx);
void p11n_conn_free(p11n_conn *c);
void p11n_conn_trim(void *ctxp);

/* End the attempt or connection (logs, releases, calls `closed`). */
void p11n_conn_end(p11n_conn *c, int reason, const char *text);
/* Connected (and through any proxy): start the Noise handshake. */
void p11n_conn_handshake_begin(p11n_conn *c);
/* Append raw bytes to the write queue. Errors: NOMEM. */
int p11n_conn_queue(p11n_conn *c, const uint8_t *bytes, size_t len);

/* ---- proxy.c ---- */
/* "[USER:PASS@]HOST:PORT" ("[V6]:PORT" too). Errors: INVALID_ARG,
 * SOCKS_CREDENTIALS (a field over 255 bytes), NOMEM. */
int p11n_proxy_parse(const char *spec, p11n_proxy *out);
int p11n_proxy_copy(const p11n_proxy *in, p11n_proxy *out);
void p11n_proxy_clear(p11n_proxy *px);

/* ---- listener.c ---- */
void p11n_listener_unref(p11n_listener *l);
void p11n_listener_free(p11n_listener *l);

/* ---- resolve.c ---- */
/* The answer to one query: rc OK with n >= 1 addresses (port filled in),
 * or rc RESOLVE with text saying why (valid during the call only, like
 * addrs). */
typedef void (*p11n_resolve_fn)(void *arg, int rc, const char *text,
    const struct sockaddr_storage *addrs, size_t n);
typedef struct p11n_resolve_req p11n_resolve_req;
/* Create the context's c-ares channel now (else on first use). Errors:
 * INVALID_ARG (opt.dns_servers malformed), NOMEM, RESOLVE. */
int p11n_resolver_open(p11n_ctx *ctx);
/* Resolve host for a TCP connection to port; fn(arg, ...) gets the
 * answer once, on the loop thread. *out is the pending request, to hand
 * to p11n_resolve_cancel; it is NULL when the answer came before this
 * returned (names from /etc/hosts), and fn has then run. Errors (fn is
 * not called): NOMEM, RESOLVE. */
int p11n_resolve_start(p11n_ctx *ctx, const char *host, uint16_t port, p11n_resolve_fn fn,
    void *arg, p11n_resolve_req **out);
/* Forget a pending request (NULL: nothing): fn is never called for it.
 * The caller drops its pointer, which is then no longer valid. */
void p11n_resolve_cancel(p11n_resolve_req *req);
void p11n_resolver_free(p11n_ctx *ctx);

/* ---- worker.c ---- */
/* Room for the token's account of a failed job (p11n_token_last_error). */
#define P11N_JOB_TEXT 256

/* A piece of blocking work: run() on a worker thread, done() back on the
 * loop thread. From submit until done() the job owns its inputs (the
 * submitter hands them over and keeps only the job pointer), so nothing
 * the worker touches is shared. A submitter that goes away first orphans
 * its job (owner = NULL) and forgets it; done() then only frees it. The
 * pool never looks at owner: it is the submitter's, on the loop thread. */
typedef struct p11n_job p11n_job;
struct p11n_job {
    void (*run)(p11n_job *job);     /* worker thread; sets rc */
    void (*done)(p11n_job *job);    /* loop thread; frees the job */
    void *owner;                    /* loop thread only; NULL: orphaned */
    int rc;
    char text[P11N_JOB_TEXT];       /* rc != OK: the token's words, or "" */
    p11n_job *next;                 /* the pool's queues */
};

/* Queue a job (threads start on first use). Errors (the job stays the
 * caller's): LIMIT (max_token_ops queued), NOMEM, IO (no thread). */
int p11n_worker_submit(p11n_ctx *ctx, p11n_job *job);
/* Run on wake-up: call done() of finished jobs, oldest first. */
void p11n_worker_collect(p11n_ctx *ctx);
/* Stop the threads; jobs not yet collected are orphaned and done()
 * frees them. */
void p11n_workers_free(p11n_ctx *ctx);

/* ---- peers.c ---- */
const p11n_peer_entry *p11n_peer_by_id(const p11n_ctx *ctx, const char *id);
const p11n_peer_entry *p11n_peer_by_pub(const p11n_ctx *ctx, const uint8_t *pub);
void p11n_peers_free(p11n_ctx *ctx);

/* ---- trust.c ---- */
/* KK responder: the candidate keys for one handshake, from the
 * listener's identifiers now in the store (or the whole store), at most
 * P11N_MAX_KK_CANDIDATES. Returns how many were written. */
size_t p11n_trust_candidates(p11n_conn *c, uint8_t (*out)[P11N_PUBKEY_LEN]);
/* The outgoing connection's key for this attempt: the store's current
 * key for the identifier it was given. Errors: UNKNOWN_PEER (it left). */
int p11n_trust_refresh(p11n_conn *c);
/* The handshake authenticated c->remote: may it in, and as whom (fills
 * c->peer and c->peer_id)? Errors: UNKNOWN_PEER (not accepted), REVOKED
 * (accepted when the handshake began, no longer in the store). */
int p11n_trust_authorize(p11n_conn *c);
/* The store changed: end every connection (established, or handshaking
 * with a key already chosen) whose key the store no longer holds under
 * its identifier, with REVOKED. Connections to a peer named by key are
 * not bound to the store and stay. */
void p11n_trust_revoke_stale(p11n_ctx *ctx);

#endif
