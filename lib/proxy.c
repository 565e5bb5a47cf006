/*
 * The SOCKS5 phase of an outgoing connection, between "connected to the
 * proxy" and the handshake: the sans-I/O client (socks/socks5.h) fed from
 * the socket. The target's name goes to the proxy unresolved. The client
 * state (which holds the credentials until they are sent) exists only
 * during this phase and is wiped when it ends.
 */
#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "secure.h"
#include "socks5.h"

/* Replies are at most P11N_SOCKS5_IN_MAX bytes; a small read keeps the
 * target's first bytes (if any) from being pulled in with them. */
#define PROXY_READ 64

static void free_str(char **s, int secret)
{
    if (*s == NULL)
        return;
    if (secret)
        p11n_wipe(*s, strlen(*s));
    free(*s);
    *s = NULL;
}

void p11n_proxy_clear(p11n_proxy *px)
{
    free_str(&px->host, 0);
    free_str(&px->user, 1);
    free_str(&px->pass, 1);
    px->port = 0;
}

int p11n_proxy_parse(const char *spec, p11n_proxy *out)
{
    memset(out, 0, sizeof(*out));
    if (spec == NULL || *spec == '\0')
        return P11N_ERR_INVALID_ARG;
    const char *hostport = spec;
    const char *at = strrchr(spec, '@');
    if (at != NULL) {
        const char *colon = memchr(spec, ':', (size_t)(at - spec));
        if (colon == NULL || colon == spec || colon + 1 == at)
            return P11N_ERR_INVALID_ARG; /* USER:PASS, both non-empty */
        size_t ulen = (size_t)(colon - spec), plen = (size_t)(at - colon - 1);
        if (ulen > P11N_SOCKS5_MAX_FIELD || plen > P11N_SOCKS5_MAX_FIELD)
            return P11N_ERR_SOCKS_CREDENTIALS;
        out->user = strndup(spec, ulen);
        out->pass = strndup(colon + 1, plen);
        if (out->user == NULL || out->pass == NULL) {
            p11n_proxy_clear(out);
            return P11N_ERR_NOMEM;
        }
        hostport = at + 1;
    }
    const char *hstart = hostport, *colon;
    size_t hlen;
    if (*hostport == '[') {
        const char *end = strchr(hostport, ']');
        if (end == NULL || end[1] != ':')
            goto bad;
        hstart = hostport + 1;
        hlen = (size_t)(end - hstart);
        colon = end + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (colon == NULL || memchr(hostport, ':', (size_t)(colon - hostport)) != NULL)
            goto bad;
        hlen = (size_t)(colon - hostport);
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (hlen == 0 || colon[1] == '\0' || *end != '\0' || errno != 0 || port == 0 || port > 65535)
        goto bad;
    if ((out->host = strndup(hstart, hlen)) == NULL) {
        p11n_proxy_clear(out);
        return P11N_ERR_NOMEM;
    }
    out->port = (uint16_t)port;
    return P11N_OK;
bad:
    p11n_proxy_clear(out);
    return P11N_ERR_INVALID_ARG;
}

int p11n_proxy_copy(const p11n_proxy *in, p11n_proxy *out)
{
    memset(out, 0, sizeof(*out));
    out->port = in->port;
    out->host = strdup(in->host);
    if (in->user != NULL) {
        out->user = strdup(in->user);
        out->pass = strdup(in->pass);
    }
    if (out->host == NULL || (in->user != NULL && (out->user == NULL || out->pass == NULL))) {
        p11n_proxy_clear(out);
        return P11N_ERR_NOMEM;
    }
    return P11N_OK;
}

static void socks_free(p11n_conn *c)
{
    if (c->socks == NULL)
        return;
    p11n_socks5_clear(c->socks);
    free(c->socks);
    c->socks = NULL;
}

void p11n_proxy_end(p11n_conn *c)
{
    socks_free(c);
}

static void proxy_fail(p11n_conn *c, int rc, const char *what)
{
    char text[200];
    snprintf(text, sizeof(text), "SOCKS5 proxy %s:%u %s: %s", c->proxy.host, c->proxy.port,
        what, p11n_strerror(rc));
    p11n_conn_end(c, rc, text);
}

/* Queue whatever the client wants to say. */
static int proxy_output(p11n_conn *c)
{
    const uint8_t *p;
    size_t len;
    p11n_socks5_output(c->socks, &p, &len);
    if (len == 0)
        return P11N_OK;
    if (p11n_conn_queue(c, p, len) != P11N_OK) {
        p11n_conn_end(c, P11N_ERR_NOMEM, "out of memory");
        return P11N_ERR_NOMEM;
    }
    /* The write queue now holds a copy: wiped once sent, or on close. */
    if (c->proxy.user != NULL)
        c->wipe_wbuf = 1;
    p11n_socks5_consumed(c->socks, len);
    return P11N_OK;
}

void p11n_proxy_begin(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    c->state = P11N_CS_PROXY;
    c->socks = malloc(sizeof(*c->socks));
    if (c->socks == NULL) {
        p11n_conn_end(c, P11N_ERR_NOMEM, "out of memory");
        return;
    }
    int rc = p11n_socks5_init(c->socks, c->host, c->port, c->proxy.user, c->proxy.pass);
    if (rc != P11N_OK) {
        proxy_fail(c, rc, "request for the target refused before sending");
        return;
    }
    p11n_timer_arm(ctx, &c->timer, ctx->now + ctx->opt.connect_timeout_ms);
    p11n_log(ctx, P11N_LOG_DEBUG, "conn #%lu: SOCKS5 negotiation with %s for %s:%u%s", c->id,
        c->addr, c->host, c->port, c->proxy.user ? " (username/password)" : "");
    proxy_output(c);
}

void p11n_proxy_read(p11n_conn *c)
{
    uint8_t buf[PROXY_READ];
    ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        int err = errno;
        char text[200];
        snprintf(text, sizeof(text), "SOCKS5 proxy %s:%u: connection lost %s: %s",
            c->proxy.host, c->proxy.port, p11n_socks5_phase_text(c->socks), strerror(err));
        p11n_conn_end(c, err == ECONNRESET ? P11N_ERR_RESET : P11N_ERR_IO, text);
        return;
    }
    if (n == 0) {
        char what[120];
        snprintf(what, sizeof(what), "closed the connection %s",
            p11n_socks5_phase_text(c->socks));
        proxy_fail(c, p11n_socks5_eof(c->socks), what);
        return;
    }
    size_t used = 0;
    int rc = p11n_socks5_feed(c->socks, buf, (size_t)n, &used);
    if (rc < 0) {
        proxy_fail(c, rc, "refused the tunnel");
        return;
    }
    if (rc == 0) {
        proxy_output(c);
        return;
    }
    if (used < (size_t)n) {
        /* We speak first in every pattern (we are the initiator): a
         * target that sends before act one is not a p11noise responder. */
        proxy_fail(c, P11N_ERR_SOCKS_MALFORMED, "passed data from the target before the handshake");
        return;
    }
    char bound[80] = "?";
    (void)p11n_socks5_bound_text(c->socks, bound, sizeof(bound));
    p11n_log(c->ctx, P11N_LOG_INFO, "conn #%lu: SOCKS5 tunnel through %s to %s:%u open (bound %s)",
        c->id, c->addr, c->host, c->port, bound);
    socks_free(c);
    p11n_timer_cancel(c->ctx, &c->timer);
    p11n_conn_handshake_begin(c);
}

void p11n_proxy_timeout(p11n_conn *c)
{
    char what[160];
    snprintf(what, sizeof(what), "timed out after %u ms %s", c->ctx->opt.connect_timeout_ms,
        p11n_socks5_phase_text(c->socks));
    proxy_fail(c, P11N_ERR_TIMEOUT, what);
}
