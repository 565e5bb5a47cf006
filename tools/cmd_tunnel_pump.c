/*
 * One tunnelled connection: the byte pump between a plain socket and a
 * Noise channel.
 *
 * Plain -> Noise: each read (up to one message, P11N_MAX_MESSAGE bytes) is
 * sent as one transport message, as it arrived. When p11n_send says
 * WOULD_BLOCK the bytes are held and the plain socket is not read again
 * until `writable`: TCP then holds the plain peer back.
 * Noise -> plain: each message is written to the plain socket; what the
 * socket does not take is buffered, and above OUT_HIGH bytes the channel's
 * reading pauses until the buffer drains below OUT_LOW.
 * So each connection holds at most one held message, OUT_HIGH plus one
 * message of output, and the library's own write queue (its high-water
 * mark) — whatever the speed of either peer.
 *
 * End of stream (doc/design.md, "Tunnel end of stream"): the plain side's
 * EOF is sent as a zero-length message; a zero-length message received
 * shuts the plain socket's write side once the buffered bytes are out. The
 * connection ends when both directions have ended. A channel that ends
 * before its end-of-stream message means the stream was cut short: the
 * plain socket is then reset, never closed cleanly.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tunnel.h"

#define OUT_HIGH (256 * 1024)     /* plain output buffered before the channel pauses */
#define OUT_LOW (64 * 1024)       /* ... and resumes below this */
#define READS_PER_WAKE 16         /* plain reads per readiness: up to about the library's
                                     queue (1 MiB), so one wake-up fills it */

static uint8_t rbuf[P11N_MAX_MESSAGE]; /* one thread: one read buffer */

struct tun *tun_new(struct tunnel *t, int fd)
{
    struct tun *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->kind = TUN_KIND_CONN;
    c->t = t;
    c->fd = fd;
    c->id = ++t->next_id;
    c->next = t->conns;
    t->conns = c;
    return c;
}

static size_t pending(const struct tun *c)
{
    return c->out_len - c->out_pos;
}

/* Nothing left: the loop frees it. */
static void maybe_dead(struct tun *c)
{
    if (c->dead || c->conn != NULL || c->fd >= 0)
        return;
    c->dead = 1;
    tun_log(P11N_LOG_INFO, "tunnel #%lu ended: %llu bytes sent into the channel, %llu received",
        c->id, c->bytes_up, c->bytes_down);
}

static void close_channel(struct tun *c)
{
    if (c->conn != NULL && !c->closing) {
        c->closing = 1;
        p11n_close(c->conn);
    }
}

void tun_abort(struct tun *c, const char *fmt, ...)
{
    if (c->dead)
        return;
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    tun_log(P11N_LOG_INFO, "tunnel #%lu: %s; closing", c->id, why);
    if (c->fd >= 0) {
        tun_close_reset(c->fd);
        c->fd = -1;
    }
    close_channel(c);
    maybe_dead(c);
}

/* Both directions ended: close both sides cleanly. */
static void check_done(struct tun *c)
{
    if (c->fd >= 0 && c->eos_rcvd && c->wr_shut && (c->eos_sent || c->conn == NULL)) {
        close(c->fd);
        c->fd = -1;
        close_channel(c);
    }
    maybe_dead(c);
}

static void flush_out(struct tun *c)
{
    while (pending(c) > 0) {
        ssize_t n = send(c->fd, c->out + c->out_pos, pending(c), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            tun_abort(c, "writing to the plain side: %s", strerror(errno));
            return;
        }
        c->out_pos += (size_t)n;
    }
    if (pending(c) == 0)
        c->out_pos = c->out_len = 0;
    if (c->noise_paused && pending(c) <= OUT_LOW && c->conn != NULL && !c->closing) {
        c->noise_paused = 0;
        if (p11n_conn_pause_read(c->conn, 0) != P11N_OK) {
            tun_abort(c, "cannot resume reading the channel");
            return;
        }
    }
    if (pending(c) == 0 && c->eos_rcvd && !c->wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->wr_shut = 1;
        check_done(c);
    }
}

int tun_queue_out(struct tun *c, const uint8_t *b, size_t len)
{
    if (c->out_cap - c->out_len < len && c->out_pos > 0) {
        memmove(c->out, c->out + c->out_pos, pending(c));
        c->out_len -= c->out_pos;
        c->out_pos = 0;
    }
    if (c->out_cap - c->out_len < len) {
        uint8_t *o = realloc(c->out, c->out_len + len);
        if (o == NULL)
            return -1;
        c->out = o;
        c->out_cap = c->out_len + len;
    }
    memcpy(c->out + c->out_len, b, len);
    c->out_len += len;
    return 0;
}

/* Noise -> plain: write at once what the socket takes, buffer the rest. */
static void deliver(struct tun *c, const uint8_t *msg, size_t len)
{
    c->bytes_down += len;
    if (pending(c) == 0) {
        ssize_t n = send(c->fd, msg, len, MSG_NOSIGNAL);
        if (n > 0) {
            msg += n;
            len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            tun_abort(c, "writing to the plain side: %s", strerror(errno));
            return;
        }
    }
    if (len > 0 && tun_queue_out(c, msg, len) != 0) {
        tun_abort(c, "out of memory");
        return;
    }
    if (pending(c) > OUT_HIGH && !c->noise_paused) {
        if (p11n_conn_pause_read(c->conn, 1) != P11N_OK) {
            tun_abort(c, "cannot pause reading the channel");
            return;
        }
        c->noise_paused = 1;
    }
}

/* Plain -> Noise: one message, or the end of stream when len is 0. */
static void send_up(struct tun *c, const uint8_t *b, size_t len)
{
    int rc = p11n_send(c->conn, b, len);
    if (rc == P11N_ERR_WOULD_BLOCK) {
        if (c->held == NULL && (c->held = malloc(P11N_MAX_MESSAGE)) == NULL) {
            tun_abort(c, "out of memory");
            return;
        }
        if (b != c->held)   /* `writable` retries from `held` itself */
            memcpy(c->held, b, len);
        c->held_len = len;
        c->blocked = 1;
        return;
    }
    if (rc != P11N_OK) {
        tun_abort(c, "sending into the channel: %s", p11n_strerror(rc));
        return;
    }
    c->bytes_up += len;
    if (len == 0) {
        c->eos_sent = 1;
        check_done(c);
    }
}

static void read_plain(struct tun *c)
{
    for (int i = 0; i < READS_PER_WAKE && !c->blocked && c->fd >= 0 && !c->rd_eof; i++) {
        ssize_t n = recv(c->fd, rbuf, sizeof(rbuf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n < 0) {
            tun_abort(c, "reading the plain side: %s", strerror(errno));
            return;
        }
        if (n == 0)
            c->rd_eof = 1;
        send_up(c, rbuf, (size_t)n);
    }
}

void tun_start(struct tun *c)
{
    c->up = 1;
    tun_log(P11N_LOG_DEBUG, "tunnel #%lu: carrying bytes", c->id);
}

short tun_events(const struct tun *c)
{
    if (c->fd < 0 || c->dead)
        return 0;
    if (c->connecting)
        return POLLOUT;
    short ev = 0;
    if (c->up && !c->rd_eof && !c->blocked && c->conn != NULL && !c->closing)
        ev |= POLLIN;
    if (pending(c) > 0)
        ev |= POLLOUT;
    return ev;
}

void tun_ready(struct tun *c, short revents)
{
    if (c->connecting) {
        tun_target_ready(c, revents);
        return;
    }
    if (revents & (POLLOUT | POLLERR | POLLHUP))
        if (pending(c) > 0)
            flush_out(c);
    if (!c->dead && c->fd >= 0 && (revents & (POLLIN | POLLHUP | POLLERR))
        && (tun_events(c) & POLLIN))
        read_plain(c);
}

void tun_reap(struct tunnel *t)
{
    for (struct tun **p = &t->conns; *p != NULL;) {
        struct tun *c = *p;
        if (!c->dead) {
            p = &c->next;
            continue;
        }
        *p = c->next;
        free(c->held);
        free(c->out);
        free(c);
    }
}

/* ---- the channel's callbacks ---- */

static void cb_established(p11n_conn *conn, const char *peer, void *arg)
{
    if (*(int *)arg == TUN_KIND_TUNNEL) {
        tun_established(conn, peer, arg);   /* server: a new connection */
        return;
    }
    tun_start(arg);                         /* client: its channel is up */
}

static void cb_message(p11n_conn *conn, const uint8_t *msg, size_t len, void *arg)
{
    struct tun *c = arg;
    (void)conn;
    if (c->dead || c->fd < 0)
        return;
    if (c->eos_rcvd) {
        tun_abort(c, "the peer sent bytes after its end of stream");
        return;
    }
    if (len > 0) {
        deliver(c, msg, len);
        return;
    }
    c->eos_rcvd = 1;
    flush_out(c);
}

static void cb_writable(p11n_conn *conn, void *arg)
{
    struct tun *c = arg;
    (void)conn;
    if (!c->blocked || c->dead)
        return;
    c->blocked = 0;
    send_up(c, c->held, c->held_len);
}

static void cb_closed(p11n_conn *conn, int reason, const char *text, int final, void *arg)
{
    struct tun *c = arg;
    (void)conn;
    if (!final || c->kind != TUN_KIND_CONN)
        return;   /* a server handshake that failed: the library logged it */
    c->conn = NULL;
    if (c->fd >= 0 && !c->up && !c->connecting) {
        tun_log(P11N_LOG_INFO, "tunnel #%lu: channel failed: %s (%s)", c->id, text,
            p11n_strerror(reason));
        tun_close_reset(c->fd);
        c->fd = -1;
    } else if (c->fd >= 0 && !c->eos_rcvd) {
        tun_abort(c, "channel ended before its end of stream: %s", text);
    } else if (c->fd >= 0) {
        /* Everything for the plain side arrived: write it out, then close. */
        c->rd_eof = 1;
        check_done(c);
    }
    maybe_dead(c);
}

const p11n_callbacks tun_callbacks = {
    .established = cb_established,
    .message = cb_message,
    .writable = cb_writable,
    .closed = cb_closed,
};
