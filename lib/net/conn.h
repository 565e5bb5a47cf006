/* The connection and listener structures and what their files share
 * (conn.c, listener.c, trust.c): included by those files alone. */
#ifndef P11N_CONN_H
#define P11N_CONN_H

#include "channel.h"
#include "net.h"
#include "ratelog.h"

/* Half-open connections (incoming, waiting for the peer's act) are on
 * two lists in arrival order: the context's and their listener's, so
 * that the one to evict is the head of one, found in O(1). */
enum { P11N_HO_CTX, P11N_HO_LISTENER, P11N_HO_LISTS };
struct p11n_ho_link {
    p11n_conn *prev, *next;
};
struct p11n_ho_list {
    p11n_conn *head, *tail;
};

/* Why an incoming connection was refused or failed, for the listener's
 * rate-limited log (admit.c names them): the summary counts by these. */
enum p11n_refusal {
    P11N_RF_EVICTED,          /* closed to admit a newer one */
    P11N_RF_TABLE_FULL,       /* refused: no half-open connection to evict */
    P11N_RF_LIMIT,            /* a cap (max_established, the token queue) reached */
    P11N_RF_OVERLOAD,         /* unauthenticated token work queue full */
    P11N_RF_ACT1_TIMEOUT,     /* first act not received in time */
    P11N_RF_ACT_TIMEOUT,      /* a later act not received in time */
    P11N_RF_CLOSED,           /* the peer closed or reset during the handshake */
    P11N_RF_NOT_ACCEPTED,     /* authenticated, but not an accepted peer */
    P11N_RF_BAD_ACT,          /* anything else: a rejected act, a local error */
    P11N_RF_COUNT
};

/* What the context holds for the connection layer (ctx->cl), made by
 * p11n_conn_layer_attach. */
struct p11n_conn_layer {
    p11n_conn *conns;             /* every live connection (doubly linked) */
    p11n_conn *flushq;            /* connections with bytes to write */
    p11n_conn *readq;             /* resumed connections with received bytes kept */
    p11n_conn *trimq;             /* connections that may hold buffers to release */
    p11n_conn *dead;              /* finished, to free after this iteration */
    p11n_listener *listeners;
    unsigned handshakes_in;       /* incoming handshakes in progress */
    unsigned established;         /* established or closing, incoming and outgoing */
    struct p11n_ho_list halfopen; /* incoming, waiting for an act, oldest first */
    unsigned long next_id;
    p11n_timer trim;              /* releases idle write buffers */
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
    unsigned delivering : 1;      /* inside the `message` callback: `msg` points into
                                     t's buffer or kept[], which must outlive the call */
    unsigned acts_in : 1;         /* an act from the peer has been read in full */
    unsigned halfopen : 1;        /* on the half-open lists (ho[]) */
    unsigned est_counted : 1;     /* counted in the established totals */

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
    size_t ncand;                 /* KK responder: initiator keys to try in act 1 */
    struct p11n_job *job;         /* a handshake step on a worker: it holds hs
                                     until it comes back */

    p11n_transport *t;
    /* What an end inside the `message` callback released: freed once the
     * callback returns, so the message it holds stays readable. */
    p11n_transport *t_retired;
    uint8_t *kept_retired;

    /* received bytes kept[kept_pos..kept_len) not yet fed to the decoder:
     * the rest of a read when the application paused in the middle */
    uint8_t *kept;
    size_t kept_pos, kept_len;

    /* write queue: bytes wbuf[wpos..wlen) wait for the socket */
    uint8_t *wbuf;
    size_t wpos, wlen, wcap;

    p11n_timer timer;             /* connect, act, flush or backoff deadline; once
                                     established, the stall deadlines below */
    struct p11n_ho_link ho[P11N_HO_LISTS];
    uint64_t wait_since;          /* half-open: began waiting for the peer's act */
    uint64_t wprogress;           /* established: the write queue last moved (or filled) */
    uint64_t partial_since;       /* established: the decoder began holding part of a frame */
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
    unsigned established;         /* established or closing */
    unsigned max_established;     /* 0: only the context's cap */
    struct p11n_ho_list halfopen; /* its connections waiting for an act, oldest first */
    p11n_ratelog refusals;        /* lines about refused, evicted, failed connections */
    p11n_ratelog arrivals;        /* lines about accepted connections */
    p11n_timer summary;           /* a summary is due */
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

/* ---- conn.c ---- */
int p11n_conn_accepted(p11n_listener *l, int fd, const struct sockaddr *sa);
/* Hand the loop its hooks (once per context; later calls do nothing).
 * Errors: NOMEM. */
int p11n_conn_layer_attach(p11n_ctx *ctx);
void p11n_conn_free(p11n_conn *c);

/* End the attempt or connection (logs, releases, calls `closed`). */
void p11n_conn_end(p11n_conn *c, int reason, const char *text);

/* ---- admit.c: who gets in ---- */
/* An incoming connection on `l` from `addr` asks for a handshake slot:
 * P11N_OK when there is one (after evicting the half-open connection
 * that has waited longest, when the table is full); otherwise LIMIT,
 * logged (rate-limited), and the caller closes the socket. Also LIMIT
 * when an established cap is reached already: a handshake certain to be
 * refused at its end would spend token work for nothing. CLOSED: the
 * evicted connection's `closed` callback closed the listener. */
int p11n_admit_accept(p11n_listener *l, const char *addr);
/* c (incoming, counted) waits for the peer's next act: it becomes
 * evictable. */
void p11n_admit_wait(p11n_conn *c);
/* c stops waiting (act read, ended): no longer evictable. */
void p11n_admit_unwait(p11n_conn *c);
/* The handshake is complete: count c as established, or end it with
 * LIMIT naming the cap. Returns 1 if counted, 0 if ended. */
int p11n_admit_established(p11n_conn *c);
/* c is released: out of every count and list. */
void p11n_admit_release(p11n_conn *c);
/* An incoming connection failed before it was established (reason,
 * text from p11n_conn_end): may its line be logged? Counts it in the
 * listener's summary either way. Outgoing connections: always 1. */
int p11n_admit_log_allowed(const p11n_conn *c, int reason);
/* The listener's refusal log: set up (per its context's options) and
 * flushed (a summary of what was not logged yet) when it goes. */
void p11n_admit_listener_init(p11n_listener *l);
void p11n_admit_listener_flush(p11n_listener *l);
/* A connection was accepted on l: may its line be logged? (Arrivals
 * have a budget of their own, as large as the refusals'.) */
int p11n_admit_arrival_allowed(p11n_listener *l);
/* A refusal of `reason` (enum p11n_refusal) on l: logged if the rate
 * allows, counted always. */
void p11n_admit_refusal(p11n_listener *l, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- listener.c ---- */
void p11n_listener_unref(p11n_listener *l);
void p11n_listener_free(p11n_listener *l);

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

#endif
