/*
 * The proxy a context or a connection dials through: its spec, copied
 * and cleared (the password wiped). The SOCKS5 phase itself is the
 * dialer's (dialer.c).
 */
#include "proxy.h"

#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "secure.h"
#include "socks5_spec.h"

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

/* The one parser of the spec is socks/socks5_spec.c; this only moves its
 * fields to the heap (the parsed copy, password included, is wiped). */
int p11n_proxy_parse(const char *spec, p11n_proxy *out)
{
    memset(out, 0, sizeof(*out));
    p11n_socks5_proxy p;
    int rc = p11n_socks5_proxy_parse(spec, &p);
    if (rc != P11N_OK)
        return rc == P11N_ERR_SOCKS_CREDENTIALS ? rc : P11N_ERR_INVALID_ARG;
    out->port = p.port;
    out->host = strdup(p.host);
    if (p.has_auth) {
        out->user = strdup(p.user);
        out->pass = strdup(p.pass);
    }
    int nomem = out->host == NULL || (p.has_auth && (out->user == NULL || out->pass == NULL));
    p11n_socks5_proxy_clear(&p);
    if (nomem) {
        p11n_proxy_clear(out);
        return P11N_ERR_NOMEM;
    }
    return P11N_OK;
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
