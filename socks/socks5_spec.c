/* Parsing "[USER:PASS@]HOST:PORT" proxy specs, and HOST:PORT alone
 * (p11n_hostport_parse, the command line's addresses). */
#include "socks5_spec.h"

#include <string.h>

#include "p11noise.h"
#include "secure.h"

/* Copy [s, s+len) into a NUL-terminated field of P11N_SOCKS5_MAX_FIELD+1. */
static void copy_field(char *dst, const char *s, size_t len)
{
    memcpy(dst, s, len);
    dst[len] = '\0';
}

/* PORT: 1-5 decimal digits, at most 65535 (0 is the caller's to refuse). */
static int parse_port(const char *s, size_t len, uint16_t *port)
{
    unsigned long v = 0;
    if (len == 0 || len > 5)
        return P11N_ERR_PARSE;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return P11N_ERR_PARSE;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return P11N_ERR_PARSE;
    *port = (uint16_t)v;
    return P11N_OK;
}

int p11n_hostport_parse_n(const char *s, size_t len, char *host, size_t cap, uint16_t *port)
{
    const char *h, *colon;
    size_t hlen;

    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL || close + 1 >= s + len || close[1] != ':')
            return P11N_ERR_PARSE;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        if (memchr(h, ':', hlen) == NULL)
            return P11N_ERR_PARSE; /* brackets are for IPv6 only */
    } else {
        colon = memchr(s, ':', len);
        if (colon == NULL)
            return P11N_ERR_PARSE;
        h = s;
        hlen = (size_t)(colon - s);
        /* A second colon means an unbracketed IPv6 address: ambiguous. */
        if (memchr(colon + 1, ':', len - hlen - 1) != NULL)
            return P11N_ERR_PARSE;
    }
    if (hlen == 0)
        return P11N_ERR_PARSE;
    int rc = parse_port(colon + 1, (size_t)(s + len - colon - 1), port);
    if (rc != P11N_OK)
        return rc;
    if (hlen >= cap)
        return P11N_ERR_BUFFER_TOO_SMALL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return P11N_OK;
}

int p11n_hostport_parse(const char *s, char *host, size_t cap, uint16_t *port)
{
    if (s == NULL || host == NULL || port == NULL)
        return P11N_ERR_INVALID_ARG;
    return p11n_hostport_parse_n(s, strlen(s), host, cap, port);
}

/* HOST:PORT of a proxy: a host SOCKS5 can name (255 bytes), port not 0. */
static int parse_hostport(const char *s, size_t len, p11n_socks5_proxy *out)
{
    int rc = p11n_hostport_parse_n(s, len, out->host, sizeof(out->host), &out->port);
    if (rc == P11N_OK && out->port == 0)
        rc = P11N_ERR_PARSE;
    return rc == P11N_ERR_BUFFER_TOO_SMALL ? P11N_ERR_PARSE : rc;
}

static int parse_userinfo(const char *s, size_t len, p11n_socks5_proxy *out)
{
    const char *colon = memchr(s, ':', len);
    if (colon == NULL)
        return P11N_ERR_PARSE; /* RFC 1929 always sends a password */
    size_t ulen = (size_t)(colon - s), plen = len - ulen - 1;
    if (ulen > P11N_SOCKS5_MAX_FIELD || plen > P11N_SOCKS5_MAX_FIELD)
        return P11N_ERR_SOCKS_CREDENTIALS;
    if (ulen == 0 || plen == 0)
        return P11N_ERR_PARSE;
    copy_field(out->user, s, ulen);
    copy_field(out->pass, colon + 1, plen);
    out->has_auth = 1;
    return P11N_OK;
}

int p11n_socks5_proxy_parse(const char *spec, p11n_socks5_proxy *out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    memset(out, 0, sizeof(*out));
    if (spec == NULL)
        return P11N_ERR_INVALID_ARG;

    size_t len = strlen(spec);
    const char *at = NULL;
    for (const char *p = spec; p < spec + len; p++)
        if (*p == '@')
            at = p; /* the last one: hosts never contain '@' */

    int rc = P11N_OK;
    const char *hp = spec;
    if (at != NULL) {
        rc = parse_userinfo(spec, (size_t)(at - spec), out);
        hp = at + 1;
    }
    if (rc == P11N_OK)
        rc = parse_hostport(hp, (size_t)(spec + len - hp), out);
    if (rc != P11N_OK)
        p11n_socks5_proxy_clear(out);
    return rc;
}

void p11n_socks5_proxy_clear(p11n_socks5_proxy *p)
{
    if (p != NULL)
        p11n_wipe(p, sizeof(*p));
}
