/*
 * The proxy a context or a connection dials through: its spec, copied
 * and cleared (the password wiped). The SOCKS5 phase itself is the
 * dialer's (dialer.c).
 */
#include "proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "secure.h"
#include "socks5.h"

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
