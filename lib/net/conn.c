/*
 * One connection's state machine:
 *
 *   START -> DIALING -> HANDSHAKE -> ESTABLISHED -> CLOSING
 *
 * DIALING is the dialer's (dialer.h): resolving, trying each address and
 * the proxy phase, until it hands over a connected socket.
 * Any state may end (conn_end): the connection then goes DEAD, or BACKOFF
 * when it reconnects, and from BACKOFF back to START.
 *
 * Incoming connections start in HANDSHAKE. During the handshake exactly
 * the bytes of the current act are read from the socket, so nothing that
 * follows the handshake ever needs to be stashed; once established, reads
 * go in large chunks through the context's shared buffer into the
 * transport's decoder. Only when the application pauses reading in the
 * middle of a chunk is the rest of it kept with the connection.
 *
 * A graceful close (CLOSING) flushes the queue, shuts down the sending
 * side, and lingers reading and dropping whatever the peer still sends
 * until its end of stream: a socket closed with unread bytes sends a
 * reset, which can destroy the messages the peer has not read yet.
 */
#define _GNU_SOURCE /* POLLRDHUP: P11N_POLL_PEER_GONE */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "channel.h"
#include "crypto.h"
#include "dialer.h"
#include "hsjob.h"
#include "worker.h"
#include "key.h"
#include "log.h"
#include "secure.h"
#include "tcpopt.h"
#include "transport.h"

#define DEF_BACKOFF_MIN_MS 500
#define DEF_BACKOFF_MAX_MS 30000
#define WBUF_MIN (16 * 1024)
#define TEXT_LEN 160
/* How often idle connections give their buffers back. */
#define TRIM_INTERVAL_MS 1000

static void hs_step(p11n_conn *c);
static void hs_sent(p11n_conn *c);
static void on_io(void *obj, int fd, short revents);
static void on_timer(void *obj);
static void on_idle(void *obj);

static const char *state_name(enum p11n_conn_state s)
{
    static const char *const names[] = {
        [P11N_CS_START] = "starting", [P11N_CS_DIALING] = "dialing",
        [P11N_CS_HANDSHAKE] = "handshake", [P11N_CS_ESTABLISHED] = "established",
        [P11N_CS_CLOSING] = "closing", [P11N_CS_BACKOFF] = "backoff", [P11N_CS_DEAD] = "dead",
    };
    return names[s];
}

/* ---- creation and release ---- */

/* A connection on channel `ch` (a reference is taken). */
static p11n_conn *conn_new(p11n_ctx *ctx, p11n_channel *ch)
{
    if (p11n_conn_layer_attach(ctx) != P11N_OK || p11n_timers_reserve(ctx, 2) != P11N_OK)
        return NULL;
    p11n_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        p11n_timers_release(ctx, 2);
        return NULL;
    }
    c->ctx = ctx;
    c->id = ++ctx->cl->next_id;
    c->fd = -1;
    c->ch = p11n_channel_ref(ch);
    c->arg = ch->cb.arg;
    p11n_timer_init(&c->timer, on_timer, c);
    p11n_timer_init(&c->idle, on_idle, c);
    c->next = ctx->cl->conns;
    if (ctx->cl->conns != NULL)
        ctx->cl->conns->prev = c;
    ctx->cl->conns = c;
    c->started = c->last_active = ctx->now;
    return c;
}

static void uncount_handshake(p11n_conn *c)
{
    p11n_admit_unwait(c);
    if (!c->counted)
        return;
    c->counted = 0;
    c->ctx->cl->handshakes_in--;
    if (c->listener != NULL)
        c->listener->handshakes--;
}

static void close_socket(p11n_conn *c)
{
    if (c->fd < 0)
        return;
    p11n_io_del(c->ctx, c->fd);
    close(c->fd);
    c->fd = -1;
}

static void job_orphan(p11n_conn *c);

/* Free the bytes kept for a paused reader, unless the `message` callback
 * running now was handed a message inside them: then after it returns. */
static void kept_drop(p11n_conn *c)
{
    if (c->delivering && c->kept_retired == NULL)
        c->kept_retired = c->kept;
    else
        free(c->kept);
    c->kept = NULL;
    c->kept_pos = c->kept_len = 0;
}

/* Drop everything an attempt holds. A handshake step a worker is running
 * is the job's: it is orphaned, and frees itself when it comes back. */
static void conn_release(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    close_socket(c);
    p11n_timer_cancel(ctx, &c->timer);
    p11n_timer_cancel(ctx, &c->idle);
    p11n_dial_cancel(c->dialer);
    c->dialer = NULL;
    job_orphan(c);
    p11n_handshake_free(c->hs);
    c->hs = NULL;
    c->act_len = c->act_want = 0;
    c->ncand = 0;
    /* The application may still read the message it was given (the
     * header promises it for the whole call): park what holds it. */
    if (c->delivering && c->t_retired == NULL)
        c->t_retired = c->t;
    else
        p11n_transport_free(c->t);
    c->t = NULL;
    kept_drop(c);
    uncount_handshake(c);
    p11n_admit_release(c);
    c->wpos = c->wlen = 0;
    c->partial = 0;
    c->want_writable = 0;
    c->paused = c->peer_eof = c->shut_wr = 0;
}

static void flushq_remove(p11n_conn *c)
{
    if (!c->in_flushq)
        return;
    for (p11n_conn **pp = &c->ctx->cl->flushq; *pp != NULL; pp = &(*pp)->next_flush) {
        if (*pp == c) {
            *pp = c->next_flush;
            break;
        }
    }
    c->in_flushq = 0;
}

static void readq_remove(p11n_conn *c)
{
    if (!c->in_readq)
        return;
    for (p11n_conn **pp = &c->ctx->cl->readq; *pp != NULL; pp = &(*pp)->next_read) {
        if (*pp == c) {
            *pp = c->next_read;
            break;
        }
    }
    c->in_readq = 0;
}

/* The trim list holds the connections that may hold a write buffer or a
 * receive buffer, so that the periodic trim walks those rather than
 * every idle connection. */
static void trimq_add(p11n_conn *c)
{
    if (c->in_trimq)
        return;
    p11n_ctx *ctx = c->ctx;
    c->in_trimq = 1;
    c->trim_prev = NULL;
    c->trim_next = ctx->cl->trimq;
    if (ctx->cl->trimq != NULL)
        ctx->cl->trimq->trim_prev = c;
    ctx->cl->trimq = c;
}

static void trimq_remove(p11n_conn *c)
{
    if (!c->in_trimq)
        return;
    if (c->trim_prev != NULL)
        c->trim_prev->trim_next = c->trim_next;
    else
        c->ctx->cl->trimq = c->trim_next;
    if (c->trim_next != NULL)
        c->trim_next->trim_prev = c->trim_prev;
    c->trim_prev = c->trim_next = NULL;
    c->in_trimq = 0;
}

void p11n_conn_free(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    conn_release(c);
    flushq_remove(c);
    readq_remove(c);
    trimq_remove(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (ctx->cl->conns == c)
        ctx->cl->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (c->listener != NULL)
        p11n_listener_unref(c->listener);
    p11n_timers_release(ctx, 2);
    free(c->wbuf);
    p11n_channel_unref(c->ch);
    free(c->host);
    p11n_proxy_clear(&c->proxy);
    free(c);
}

static void free_dead(p11n_ctx *ctx)
{
    while (ctx->cl->dead != NULL) {
        p11n_conn *c = ctx->cl->dead;
        ctx->cl->dead = c->next_dead;
        p11n_conn_free(c);
    }
}

/* ---- ending ---- */

static unsigned backoff_delay(p11n_conn *c)
{
    unsigned d = c->backoff_min;
    for (unsigned i = 1; i < c->failures && d < c->backoff_max; i++)
        d *= 2;
    if (d > c->backoff_max)
        d = c->backoff_max;
    /* Jitter: uniform in [d/2, d], so peers that failed together do not
     * retry together. */
    uint16_t r = 0;
    if (p11n_random((uint8_t *)&r, sizeof(r)) != P11N_OK)
        r = (uint16_t)c->id;
    unsigned half = d / 2;
    return half + (unsigned)((uint64_t)r * (d - half + 1) / 65536) + 1;
}

/* End the current attempt or connection: log it with its figures, release
 * its resources, then tell the application (last, so that whatever the
 * callback does sees a consistent connection). */
/* Who the connection is with, for logs: "1.2.3.4:5", or the target and
 * the proxy. */
static void conn_where(const p11n_conn *c, char *out, size_t cap)
{
    if (!c->incoming && c->proxy.host != NULL)
        snprintf(out, cap, "%s:%u via %s", c->host, c->port,
            c->addr[0] ? c->addr : c->proxy.host);
    else if (c->addr[0] != '\0')
        snprintf(out, cap, "%s", c->addr);
    else
        snprintf(out, cap, "%s:%u", c->host ? c->host : "?", c->port);
}

/* A KK responder whose act 1 verified under none of its candidates
 * cannot tell an unknown initiator from a changed key, another pattern or
 * prologue, or a corrupted act: UNKNOWN_PEER's own text would claim more
 * than is known, so the reason says what is. */
static int kk_act1_unverified(const p11n_conn *c, int rc)
{
    return rc == P11N_ERR_UNKNOWN_PEER && c->incoming && c->ch->wire->responder_chooses
        && c->hs != NULL;
}

void p11n_conn_end(p11n_conn *c, int reason, const char *text)
{
    if (c->state == P11N_CS_DEAD)
        return;
    p11n_ctx *ctx = c->ctx;
    int was_up = c->state == P11N_CS_ESTABLISHED || c->state == P11N_CS_CLOSING;
    int level = reason == P11N_OK || reason == P11N_ERR_CLOSED ? P11N_LOG_INFO : P11N_LOG_WARN;
    char where[2 * P11N_ADDRSTR + 300];
    conn_where(c, where, sizeof(where));
    /* The error's own text, unless `text` already says it. */
    char why[100] = "";
    if (reason != P11N_OK && strstr(text, p11n_strerror(reason)) == NULL
        && !kk_act1_unverified(c, reason))
        snprintf(why, sizeof(why), " [%s]", p11n_strerror(reason));
    struct p11n_log_fields lf = { .event = reason == P11N_ERR_REVOKED ? "revoked"
        : was_up || c->state == P11N_CS_BACKOFF ? "closed" : "failed", .conn_id = c->id, .peer = c->peer[0] ? c->peer : c->peer_name,
        .addr = where, .reason = text };
    if (c->state == P11N_CS_BACKOFF) {
        p11n_log_with(ctx, level, &lf, "conn #%lu to %s: %s (reconnect cancelled)", c->id,
            where, text);
    } else if (was_up) {
        p11n_log_with(ctx, level, &lf,
            "conn #%lu %s %s peer %s closed: %s%s; sent %llu msgs %llu bytes, "
            "received %llu msgs %llu bytes, %llu ms",
            c->id, c->incoming ? "from" : "to", where, c->peer, text, why,
            (unsigned long long)c->msgs_out, (unsigned long long)c->bytes_out,
            (unsigned long long)c->msgs_in, (unsigned long long)c->bytes_in,
            (unsigned long long)(ctx->now - c->started));
    } else if (p11n_admit_log_allowed(c, reason)) {
        p11n_log_with(ctx, level, &lf, "conn #%lu %s %s failed during %s: %s%s after %llu ms",
            c->id, c->incoming ? "from" : "to", where, state_name(c->state), text, why,
            (unsigned long long)(ctx->now - c->started));
    }
    conn_release(c);
    int final = c->incoming || !c->reconnect || c->app_closed;
    if (final) {
        c->state = P11N_CS_DEAD;
        c->next_dead = ctx->cl->dead;
        ctx->cl->dead = c;
    } else {
        if (!was_up)
            c->failures++;
        unsigned delay = backoff_delay(c);
        c->state = P11N_CS_BACKOFF;
        p11n_timer_arm(ctx, &c->timer, ctx->now + delay);
        p11n_log(ctx, P11N_LOG_INFO, "conn #%lu will reconnect to %s:%u in %u ms", c->id,
            c->host, c->port, delay);
    }
    ctx->app_calls++;
    if (c->ch->cb.closed != NULL)
        c->ch->cb.closed(c, reason, text, final, c->arg);
}

static void end_errno(p11n_conn *c, const char *what, int err)
{
    char text[TEXT_LEN];
    snprintf(text, sizeof(text), "%s: %s", what, strerror(err));
    p11n_conn_end(c, err == ECONNRESET || err == EPIPE ? P11N_ERR_RESET : P11N_ERR_IO, text);
}

/* ---- events ---- */

static int has_output(const p11n_conn *c)
{
    return c->wpos < c->wlen;
}

static void update_events(p11n_conn *c)
{
    if (c->fd < 0)
        return;
    short ev = 0;
    switch (c->state) {
    case P11N_CS_HANDSHAKE:
        if (c->job == NULL && c->act_want > 0)
            ev = POLLIN;
        else if (c->job != NULL && c->incoming)
            ev = P11N_POLL_PEER_GONE;   /* hs_peer_gone */
        break;
    case P11N_CS_ESTABLISHED:
        /* Kept bytes go first: reading more now would reorder messages. */
        if (!c->paused && c->kept == NULL)
            ev = POLLIN;
        break;
    case P11N_CS_CLOSING:
        if (!c->peer_eof)
            ev = POLLIN;  /* read and dropped */
        break;
    default:
        break;
    }
    if (has_output(c))
        ev |= POLLOUT;
    p11n_io_set(c->ctx, c->fd, ev);
}

static void schedule_flush(p11n_conn *c)
{
    if (c->in_flushq)
        return;
    c->in_flushq = 1;
    c->next_flush = c->ctx->cl->flushq;
    c->ctx->cl->flushq = c;
}

/* Room for `need` more bytes at the end of the write queue. Steady state
 * reuses the buffer; it only grows, or comes back after a trim. */
static int wbuf_reserve(p11n_conn *c, size_t need)
{
    if (c->wcap - c->wlen >= need)
        return P11N_OK;
    if (c->wpos > 0) {
        memmove(c->wbuf, c->wbuf + c->wpos, c->wlen - c->wpos);
        c->wlen -= c->wpos;
        c->wpos = 0;
        if (c->wcap - c->wlen >= need)
            return P11N_OK;
    }
    size_t cap = c->wcap ? c->wcap : WBUF_MIN;
    while (cap - c->wlen < need)
        cap *= 2;
    uint8_t *b = realloc(c->wbuf, cap);
    if (b == NULL)
        return P11N_ERR_NOMEM;
    c->wbuf = b;
    c->wcap = cap;
    trimq_add(c);
    return P11N_OK;
}

static void drain_read(p11n_conn *c);

/* ---- stalls of an established connection ----
 * A peer that takes none of the bytes queued for it, or that sends part
 * of a message and stops, holds the connection's buffers for nothing.
 * A half-sent message gets act_timeout_ms without a byte; a queue the
 * peer takes nothing from gets stall_timeout_ms, much longer, because a
 * peer that paused its reads (backpressure) looks the same from here.
 * Any progress restarts either, so a slow link is never cut. Established, c->timer is
 * free for these deadlines; it is armed lazily (when the socket is full,
 * when a frame is split) and re-armed by the check, so steady traffic
 * costs no timer operation. */

static uint64_t stall_due(const p11n_conn *c)
{
    uint64_t t = c->ctx->opt.act_timeout_ms, due = 0;
    if (has_output(c))
        due = c->wprogress + c->ctx->opt.stall_timeout_ms;
    if (c->partial && !c->paused && (due == 0 || c->partial_since + t < due))
        due = c->partial_since + t;
    return due;
}

/* Bytes are about to be queued: an empty queue's stall deadline counts
 * from now, not from its last progress. */
static void queue_starting(p11n_conn *c)
{
    if (!has_output(c))
        c->wprogress = c->ctx->now;
}

static void stall_arm(p11n_conn *c)
{
    uint64_t due = stall_due(c);
    if (c->state == P11N_CS_ESTABLISHED && due != 0
        && (c->timer.slot == 0 || c->timer.at > due))
        p11n_timer_arm(c->ctx, &c->timer, due);
}

static void stall_check(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    uint64_t t = ctx->opt.act_timeout_ms;
    char text[TEXT_LEN];
    if (has_output(c) && ctx->now - c->wprogress >= ctx->opt.stall_timeout_ms) {
        snprintf(text, sizeof(text), "peer took none of %zu queued bytes for %u ms "
            "(it does not read; stall_timeout_ms)", c->wlen - c->wpos,
            ctx->opt.stall_timeout_ms);
        p11n_conn_end(c, P11N_ERR_TIMEOUT, text);
        return;
    }
    if (c->partial && !c->paused && ctx->now - c->partial_since >= t) {
        snprintf(text, sizeof(text), "no byte of an unfinished message for %llu ms (the peer "
            "stopped in the middle of a frame)", (unsigned long long)(ctx->now - c->partial_since));
        p11n_conn_end(c, P11N_ERR_TIMEOUT, text);
        return;
    }
    stall_arm(c);
}

static unsigned linger_ms(const p11n_ctx *ctx)
{
    return ctx->opt.act_timeout_ms < P11N_LINGER_MS ? ctx->opt.act_timeout_ms : P11N_LINGER_MS;
}

/* Closing, and every queued byte is with the kernel: send our end of
 * stream after them, then linger until the peer's. */
static void finish_close(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    if (c->shut_wr)
        return;
    if (c->peer_eof) {
        p11n_conn_end(c, P11N_OK, "closed locally");
        return;
    }
    if (shutdown(c->fd, SHUT_WR) != 0) {
        /* ENOTCONN: the peer is gone already; nothing to linger for. */
        p11n_conn_end(c, P11N_OK, "closed locally");
        return;
    }
    c->shut_wr = 1;
    p11n_timer_arm(ctx, &c->timer, ctx->now + linger_ms(ctx));
    p11n_log(ctx, P11N_LOG_DEBUG, "conn #%lu: queue flushed, end of stream sent; "
        "waiting up to %u ms for the peer's", c->id, linger_ms(ctx));
    update_events(c);
    drain_read(c);  /* the peer may have closed already */
}

/* Closing: read and drop what the peer still sends; its end of stream
 * ends the connection once ours is sent. */
static void drain_read(p11n_conn *c)
{
    ssize_t n = recv(c->fd, c->ctx->rbuf, P11N_READ_CHUNK, 0);
    if (n > 0)
        return;
    if (n == 0) {
        c->peer_eof = 1;
        if (c->shut_wr)
            p11n_conn_end(c, P11N_OK, "closed locally");
        else
            update_events(c);  /* a half-close: flushing goes on */
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return;
    if (c->shut_wr)
        /* Everything was flushed; the peer closed without reading on. */
        p11n_conn_end(c, P11N_OK, "closed locally (the peer then reset the connection)");
    else
        end_errno(c, "recv while closing", errno);
}


/* Write the queue; one send() per call while the socket takes it. */
static void conn_flush(p11n_conn *c)
{
    if (c->fd < 0)
        return;
    while (c->wpos < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                update_events(c);
                stall_arm(c);
                return;
            }
            end_errno(c, "send", errno);
            return;
        }
        c->wpos += (size_t)n;
        c->wrote = 1;
        c->wprogress = c->ctx->now;
    }
    c->wpos = c->wlen = 0;
    update_events(c);
    if (c->state == P11N_CS_CLOSING) {
        finish_close(c);
    } else if (c->want_writable && c->state == P11N_CS_ESTABLISHED) {
        c->want_writable = 0;
        c->ctx->app_calls++;
        if (c->ch->cb.writable != NULL)
            c->ch->cb.writable(c, c->arg);
    }
}

static void flush_all(p11n_ctx *ctx)
{
    /* Take the list: connections queued by callbacks during this pass are
     * written in the next one, so a writer cannot starve the loop. */
    p11n_conn *q = ctx->cl->flushq;
    ctx->cl->flushq = NULL;
    while (q != NULL) {
        p11n_conn *c = q;
        q = c->next_flush;
        c->in_flushq = 0;
        if (c->state != P11N_CS_DEAD && c->state != P11N_CS_BACKOFF)
            conn_flush(c);
    }
}

/* Drop the write buffers of connections that wrote nothing for a whole
 * interval, and the receive buffers of those with no traffic for as long:
 * an idle connection then holds no large buffer. A timer runs between
 * reads, so no message pointer from the decoder is in use. */
static void trim_idle(void *ctxp)
{
    p11n_ctx *ctx = ctxp;
    p11n_conn *next;
    for (p11n_conn *c = ctx->cl->trimq; c != NULL; c = next) {
        next = c->trim_next;
        if (!c->wrote && c->wbuf != NULL && c->wpos == c->wlen) {
            free(c->wbuf);
            c->wbuf = NULL;
            c->wcap = c->wpos = c->wlen = 0;
        }
        c->wrote = 0;
        int idle = ctx->now - c->last_active >= 1000;
        if (c->t != NULL && idle)
            (void)p11n_transport_trim(c->t);
        /* Nothing left to release until it reads or writes again (a
         * frame body gathered across reads is not released). */
        if (c->wbuf == NULL && (c->t == NULL || idle) && !c->partial)
            trimq_remove(c);
    }
    p11n_timer_arm(ctx, &ctx->cl->trim, ctx->now + TRIM_INTERVAL_MS);
}

/* ---- handshake ---- */

enum { P11N_JOB_WRITE = 1, P11N_JOB_READ = 2 };

/* One handshake step's token work on a worker thread: the handshake's
 * pending operation (p11n_handshake_pending), run there and resumed on the
 * loop thread. */
typedef struct hs_job {
    p11n_job base;
    p11n_ctx *ctx;                /* for the log line of an orphan */
    unsigned long id;             /* the connection's, likewise */
    int op;                       /* P11N_JOB_WRITE or _READ */
    p11n_handshake *hs;           /* the job's until it is done */
    p11n_handshake_op *pending;   /* hs's pending operation */
} hs_job;

static int job_wanted(void *base)
{
    return p11n_job_wanted(base);
}

/* Worker thread: sees the job alone, never the connection. Before each
 * token operation the step asks whether the job is still wanted. */
static void job_run(p11n_job *base)
{
    hs_job *job = (hs_job *)base;
    base->rc = p11n_handshake_pending_run_gated(job->pending, job_wanted, base, base->ss);
}

/* The connection goes on without its step in flight: the job is dropped
 * before its next token operation and frees what it holds when it comes
 * back. */
static void job_orphan(p11n_conn *c)
{
    if (c->job == NULL)
        return;
    c->job->owner = NULL;
    p11n_job_cancel(c->job);
    c->job = NULL;
}

static int hs_create(p11n_conn *c)
{
    p11n_handshake_config cfg = { .size = sizeof(p11n_handshake_config),
        .pattern = c->ch->wire->name,
        .prologue = c->ch->prologue,
        .prologue_len = c->ch->prologue_len,
        .local = c->ch->key,
        /* Token steps come back as PENDING and go to a worker (hs_offload);
         * everything else runs here on the loop thread. */
        .flags = P11N_HS_ASYNC_TOKEN,
    };
    if (c->incoming) {
        /* KK: the candidates in the store now; XK: any key, checked
         * against the store when the handshake ends (hs_complete). */
        uint8_t cand[P11N_MAX_KK_CANDIDATES][P11N_PUBKEY_LEN];
        if (c->ch->wire->responder_chooses) {
            cfg.nremote = p11n_trust_candidates(c, cand);
            c->ncand = cfg.nremote;
            if (cfg.nremote == 0)
                return P11N_ERR_UNKNOWN_PEER;
            cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])cand;
        }
        return p11n_handshake_respond(&cfg, &c->hs);
    }
    int rc = p11n_trust_refresh(c);
    if (rc != P11N_OK)
        return rc;
    cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])&c->remote;
    cfg.nremote = 1;
    return p11n_handshake_initiate(&cfg, &c->hs);
}

static void hs_fail(p11n_conn *c, const char *what, int rc)
{
    char text[TEXT_LEN + 80];
    if (kk_act1_unverified(c, rc))
        snprintf(text, sizeof(text), "handshake %s: act 1 did not verify under any of the %zu "
            "accepted initiator keys: an initiator not in our ceremony, a changed key, a "
            "different pattern or prologue, or a corrupted act", what, c->ncand);
    else
        snprintf(text, sizeof(text), "handshake %s: %s", what, p11n_strerror(rc));
    p11n_conn_end(c, rc, text);
}

/* Make the attempt's handshake (hs_create), naming a peer that left the
 * store. Returns 0 when the attempt has ended. */
static int hs_setup(p11n_conn *c)
{
    int rc = hs_create(c);
    if (rc == P11N_ERR_UNKNOWN_PEER) {
        char text[TEXT_LEN];
        if (c->incoming)
            snprintf(text, sizeof(text), "handshake setup: none of the listener's accepted "
                "peers is in the peer store");
        else
            snprintf(text, sizeof(text), "handshake setup: peer %s is no longer in the peer "
                "store", c->peer_name);
        p11n_conn_end(c, rc, text);
        return 0;
    }
    if (rc != P11N_OK) {
        hs_fail(c, "setup", rc);
        return 0;
    }
    return 1;
}

/* An early handshake took its peer's key from the store when the attempt
 * began, and the store may have changed during the dial (nothing could
 * revoke the attempt then): a key that left or changed ends the attempt
 * before anything is sent (a reconnect takes the new key). Returns 0 when
 * the attempt has ended. */
static int early_key_current(p11n_conn *c)
{
    uint8_t was[P11N_PUBKEY_LEN];
    memcpy(was, c->remote, sizeof(was));
    int rc = p11n_trust_refresh(c);
    if (rc == P11N_OK && p11n_ct_eq(was, c->remote, sizeof(was)))
        return 1;
    memcpy(c->remote, was, sizeof(was));
    char text[TEXT_LEN];
    snprintf(text, sizeof(text), "peer key revoked while connecting: %s %s", c->peer_name,
        rc != P11N_OK ? "was removed from the peer store" : "has a new key in the peer store");
    p11n_conn_end(c, P11N_ERR_REVOKED, text);
    return 0;
}

/* The socket is ready. An outgoing attempt may have started its first
 * act during the dial (hs_start_early): still on a worker, job_done goes
 * on; made, it goes out now. */
static void handshake_begin(p11n_conn *c)
{
    c->state = P11N_CS_HANDSHAKE;
    c->act_want = 0;
    if ((c->job != NULL || c->hs != NULL) && !early_key_current(c))
        return;
    if (c->job != NULL)
        return;
    if (c->hs == NULL && !hs_setup(c))
        return;
    if (c->act_len > 0) {
        hs_sent(c);
        if (c->state != P11N_CS_HANDSHAKE)
            return;
    }
    hs_step(c);
}

/* Append raw bytes to the write queue. Errors: NOMEM. */
static int conn_queue(p11n_conn *c, const uint8_t *bytes, size_t len)
{
    if (wbuf_reserve(c, len) != P11N_OK)
        return P11N_ERR_NOMEM;
    queue_starting(c);
    memcpy(c->wbuf + c->wlen, bytes, len);
    c->wlen += len;
    schedule_flush(c);
    return P11N_OK;
}

/* The act in c->act is ours to send: queue it. */
static void hs_sent(p11n_conn *c)
{
    if (conn_queue(c, c->act, c->act_len) != P11N_OK) {
        p11n_conn_end(c, P11N_ERR_NOMEM, "out of memory queueing a handshake act");
        return;
    }
    c->act_len = 0;
}

/* The remote key is authenticated, but the store decides whether it may
 * in: a refused key is named (it is public, and the operator needs it to
 * add the peer). */
static void hs_refuse(p11n_conn *c, int rc)
{
    char hex[2 * P11N_PUBKEY_LEN + 1];
    p11n_hex_encode(c->remote, P11N_PUBKEY_LEN, hex);
    char text[TEXT_LEN + 40];
    if (rc == P11N_ERR_REVOKED)
        snprintf(text, sizeof(text), "peer key revoked during the handshake: %s %s", c->incoming
            ? "initiator key" : "responder key", hex);
    else
        snprintf(text, sizeof(text), "initiator key %s is not an accepted peer", hex);
    p11n_conn_end(c, rc, text);
}

static void hs_complete(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    int rc = p11n_handshake_remote(c->hs, c->remote);
    if (rc != P11N_OK) {
        hs_fail(c, "remote key", rc);
        return;
    }
    rc = p11n_trust_authorize(c);
    if (rc != P11N_OK) {
        hs_refuse(c, rc);
        return;
    }
    if (!p11n_admit_established(c))
        return;
    rc = p11n_handshake_finish(c->hs, &c->t);
    p11n_handshake_free(c->hs);
    c->hs = NULL;
    if (rc != P11N_OK) {
        hs_fail(c, "finish", rc);
        return;
    }
    uncount_handshake(c);
    p11n_timer_cancel(ctx, &c->timer);
    c->state = P11N_CS_ESTABLISHED;
    c->failures = 0;
    c->last_active = ctx->now;
    if (ctx->opt.idle_timeout_ms > 0)
        p11n_timer_arm(ctx, &c->idle, ctx->now + ctx->opt.idle_timeout_ms);
    char where[2 * P11N_ADDRSTR + 300];
    conn_where(c, where, sizeof(where));
    struct p11n_log_fields lf = { .event = "established", .conn_id = c->id, .peer = c->peer,
        .addr = where };
    p11n_log_with(ctx, P11N_LOG_INFO, &lf,
        "conn #%lu %s %s: handshake complete (%s %s), peer %s, %llu ms",
        c->id, c->incoming ? "from" : "to", where, c->ch->wire->name,
        c->incoming ? "responder" : "initiator", c->peer,
        (unsigned long long)(ctx->now - c->started));
    update_events(c);
    ctx->app_calls++;
    if (c->ch->cb.established != NULL)
        c->ch->cb.established(c, c->peer, c->arg);
}

static void job_done(p11n_job *base);

/* An incoming peer left while its step was with a worker: nobody is
 * left to answer, so the step is dropped before its next token
 * operation (job_orphan, through the end). The initiator of a handshake
 * never shuts down its side before our act comes. */
static void hs_peer_gone(p11n_conn *c)
{
    p11n_conn_end(c, P11N_ERR_CLOSED, "closed by peer while its handshake step waited for "
        "the token: dropped before any further token operation");
}

/* The worker pool refused the step: say which budget, and the option
 * that raises it. */
static void hs_refused(p11n_conn *c, int rc, unsigned cost)
{
    char text[TEXT_LEN + 80];
    if (rc == P11N_ERR_OVERLOAD)
        snprintf(text, sizeof(text), "act refused before any token operation: token work "
            "queued for unauthenticated peers would exceed max_unauth_token_ops (%u "
            "derivations; this act costs up to %u)", c->ctx->opt.max_unauth_token_ops, cost);
    else if (rc == P11N_ERR_LIMIT)
        snprintf(text, sizeof(text), "handshake step refused: token work queued for outgoing "
            "connections would exceed max_token_ops (%u derivations; this step costs up to %u)",
            c->ctx->opt.max_token_ops, cost);
    else
        snprintf(text, sizeof(text), "cannot hand the handshake to a worker: %s",
            p11n_strerror(rc));
    p11n_conn_end(c, rc, text);
}

/* The handshake's step is PENDING on token work: hand it to a worker. The
 * job takes the handshake (nothing may touch it while the operation runs)
 * and gives it back in job_done. */
static int hs_offload(p11n_conn *c, int op)
{
    hs_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        p11n_conn_end(c, P11N_ERR_NOMEM, "out of memory handing the handshake to a worker");
        return P11N_ERR_NOMEM;
    }
    p11n_handshake_op *pending = p11n_handshake_pending(c->hs);
    p11n_job *base = &job->base;
    base->run = job_run;
    base->done = job_done;
    base->owner = c;
    base->cls = p11n_handshake_op_unauth(pending) ? P11N_JOB_UNAUTH : P11N_JOB_OUTGOING;
    base->cost = p11n_handshake_op_cost(pending);
    base->batch = p11n_handshake_op_batch(pending);
    base->batch_set_len = p11n_handshake_op_batch_set(pending, &base->batch_set);
    /* How long the work is still worth doing: a read's act has arrived,
     * and its peer now waits for our answer up to an act deadline (the
     * act-1 deadline was for the peer's sending, not for our queue); a
     * write is due by the timer if armed. */
    base->deadline = op == P11N_JOB_READ ? c->ctx->now + c->ctx->opt.act_timeout_ms
                                         : c->timer.slot != 0 ? c->timer.at : 0;
    job->ctx = c->ctx;
    job->id = c->id;
    job->op = op;
    job->hs = c->hs;
    job->pending = pending;
    int rc = p11n_worker_submit(c->ctx, base);
    if (rc != P11N_OK) {
        free(job);
        hs_refused(c, rc, p11n_handshake_op_cost(pending));
        return rc;
    }
    c->hs = NULL;
    c->job = base;
    p11n_log(c->ctx, P11N_LOG_DEBUG, "conn #%lu: token %s handed to a worker (%s work, up to "
        "%u derivation%s%s)", c->id, op == P11N_JOB_WRITE ? "write" : "read",
        base->cls == P11N_JOB_UNAUTH ? "unauthenticated" : "outgoing", base->cost,
        base->cost == 1 ? "" : "s", base->batch != NULL ? ": es + ss per candidate" : "");
    update_events(c);
    return P11N_OK;
}

/* A token key's first act takes the token's time: start it on a worker
 * now, while the dialer resolves, connects and opens a proxy tunnel;
 * handshake_begin sends it once both are ready. An attempt that ends
 * first orphans the job, which frees the handshake when it comes back. */
static void hs_start_early(p11n_conn *c)
{
    if (!p11n_key_is_slow((const struct p11n_key *)c->ch->key) || !hs_setup(c))
        return;
    if (p11n_handshake_token_step(c->hs) != 1)
        return;  /* no token work in act 1: made when the socket is ready */
    int rc = p11n_handshake_write(c->hs, c->act, sizeof(c->act), &c->act_len);
    if (rc == P11N_ERR_PENDING)
        hs_offload(c, P11N_JOB_WRITE);
    else if (rc != P11N_OK)
        hs_fail(c, "write", rc);
}

/* An incoming connection's first act has the short deadline: an idle
 * socket costs its sender nothing and holds a handshake slot until then.
 * Never longer than the later acts' deadline. */
static unsigned act_deadline_ms(const p11n_conn *c)
{
    const p11n_ctx_options *o = &c->ctx->opt;
    if (c->incoming && !c->acts_in && o->act1_timeout_ms < o->act_timeout_ms)
        return o->act1_timeout_ms;
    return o->act_timeout_ms;
}

/* Advance the handshake as far as it goes without peer input. */
static void hs_step(p11n_conn *c)
{
    for (;;) {
        if (p11n_handshake_done(c->hs)) {
            hs_complete(c);
            return;
        }
        size_t want = p11n_handshake_want(c->hs);
        if (want == 0) {
            int rc = p11n_handshake_write(c->hs, c->act, sizeof(c->act), &c->act_len);
            if (rc == P11N_ERR_PENDING) {
                hs_offload(c, P11N_JOB_WRITE);
                return;
            }
            if (rc != P11N_OK) {
                hs_fail(c, "write", rc);
                return;
            }
            hs_sent(c);
            if (c->state != P11N_CS_HANDSHAKE)
                return;
            continue;
        }
        if (want > c->ch->wire->max_act) {
            p11n_conn_end(c, P11N_ERR_STATE, "handshake asks for an act larger than its pattern's");
            return;
        }
        c->act_want = want;
        c->act_len = 0;
        p11n_timer_arm(c->ctx, &c->timer, c->ctx->now + act_deadline_ms(c));
        p11n_admit_wait(c);
        update_events(c);
        return;
    }
}

/* Read exactly the rest of the current act. */
static void hs_read(p11n_conn *c)
{
    ssize_t n = recv(c->fd, c->act + c->act_len, c->act_want - c->act_len, 0);
    if (n == 0) {
        char text[TEXT_LEN];
        snprintf(text, sizeof(text), "closed by peer during the handshake (%zu of %zu act bytes)",
            c->act_len, c->act_want);
        p11n_conn_end(c, P11N_ERR_CLOSED, text);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            end_errno(c, "recv during the handshake", errno);
        return;
    }
    c->act_len += (size_t)n;
    if (c->act_len < c->act_want)
        return;
    p11n_timer_cancel(c->ctx, &c->timer);
    c->act_want = 0;
    c->acts_in = 1;
    p11n_admit_unwait(c);
    int rc = p11n_handshake_read(c->hs, c->act, c->act_len);
    if (rc == P11N_ERR_PENDING) {
        hs_offload(c, P11N_JOB_READ);
        return;
    }
    if (rc != P11N_OK) {
        hs_fail(c, "act from peer rejected", rc);
        return;
    }
    hs_step(c);
}

/* A worker's step failed: the token's own account of it (the call and
 * its CKR_ name), copied by the worker, goes into the log line and the
 * `closed` text. */
static void job_fail(p11n_conn *c, int op, int rc, const char *why)
{
    const char *what = op == P11N_JOB_WRITE ? "write (token)" : "act from peer rejected";
    if (why[0] == '\0') {
        hs_fail(c, what, rc);
        return;
    }
    char text[TEXT_LEN + P11N_JOB_TEXT + 40];
    snprintf(text, sizeof(text), "handshake %s: %s", what, why);
    p11n_conn_end(c, rc, text);
}

/* Loop thread: the step is back. An orphaned one only frees what it
 * holds; otherwise the connection takes the handshake back and goes on. */
static void job_done(p11n_job *base)
{
    hs_job *job = (hs_job *)base;
    p11n_conn *c = base->owner;
    if (c == NULL) {
        p11n_log(job->ctx, P11N_LOG_DEBUG, "conn #%lu: a worker finished a handshake step "
            "of an attempt that has ended: dropped", job->id);
        p11n_handshake_free(job->hs);
        p11n_wipe(job, sizeof(*job));
        free(job);
        return;
    }
    c->job = NULL;
    c->hs = job->hs;
    /* A write's act comes out here; a read leaves act_len 0. A job
     * dropped before the token left its step pending: the drop is why. */
    int rc = p11n_handshake_resume(c->hs, c->act, sizeof(c->act), &c->act_len);
    if (base->dropped != P11N_JOB_RAN)
        rc = base->rc;
    int op = job->op;
    char why[P11N_JOB_TEXT];
    memcpy(why, base->text, sizeof(why));
    p11n_wipe(job, sizeof(*job));
    free(job);
    p11n_log(c->ctx, P11N_LOG_DEBUG, "conn #%lu: worker finished a handshake %s: %s", c->id,
        op == P11N_JOB_WRITE ? "write" : "read", p11n_strerror(rc));
    if (rc != P11N_OK) {
        job_fail(c, op, rc, why);
        return;
    }
    if (op == P11N_JOB_WRITE && c->state == P11N_CS_DIALING) {
        p11n_log(c->ctx, P11N_LOG_DEBUG, "conn #%lu: first act ready before the connection",
            c->id);
        return;  /* handshake_begin sends it */
    }
    if (op == P11N_JOB_WRITE) {
        hs_sent(c);
        if (c->state != P11N_CS_HANDSHAKE)
            return;
    }
    hs_step(c);
}

/* ---- established ---- */

/* Feed received bytes to the decoder and deliver each message, until the
 * bytes run out, the connection ends, or the application pauses reading.
 * Returns the bytes used. */
static size_t deliver(p11n_conn *c, const uint8_t *in, size_t n)
{
    size_t off = 0;
    while (off < n && !c->paused) {
        size_t used = 0, len = 0;
        const uint8_t *msg = NULL;
        int r = p11n_transport_feed(c->t, in + off, n - off, &used, &msg, &len);
        off += used;
        if (r < 0) {
            char text[TEXT_LEN];
            snprintf(text, sizeof(text), "received frame rejected: %s", p11n_strerror(r));
            p11n_conn_end(c, r, text);
            return n;
        }
        if (r == 0) {
            /* The deadline is for a peer that stops, not for a slow link:
             * every byte of the unfinished message restarts it. */
            if (!c->partial || used > 0)
                c->partial_since = c->ctx->now;
            c->partial = 1;
            stall_arm(c);
            break;
        }
        c->partial = 0;
        c->msgs_in++;
        c->bytes_in += len;
        c->ctx->app_calls++;
        if (c->ch->cb.message != NULL) {
            c->delivering = 1;
            c->ch->cb.message(c, msg, len, c->arg);
            c->delivering = 0;
            p11n_transport_free(c->t_retired);
            free(c->kept_retired);
            c->t_retired = NULL;
            c->kept_retired = NULL;
        }
        if (c->state != P11N_CS_ESTABLISHED)
            return n; /* closed or ended by the callback */
    }
    return off;
}

static void conn_read(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    ssize_t n = recv(c->fd, ctx->rbuf, P11N_READ_CHUNK, 0);
    if (n == 0) {
        if (c->partial)
            p11n_conn_end(c, P11N_ERR_RESET, "connection closed by peer in the middle of a message");
        else
            p11n_conn_end(c, P11N_ERR_CLOSED, "closed by peer");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            end_errno(c, "recv", errno);
        return;
    }
    c->last_active = ctx->now;
    trimq_add(c);
    size_t used = deliver(c, ctx->rbuf, (size_t)n);
    if (used == (size_t)n || c->state != P11N_CS_ESTABLISHED)
        return;
    /* Paused in the middle: the rest of the read waits for resuming. */
    if ((c->kept = malloc((size_t)n - used)) == NULL) {
        p11n_conn_end(c, P11N_ERR_NOMEM, "out of memory keeping received bytes while paused");
        return;
    }
    memcpy(c->kept, ctx->rbuf + used, (size_t)n - used);
    c->kept_pos = 0;
    c->kept_len = (size_t)n - used;
    update_events(c);
}

static void read_kept(p11n_ctx *ctx)
{
    /* Take the list: a connection paused and resumed again by a callback
     * waits for the next pass. */
    p11n_conn *q = ctx->cl->readq;
    ctx->cl->readq = NULL;
    while (q != NULL) {
        p11n_conn *c = q;
        q = c->next_read;
        c->in_readq = 0;
        if (c->state != P11N_CS_ESTABLISHED || c->paused || c->kept == NULL)
            continue;
        size_t used = deliver(c, c->kept + c->kept_pos, c->kept_len - c->kept_pos);
        if (c->state != P11N_CS_ESTABLISHED)
            continue; /* ended or closed: the kept bytes are gone */
        c->kept_pos += used;
        if (c->kept_pos < c->kept_len)
            continue;
        free(c->kept);
        c->kept = NULL;
        c->kept_pos = c->kept_len = 0;
        update_events(c);
    }
}

/* ---- outgoing attempts ---- */

/* The dialer is done: a connected (tunnelled) socket to handshake on, or
 * the attempt's end. */
static void dialed(void *arg, int rc, const char *text, int fd, const char *addr)
{
    p11n_conn *c = arg;
    c->dialer = NULL;
    if (rc != P11N_OK) {
        p11n_conn_end(c, rc, text);
        return;
    }
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    if (p11n_io_add(c->ctx, fd, 0, on_io, c) != P11N_OK) {
        close(fd);
        p11n_conn_end(c, P11N_ERR_NOMEM, "out of memory");
        return;
    }
    c->fd = fd;
    handshake_begin(c);
}

static void attempt_start(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    c->started = c->last_active = ctx->now;
    c->msgs_in = c->msgs_out = c->bytes_in = c->bytes_out = 0;
    c->addr[0] = '\0';
    c->peer[0] = '\0';
    c->state = P11N_CS_DIALING;
    char who[32];
    snprintf(who, sizeof(who), "conn #%lu", c->id);
    p11n_log(ctx, P11N_LOG_DEBUG, "conn #%lu: dialing %s:%u for peer %s (%s)", c->id, c->host,
        c->port, c->peer_name, c->ch->wire->name);
    hs_start_early(c);
    if (c->state != P11N_CS_DIALING)
        return;
    int rc = p11n_dial_start(ctx, who, c->host, c->port, &c->proxy, dialed, c, &c->dialer);
    if (rc != P11N_OK)
        p11n_conn_end(c, rc, "out of memory starting a connection attempt");
}

/* ---- event and timer dispatch ---- */

static void on_io(void *obj, int fd, short revents)
{
    (void)fd;
    p11n_conn *c = obj;
    switch (c->state) {
    case P11N_CS_HANDSHAKE:
        if (revents & POLLOUT)
            conn_flush(c);
        if (c->state != P11N_CS_HANDSHAKE)
            return;
        if ((revents & (POLLIN | POLLHUP | POLLERR)) && c->act_want > 0 && c->job == NULL)
            hs_read(c);
        else if (c->job != NULL && c->incoming
            && (revents & (P11N_POLL_PEER_GONE | POLLHUP | POLLERR)))
            hs_peer_gone(c);
        else if ((revents & (POLLHUP | POLLERR)) && !(revents & POLLIN))
            p11n_conn_end(c, P11N_ERR_RESET, "connection lost during the handshake");
        return;
    case P11N_CS_ESTABLISHED:
        if (!c->paused && c->kept == NULL && (revents & (POLLIN | POLLHUP | POLLERR)))
            conn_read(c);
        else if (c->paused && (revents & (POLLHUP | POLLERR)))
            /* Reported whatever the interest: not ending would spin. */
            p11n_conn_end(c, P11N_ERR_RESET, "connection lost while reading was paused");
        if (c->state == P11N_CS_ESTABLISHED && (revents & POLLOUT))
            conn_flush(c);
        return;
    case P11N_CS_CLOSING:
        if (revents & POLLOUT)
            conn_flush(c);
        if (c->state != P11N_CS_CLOSING)
            return;
        if (!c->peer_eof && (revents & (POLLIN | POLLHUP | POLLERR)))
            drain_read(c);
        else if (revents & (POLLHUP | POLLERR))
            p11n_conn_end(c, P11N_ERR_RESET, "connection lost while flushing before close");
        return;
    default:
        return;
    }
}

static void on_timer(void *obj)
{
    p11n_conn *c = obj;
    p11n_ctx *ctx = c->ctx;
    char text[TEXT_LEN];
    if (c->app_closed && c->state != P11N_CS_CLOSING) {
        p11n_conn_end(c, P11N_OK, "closed locally");
        return;
    }
    switch (c->state) {
    case P11N_CS_START:
        attempt_start(c);
        return;
    case P11N_CS_BACKOFF:
        c->state = P11N_CS_START;
        attempt_start(c);
        return;
    case P11N_CS_HANDSHAKE:
        snprintf(text, sizeof(text), "handshake act not received within %u ms (%zu of %zu "
            "bytes)%s", act_deadline_ms(c), c->act_len, c->act_want,
            c->incoming && !c->acts_in ? "; first act: act1_timeout_ms" : "");
        p11n_conn_end(c, P11N_ERR_TIMEOUT, text);
        return;
    case P11N_CS_ESTABLISHED:
        stall_check(c);
        return;
    case P11N_CS_CLOSING:
        if (c->shut_wr) {
            snprintf(text, sizeof(text),
                "closed locally (every message flushed; the peer did not close within %u ms)",
                linger_ms(ctx));
            p11n_conn_end(c, P11N_OK, text);
            return;
        }
        snprintf(text, sizeof(text), "peer did not take the queued messages within %u ms",
            ctx->opt.act_timeout_ms);
        p11n_conn_end(c, P11N_ERR_TIMEOUT, text);
        return;
    default:
        return;
    }
}

static void on_idle(void *obj)
{
    p11n_conn *c = obj;
    p11n_ctx *ctx = c->ctx;
    uint64_t due = c->last_active + ctx->opt.idle_timeout_ms;
    if (c->state != P11N_CS_ESTABLISHED)
        return;
    if (due > ctx->now) {
        p11n_timer_arm(ctx, &c->idle, due);
        return;
    }
    char text[TEXT_LEN];
    snprintf(text, sizeof(text), "idle for %u ms", ctx->opt.idle_timeout_ms);
    p11n_conn_end(c, P11N_ERR_TIMEOUT, text);
}

/* ---- incoming ---- */

int p11n_conn_accepted(p11n_listener *l, int fd, const struct sockaddr *sa)
{
    p11n_ctx *ctx = l->ctx;
    char addr[P11N_ADDRSTR];
    p11n_addr_text(sa, addr);
    int rc = p11n_admit_accept(l, addr);
    if (rc != P11N_OK) {
        close(fd);
        return rc;
    }
    p11n_conn *c = conn_new(ctx, l->ch);
    if (c == NULL) {
        p11n_log(ctx, P11N_LOG_ERROR, "incoming from %s on %s dropped: out of memory", addr,
            l->addr);
        close(fd);
        return P11N_ERR_NOMEM;
    }
    c->incoming = 1;
    c->listener = l;
    l->refs++;
    memcpy(c->addr, addr, sizeof(addr));
    if (p11n_io_add(ctx, fd, 0, on_io, c) != P11N_OK) {
        close(fd);
        c->state = P11N_CS_DEAD;
        p11n_conn_free(c);
        return P11N_ERR_NOMEM;
    }
    c->fd = fd;
    (void)p11n_tcp_setup(ctx, fd);
    c->counted = 1;
    ctx->cl->handshakes_in++;
    l->handshakes++;
    if (p11n_admit_arrival_allowed(l))
        p11n_log(ctx, P11N_LOG_INFO, "conn #%lu incoming from %s on %s (%s)", c->id, addr,
            l->addr, l->ch->wire->name);
    handshake_begin(c);
    return P11N_OK;
}

/* ---- the loop's hooks ---- */

static void settle(p11n_ctx *ctx)
{
    read_kept(ctx);
    flush_all(ctx);
    free_dead(ctx);
}

static int settle_pending(const p11n_ctx *ctx)
{
    const struct p11n_conn_layer *cl = ctx->cl;
    return cl->flushq != NULL || cl->readq != NULL || cl->dead != NULL;
}

static void teardown(p11n_ctx *ctx)
{
    ctx->cl->dead = NULL; /* dead connections are still on ctx->cl->conns */
    while (ctx->cl->conns != NULL)
        p11n_conn_free(ctx->cl->conns);
    while (ctx->cl->listeners != NULL)
        p11n_listener_free(ctx->cl->listeners);
    p11n_timer_cancel(ctx, &ctx->cl->trim);
    p11n_timers_release(ctx, 1);
    free(ctx->cl);
    ctx->cl = NULL;
    ctx->hooks = NULL;
}

static const p11n_loop_hooks conn_hooks = {
    .settle = settle,
    .pending = settle_pending,
    .teardown = teardown,
};

int p11n_conn_layer_attach(p11n_ctx *ctx)
{
    if (ctx->cl != NULL)
        return P11N_OK;
    if ((ctx->cl = calloc(1, sizeof(*ctx->cl))) == NULL)
        return P11N_ERR_NOMEM;
    if (p11n_timers_reserve(ctx, 1) != P11N_OK) {
        free(ctx->cl);
        ctx->cl = NULL;
        return P11N_ERR_NOMEM;
    }
    ctx->hooks = &conn_hooks;
    p11n_timer_init(&ctx->cl->trim, trim_idle, ctx);
    p11n_timer_arm(ctx, &ctx->cl->trim, ctx->now + TRIM_INTERVAL_MS);
    return P11N_OK;
}

/* ---- public ---- */

/* An identifier binds the connection to the store (its key is looked up
 * again at each attempt); a key in hex is trusted as given. */
static int resolve_peer(p11n_ctx *ctx, const char *peer, p11n_conn *c)
{
    const p11n_peer_entry *e = p11n_peer_by_id(ctx, peer);
    if (e != NULL) {
        memcpy(c->remote, e->pub, P11N_PUBKEY_LEN);
        snprintf(c->peer_name, sizeof(c->peer_name), "%s", e->id);
        return P11N_OK;
    }
    c->by_key = 1;
    if (strlen(peer) != 2 * P11N_PUBKEY_LEN
        || p11n_hex_decode(peer, 2 * P11N_PUBKEY_LEN, c->remote, P11N_PUBKEY_LEN) != P11N_OK)
        return P11N_ERR_UNKNOWN_PEER;
    if (p11n_dh_secp256k1.check_pub(c->remote) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    e = p11n_peer_by_pub(ctx, c->remote);
    snprintf(c->peer_name, sizeof(c->peer_name), "%s", e != NULL ? e->id : peer);
    return P11N_OK;
}

int p11n_connect(p11n_ctx *ctx, const char *host, uint16_t port, const char *peer,
    const p11n_connect_options *opts, p11n_conn **out)
{
    if (out != NULL)
        *out = NULL;
    p11n_connect_options copy;
    if (opts != NULL && p11n_options_copy(&copy, sizeof(copy), opts) != P11N_OK)
        return P11N_ERR_INVALID_ARG;
    opts = opts != NULL ? &copy : NULL;
    if (ctx == NULL || host == NULL || *host == '\0' || port == 0 || peer == NULL
        || opts == NULL || opts->ch.key == NULL || out == NULL
        || (opts->ch.prologue == NULL && opts->ch.prologue_len > 0))
        return P11N_ERR_INVALID_ARG;
    p11n_channel *ch;
    int rc = p11n_channel_new(&opts->ch, &ch);
    if (rc != P11N_OK)
        return rc;
    p11n_conn *c = conn_new(ctx, ch);
    p11n_channel_unref(ch);  /* the connection's reference alone */
    if (c == NULL)
        return P11N_ERR_NOMEM;
    p11n_log_key_warning(ctx, opts->ch.key);
    if (opts->socks5 != NULL)
        rc = p11n_proxy_parse(opts->socks5, &c->proxy);
    else if (ctx->proxy.host != NULL)
        rc = p11n_proxy_copy(&ctx->proxy, &c->proxy);
    if (rc == P11N_OK)
        rc = resolve_peer(ctx, peer, c);
    if (rc == P11N_OK && (c->host = strdup(host)) == NULL)
        rc = P11N_ERR_NOMEM;
    if (rc != P11N_OK) {
        p11n_conn_free(c);
        return rc;
    }
    c->port = port;
    c->reconnect = opts->reconnect != 0;
    c->backoff_min = opts->backoff_min_ms ? opts->backoff_min_ms : DEF_BACKOFF_MIN_MS;
    c->backoff_max = opts->backoff_max_ms ? opts->backoff_max_ms : DEF_BACKOFF_MAX_MS;
    if (c->backoff_max < c->backoff_min)
        c->backoff_max = c->backoff_min;
    /* Start from the loop, so no callback runs inside this call. */
    c->state = P11N_CS_START;
    p11n_timer_arm(ctx, &c->timer, ctx->now);
    *out = c;
    return P11N_OK;
}

int p11n_send(p11n_conn *c, const uint8_t *msg, size_t len)
{
    if (c == NULL || (msg == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    if (len > P11N_MAX_MESSAGE)
        return P11N_ERR_MESSAGE_TOO_LARGE;
    if (c->state != P11N_CS_ESTABLISHED)
        return P11N_ERR_STATE;
    if (c->wlen - c->wpos >= c->ctx->opt.write_high_water) {
        c->want_writable = 1;
        return P11N_ERR_WOULD_BLOCK;
    }
    int rc = wbuf_reserve(c, len + P11N_FRAME_OVERHEAD);
    if (rc != P11N_OK)
        return rc;
    queue_starting(c);
    size_t outlen = 0;
    static const uint8_t empty[1];
    rc = p11n_transport_seal(c->t, len ? msg : empty, len, c->wbuf + c->wlen,
        c->wcap - c->wlen, &outlen);
    if (rc != P11N_OK)
        return rc;
    c->wlen += outlen;
    c->msgs_out++;
    c->bytes_out += len;
    c->last_active = c->ctx->now;
    schedule_flush(c);
    return P11N_OK;
}

void p11n_close(p11n_conn *c)
{
    if (c == NULL || c->state == P11N_CS_DEAD || c->app_closed)
        return;
    c->app_closed = 1;
    p11n_ctx *ctx = c->ctx;
    if (c->state == P11N_CS_ESTABLISHED) {
        c->state = P11N_CS_CLOSING;
        /* No message is delivered any more: kept ones are dropped. */
        kept_drop(c);
        c->paused = 0;
        p11n_timer_cancel(ctx, &c->idle);
        p11n_timer_arm(ctx, &c->timer, ctx->now + ctx->opt.act_timeout_ms);
        update_events(c);
        schedule_flush(c);  /* finishes the close once the queue is empty */
        return;
    }
    /* Other states end from the loop, so no callback runs in here. */
    p11n_timer_arm(ctx, &c->timer, ctx->now);
}

int p11n_conn_pause_read(p11n_conn *c, int pause)
{
    if (c == NULL)
        return P11N_ERR_INVALID_ARG;
    if (c->state != P11N_CS_ESTABLISHED)
        return P11N_ERR_STATE;
    if (pause) {
        c->paused = 1;
    } else if (c->paused) {
        c->paused = 0;
        /* Reading resumes: the rest of a split frame gets its full time. */
        c->partial_since = c->ctx->now;
        stall_arm(c);
        /* Kept messages are delivered by the loop, not inside this call. */
        if (c->kept != NULL && !c->in_readq) {
            c->in_readq = 1;
            c->next_read = c->ctx->cl->readq;
            c->ctx->cl->readq = c;
        }
    }
    update_events(c);
    return P11N_OK;
}

void p11n_conn_set_arg(p11n_conn *c, void *arg)
{
    if (c != NULL)
        c->arg = arg;
}

