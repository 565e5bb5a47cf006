/*
 * What differs between the two ends of a tunnel: how a connection starts.
 *
 * server: the library accepts and authenticates the channel; once it is
 *   established, one plain connection is opened to the target. The
 *   channel's reading is paused meanwhile, so the peer's bytes wait in TCP
 *   rather than in memory.
 * client: a plain connection is accepted; one channel is opened for it
 *   (through the SOCKS5 proxy if given). Its plain socket is not read
 *   until the channel is established, so its bytes wait in TCP too.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_net.h"
#include "tunnel.h"
#include "cli_control.h"

#define ACCEPT_BATCH 16           /* plain connections accepted per wake-up */
#define ACCEPT_PAUSE_MS 100       /* out of fds or memory: the listening socket stays
                                     readable, so stop polling it instead of spinning */

static p11n_channel_options channel(const struct tunnel *t, void *arg)
{
    p11n_channel_options ch = { 0 };
    ch.key = t->key;
    ch.pattern = t->a.pattern;
    ch.prologue = (const uint8_t *)t->a.prologue;
    ch.prologue_len = t->a.prologue ? strlen(t->a.prologue) : 0;
    ch.cb = tun_callbacks;
    ch.cb.arg = arg;
    return ch;
}

/* ---- server ---- */

int tun_server_start(struct tunnel *t)
{
    char err[256];
    if (tun_resolve(&t->target_addr, t, err, sizeof(err)) != 0) {
        tun_log(P11N_LOG_ERROR, "tunnel server: target %s: %s", t->a.target, err);
        return CLI_EXIT_NETWORK;
    }
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch = channel(t, t);
    lo.peers = t->a.server_peers;
    lo.npeers = t->a.nserver_peers;
    int status = cli_listen(t->ctx, "tunnel server", t->listen_addr.host, t->listen_addr.port,
        t->a.listen, &lo, &t->l);
    if (status != 0)
        return status;
    if (t->a.control != NULL
        && (t->control = cli_control_open(t->ctx, "tunnel server", t->a.control)) == NULL)
        return CLI_EXIT_USAGE;
    tun_log(P11N_LOG_INFO, "tunnel server: each peer's connection goes to %s%s", t->a.target,
        t->a.proxy_protocol ? ", after a PROXY protocol v2 header" : "");
    return 0;
}

static void target_connected(struct tun *c)
{
    struct tunnel *t = c->t;
    c->connecting = 0;
    if (t->a.proxy_protocol) {
        uint8_t hdr[512], key[P11N_PUBKEY_LEN];
        size_t n = 0;
        if (p11n_conn_peer_key(c->conn, key) == P11N_OK)
            n = tun_ppv2_header(c->fd, p11n_conn_peer(c->conn), key, hdr, sizeof(hdr));
        if (n == 0 || tun_queue_out(c, hdr, n) != 0) {
            tun_abort(c, "cannot make the PROXY protocol header");
            return;
        }
    }
    if (p11n_conn_pause_read(c->conn, 0) != P11N_OK) {
        tun_abort(c, "cannot resume reading the channel");
        return;
    }
    tun_start(c);
}

/* Try the target's addresses in order, from the next untried one. */
static void try_target(struct tun *c)
{
    struct tunnel *t = c->t;
    char where[160], why[256] = "no address";
    while (c->target_next < t->ntargets) {
        size_t i = c->target_next++;
        tun_describe(&t->targets[i], where, sizeof(where));
        int rc = tun_connect_plain(&t->targets[i], t->target_lens[i], &c->fd);
        if (rc == 0) {
            target_connected(c);
            return;
        }
        if (rc == 1) {
            c->connecting = 1;
            c->deadline_ms = tun_now_ms() + t->a.connect_ms;
            return;
        }
        snprintf(why, sizeof(why), "%s: %s", where, strerror(errno));
        tun_log(P11N_LOG_DEBUG, "tunnel #%lu: target %s", c->id, why);
    }
    tun_abort(c, "target %s", why);
}

/* The connect in progress failed (`what` says how): the next address, or
 * the end of this connection. */
static void target_failed(struct tun *c, const char *what)
{
    char where[160];
    tun_describe(&c->t->targets[c->target_next - 1], where, sizeof(where));
    tun_log(P11N_LOG_DEBUG, "tunnel #%lu: target %s: %s", c->id, where, what);
    close(c->fd);
    c->fd = -1;
    c->connecting = 0;
    if (c->target_next < c->t->ntargets) {
        try_target(c);
        return;
    }
    tun_abort(c, "target %s: %s", where, what);
}

void tun_target_ready(struct tun *c, short revents)
{
    (void)revents;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err == 0)
        target_connected(c);
    else
        target_failed(c, strerror(err));
}

void tun_target_timeout(struct tun *c)
{
    char what[64];
    snprintf(what, sizeof(what), "no answer in %u ms", c->t->a.connect_ms);
    target_failed(c, what);
}

void tun_established(p11n_conn *conn, const char *peer, void *arg)
{
    struct tunnel *t = arg;
    struct tun *c = tun_new(t, -1);
    if (c == NULL) {
        tun_log(P11N_LOG_ERROR, "tunnel: peer %s: out of memory; closing", peer);
        p11n_close(conn);
        return;
    }
    c->conn = conn;
    p11n_conn_set_arg(conn, c);
    tun_log(P11N_LOG_INFO, "tunnel #%lu: peer %s, connecting to %s", c->id, peer, t->a.target);
    if (p11n_conn_pause_read(conn, 1) != P11N_OK) {
        tun_abort(c, "cannot pause reading the channel");
        return;
    }
    try_target(c);
}

/* ---- client ---- */

int tun_client_start(struct tunnel *t)
{
    char err[256];
    t->lfd = tun_listen_plain(&t->listen_addr, t->a.mode, err, sizeof(err));
    if (t->lfd < 0) {
        tun_log(P11N_LOG_ERROR, "tunnel client: cannot listen on %s: %s", t->a.listen, err);
        return CLI_EXIT_NETWORK;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char where[320];
    if (getsockname(t->lfd, (struct sockaddr *)&ss, &len) != 0)
        snprintf(where, sizeof(where), "%s", t->a.listen);
    else
        tun_describe(&ss, where, sizeof(where));
    if (t->listen_addr.is_unix)
        snprintf(where, sizeof(where), "unix:%s (mode %04o)", t->listen_addr.host, t->a.mode);
    tun_log(P11N_LOG_INFO, "tunnel client: listening on %s, each connection to %s, peer %s%s",
        where, t->a.target, t->a.peer, t->a.socks5 ? ", through the SOCKS5 proxy" : "");
    return 0;
}

static void client_open(struct tunnel *t, int fd)
{
    struct tun *c = tun_new(t, fd);
    if (c == NULL) {
        tun_log(P11N_LOG_ERROR, "tunnel client: out of memory; connection dropped");
        tun_close_reset(fd);
        return;
    }
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch = channel(t, c);
    co.socks5 = t->a.socks5;
    int rc = p11n_connect(t->ctx, t->target_addr.host, t->target_addr.port, t->a.peer, &co,
        &c->conn);
    if (rc != P11N_OK) {
        tun_abort(c, "cannot open a channel: %s", p11n_strerror(rc));
        return;
    }
    tun_log(P11N_LOG_INFO, "tunnel #%lu: plain connection accepted, opening a channel to %s",
        c->id, t->a.target);
}

void tun_client_accept(struct tunnel *t)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(t->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                tun_log(P11N_LOG_ERROR, "tunnel client: accept: %s; not accepting for %d ms",
                    strerror(errno), ACCEPT_PAUSE_MS);
                t->accept_resume_ms = tun_now_ms() + ACCEPT_PAUSE_MS;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
                && errno != ECONNABORTED) {
                tun_log(P11N_LOG_ERROR, "tunnel client: accept: %s", strerror(errno));
            }
            return;
        }
        if (!t->listen_addr.is_unix) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        client_open(t, fd);
    }
}
