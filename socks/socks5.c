/* SOCKS5 client state machine (RFC 1928, RFC 1929): bytes in, bytes out. */
#include "socks5.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "p11noise.h"
#include "secure.h"

#define SOCKS_VERSION 0x05
#define AUTH_VERSION 0x01      /* RFC 1929 sub-negotiation version */
#define METHOD_NONE 0x00
#define METHOD_USERPASS 0x02
#define METHOD_REJECTED 0xFF
#define CMD_CONNECT 0x01

static int fail(p11n_socks5 *st, int err)
{
    /* Nothing more will be sent, so queued bytes and credentials go. */
    p11n_wipe(st->out, sizeof(st->out));
    p11n_wipe(st->user, sizeof(st->user));
    p11n_wipe(st->pass, sizeof(st->pass));
    st->out_len = st->out_off = 0;
    st->user_len = st->pass_len = 0;
    st->phase = P11N_SOCKS5_FAILED;
    st->err = err;
    return err;
}

static void queue(p11n_socks5 *st, const uint8_t *msg, size_t len)
{
    memcpy(st->out, msg, len);
    st->out_len = len;
    st->out_off = 0;
}

/* Length of a string sent with a one-byte length prefix, or -1 when it is
 * empty or longer than that prefix can describe. */
static int field_len(const char *s)
{
    size_t n = strnlen(s, P11N_SOCKS5_MAX_FIELD + 1);
    if (n == 0 || n > P11N_SOCKS5_MAX_FIELD)
        return -1;
    return (int)n;
}

static int build_dst(p11n_socks5 *st, const char *host, uint16_t port)
{
    uint8_t *d = st->dst;
    size_t n;

    if (inet_pton(AF_INET, host, d + 1) == 1) {
        d[0] = P11N_SOCKS5_ATYP_IPV4;
        n = 1 + 4;
    } else if (inet_pton(AF_INET6, host, d + 1) == 1) {
        d[0] = P11N_SOCKS5_ATYP_IPV6;
        n = 1 + 16;
    } else {
        /* Sent unresolved: the proxy resolves it, so that names only the
         * proxy's side can resolve (and onion-style names) work. */
        int hl = field_len(host);
        if (hl < 0)
            return P11N_ERR_INVALID_ARG;
        d[0] = P11N_SOCKS5_ATYP_DOMAIN;
        d[1] = (uint8_t)hl;
        memcpy(d + 2, host, (size_t)hl);
        n = 2 + (size_t)hl;
    }
    d[n] = (uint8_t)(port >> 8);
    d[n + 1] = (uint8_t)(port & 0xff);
    st->dst_len = n + 2;
    return P11N_OK;
}

int p11n_socks5_init(p11n_socks5 *st, const char *host, uint16_t port,
    const char *user, const char *pass)
{
    if (st == NULL)
        return P11N_ERR_INVALID_ARG;
    memset(st, 0, sizeof(*st));
    st->phase = P11N_SOCKS5_METHOD;

    if (host == NULL || port == 0 || (user == NULL) != (pass == NULL))
        return fail(st, P11N_ERR_INVALID_ARG);
    if (user != NULL) {
        /* Over-long credentials get their own error: it is a configuration
         * mistake the user must see, not a generic bad argument. */
        if (strnlen(user, P11N_SOCKS5_MAX_FIELD + 1) > P11N_SOCKS5_MAX_FIELD
            || strnlen(pass, P11N_SOCKS5_MAX_FIELD + 1) > P11N_SOCKS5_MAX_FIELD)
            return fail(st, P11N_ERR_SOCKS_CREDENTIALS);
        int ul = field_len(user), pl = field_len(pass);
        if (ul < 0 || pl < 0)
            return fail(st, P11N_ERR_INVALID_ARG); /* RFC 1929: 1-255 bytes */
        memcpy(st->user, user, (size_t)ul);
        memcpy(st->pass, pass, (size_t)pl);
        st->user_len = (size_t)ul;
        st->pass_len = (size_t)pl;
        st->auth_offered = 1;
    }
    int rc = build_dst(st, host, port);
    if (rc != P11N_OK)
        return fail(st, rc);

    static const uint8_t offer_none[] = { SOCKS_VERSION, 1, METHOD_NONE };
    static const uint8_t offer_both[] = { SOCKS_VERSION, 2, METHOD_NONE, METHOD_USERPASS };
    if (st->auth_offered)
        queue(st, offer_both, sizeof(offer_both));
    else
        queue(st, offer_none, sizeof(offer_none));
    return P11N_OK;
}

void p11n_socks5_output(const p11n_socks5 *st, const uint8_t **ptr, size_t *len)
{
    *ptr = st->out + st->out_off;
    *len = st->out_len - st->out_off;
}

void p11n_socks5_consumed(p11n_socks5 *st, size_t n)
{
    size_t pending = st->out_len - st->out_off;
    if (n > pending)
        n = pending;
    p11n_wipe(st->out + st->out_off, n);
    st->out_off += n;
    if (st->out_off == st->out_len)
        st->out_off = st->out_len = 0;
}

static void queue_auth(p11n_socks5 *st)
{
    uint8_t *o = st->out;
    size_t n = 0;
    o[n++] = AUTH_VERSION;
    o[n++] = (uint8_t)st->user_len;
    memcpy(o + n, st->user, st->user_len);
    n += st->user_len;
    o[n++] = (uint8_t)st->pass_len;
    memcpy(o + n, st->pass, st->pass_len);
    n += st->pass_len;
    st->out_len = n;
    st->out_off = 0;
    /* From here the only copy is in the output buffer, wiped as it is sent. */
    p11n_wipe(st->user, sizeof(st->user));
    p11n_wipe(st->pass, sizeof(st->pass));
    st->user_len = st->pass_len = 0;
}

static void queue_connect(p11n_socks5 *st)
{
    st->out[0] = SOCKS_VERSION;
    st->out[1] = CMD_CONNECT;
    st->out[2] = 0x00; /* RSV */
    memcpy(st->out + 3, st->dst, st->dst_len);
    st->out_len = 3 + st->dst_len;
    st->out_off = 0;
    st->phase = P11N_SOCKS5_CONNECT;
}

static int rep_error(uint8_t rep)
{
    static const int codes[] = {
        [0x01] = P11N_ERR_SOCKS_GENERAL,
        [0x02] = P11N_ERR_SOCKS_NOT_ALLOWED,
        [0x03] = P11N_ERR_SOCKS_NET_UNREACH,
        [0x04] = P11N_ERR_SOCKS_HOST_UNREACH,
        [0x05] = P11N_ERR_SOCKS_REFUSED,
        [0x06] = P11N_ERR_SOCKS_TTL,
        [0x07] = P11N_ERR_SOCKS_COMMAND,
        [0x08] = P11N_ERR_SOCKS_ATYP,
    };
    if (rep >= 1 && rep < sizeof(codes) / sizeof(codes[0]))
        return codes[rep];
    return P11N_ERR_SOCKS_REPLY;
}

/* Total length of the reply being read, as far as the bytes so far tell
 * (the CONNECT reply's length depends on its ATYP and domain length). */
static size_t reply_len(const p11n_socks5 *st)
{
    if (st->phase != P11N_SOCKS5_CONNECT)
        return 2;
    if (st->in_len < 4)
        return 4; /* VER REP RSV ATYP */
    switch (st->in[3]) {
    case P11N_SOCKS5_ATYP_IPV4:
        return 4 + 4 + 2;
    case P11N_SOCKS5_ATYP_IPV6:
        return 4 + 16 + 2;
    default: /* DOMAIN; check_reply() has rejected every other type */
        return st->in_len < 5 ? 5 : 4 + 1 + (size_t)st->in[4] + 2;
    }
}

/* Validate the reply bytes received so far, so that a bad version or a
 * failure code is reported even if the proxy then closes mid-reply. */
static int check_reply(const p11n_socks5 *st)
{
    const uint8_t *r = st->in;
    size_t n = st->in_len;

    switch (st->phase) {
    case P11N_SOCKS5_METHOD:
        if (n >= 1 && r[0] != SOCKS_VERSION)
            return P11N_ERR_SOCKS_VERSION;
        if (n >= 2) {
            if (r[1] == METHOD_REJECTED)
                return P11N_ERR_SOCKS_NO_METHOD;
            if (r[1] != METHOD_NONE && !(r[1] == METHOD_USERPASS && st->auth_offered))
                return P11N_ERR_SOCKS_MALFORMED;
        }
        return P11N_OK;
    case P11N_SOCKS5_AUTH:
        if (n >= 1 && r[0] != AUTH_VERSION)
            return P11N_ERR_SOCKS_VERSION;
        if (n >= 2 && r[1] != 0x00)
            return P11N_ERR_SOCKS_AUTH;
        return P11N_OK;
    default: /* CONNECT */
        if (n >= 1 && r[0] != SOCKS_VERSION)
            return P11N_ERR_SOCKS_VERSION;
        if (n >= 2 && r[1] != 0x00)
            return rep_error(r[1]);
        if (n >= 3 && r[2] != 0x00)
            return P11N_ERR_SOCKS_MALFORMED;
        if (n >= 4 && r[3] != P11N_SOCKS5_ATYP_IPV4 && r[3] != P11N_SOCKS5_ATYP_IPV6
            && r[3] != P11N_SOCKS5_ATYP_DOMAIN)
            return P11N_ERR_SOCKS_MALFORMED;
        return P11N_OK;
    }
}

static void record_bound(p11n_socks5 *st)
{
    const uint8_t *a = st->in + 4;
    size_t alen;
    if (st->in[3] == P11N_SOCKS5_ATYP_DOMAIN) {
        alen = a[0];
        a++;
    } else {
        alen = st->in[3] == P11N_SOCKS5_ATYP_IPV4 ? 4 : 16;
    }
    st->bnd_atyp = st->in[3];
    memcpy(st->bnd_addr, a, alen);
    st->bnd_len = alen;
    st->bnd_port = (uint16_t)((a[alen] << 8) | a[alen + 1]);
}

/* A whole reply has arrived and passed check_reply(): act on it. Returns
 * 1 when the tunnel is up, 0 otherwise. */
static int complete_reply(p11n_socks5 *st)
{
    int phase = st->phase;
    uint8_t method = st->in[1];
    st->in_len = 0;

    if (phase == P11N_SOCKS5_METHOD && method == METHOD_USERPASS) {
        queue_auth(st);
        st->phase = P11N_SOCKS5_AUTH;
        return 0;
    }
    if (phase == P11N_SOCKS5_METHOD || phase == P11N_SOCKS5_AUTH) {
        /* No-auth chosen although we offered credentials: drop them. */
        p11n_wipe(st->user, sizeof(st->user));
        p11n_wipe(st->pass, sizeof(st->pass));
        st->user_len = st->pass_len = 0;
        queue_connect(st);
        return 0;
    }
    /* CONNECT: the reply is still in `in` (in_len reset only marks it read) */
    record_bound(st);
    st->phase = P11N_SOCKS5_DONE;
    return 1;
}

int p11n_socks5_feed(p11n_socks5 *st, const uint8_t *in, size_t len, size_t *consumed)
{
    size_t used = 0;

    if (consumed != NULL)
        *consumed = 0;
    if (st == NULL || consumed == NULL || (in == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    if (st->phase == P11N_SOCKS5_FAILED)
        return st->err;
    if (st->phase == P11N_SOCKS5_DONE)
        return 1;
    /* A conforming proxy answers only a complete request. */
    if (len > 0 && st->out_len > st->out_off)
        return fail(st, P11N_ERR_SOCKS_MALFORMED);

    /* Byte by byte (replies are at most 262 bytes): an error is reported
     * at the offending byte, and consumption stops exactly at the end of
     * the reply, however the input is split. */
    while (used < len) {
        st->in[st->in_len++] = in[used++];
        *consumed = used;

        int rc = check_reply(st);
        if (rc != P11N_OK)
            return fail(st, rc);
        if (st->in_len < reply_len(st))
            continue;
        if (complete_reply(st) == 1)
            return 1;
        /* Our next request is queued; nothing more may arrive before it. */
        if (used < len)
            return fail(st, P11N_ERR_SOCKS_MALFORMED);
    }
    return 0;
}

int p11n_socks5_eof(p11n_socks5 *st)
{
    if (st->phase == P11N_SOCKS5_DONE)
        return 0;
    if (st->phase == P11N_SOCKS5_FAILED)
        return st->err;
    return fail(st, P11N_ERR_SOCKS_MALFORMED);
}

int p11n_socks5_phase(const p11n_socks5 *st)
{
    return st->phase;
}

int p11n_socks5_error(const p11n_socks5 *st)
{
    return st->phase == P11N_SOCKS5_FAILED ? st->err : 0;
}

const char *p11n_socks5_phase_text(const p11n_socks5 *st)
{
    int sending = st->out_len > st->out_off;
    switch (st->phase) {
    case P11N_SOCKS5_METHOD:
        return sending ? "sending the SOCKS5 method selection request"
                       : "waiting for the SOCKS5 method selection reply";
    case P11N_SOCKS5_AUTH:
        return sending ? "sending the SOCKS5 username/password request"
                       : "waiting for the SOCKS5 username/password reply";
    case P11N_SOCKS5_CONNECT:
        return sending ? "sending the SOCKS5 CONNECT request"
                       : "waiting for the SOCKS5 CONNECT reply";
    case P11N_SOCKS5_DONE:
        return "SOCKS5 tunnel established";
    case P11N_SOCKS5_FAILED:
        return "SOCKS5 negotiation failed";
    default:
        return "SOCKS5 not started";
    }
}

int p11n_socks5_bound(const p11n_socks5 *st, uint8_t *atyp, const uint8_t **addr,
    size_t *addrlen, uint16_t *port)
{
    if (st->phase != P11N_SOCKS5_DONE)
        return P11N_ERR_STATE;
    *atyp = st->bnd_atyp;
    *addr = st->bnd_addr;
    *addrlen = st->bnd_len;
    *port = st->bnd_port;
    return P11N_OK;
}

int p11n_socks5_bound_text(const p11n_socks5 *st, char *buf, size_t cap)
{
    char host[P11N_SOCKS5_MAX_FIELD + 1]; /* a domain; also > INET6_ADDRSTRLEN */

    if (buf == NULL || cap == 0)
        return P11N_ERR_INVALID_ARG;
    buf[0] = '\0';
    if (st->phase != P11N_SOCKS5_DONE)
        return P11N_ERR_STATE;
    switch (st->bnd_atyp) {
    case P11N_SOCKS5_ATYP_IPV4:
        inet_ntop(AF_INET, st->bnd_addr, host, sizeof(host));
        snprintf(buf, cap, "%s:%u", host, (unsigned)st->bnd_port);
        break;
    case P11N_SOCKS5_ATYP_IPV6:
        inet_ntop(AF_INET6, st->bnd_addr, host, sizeof(host));
        snprintf(buf, cap, "[%s]:%u", host, (unsigned)st->bnd_port);
        break;
    default:
        /* The proxy chose these bytes: keep control characters out of logs. */
        for (size_t i = 0; i < st->bnd_len; i++) {
            uint8_t c = st->bnd_addr[i];
            host[i] = (c >= 0x21 && c <= 0x7e) ? (char)c : '?';
        }
        host[st->bnd_len] = '\0';
        snprintf(buf, cap, "%s:%u", host, (unsigned)st->bnd_port);
        break;
    }
    return P11N_OK;
}

void p11n_socks5_clear(p11n_socks5 *st)
{
    if (st != NULL)
        p11n_wipe(st, sizeof(*st));
}
