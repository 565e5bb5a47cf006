/* The proxy a context or a connection dials through (proxy.c). */
#ifndef P11N_PROXY_H
#define P11N_PROXY_H

#include <stdint.h>

/* A SOCKS5 proxy: host NULL means none. The password is wiped on clear. */
typedef struct p11n_proxy {
    char *host;
    uint16_t port;
    char *user, *pass;            /* both or neither */
} p11n_proxy;

/* "[USER:PASS@]HOST:PORT" ("[V6]:PORT" too) as socks/socks5_spec.h
 * parses it, the only parser of the spec. Errors: INVALID_ARG (what the
 * spec parser calls PARSE, or NULL), SOCKS_CREDENTIALS (a field over 255
 * bytes), NOMEM. */
int p11n_proxy_parse(const char *spec, p11n_proxy *out);
int p11n_proxy_copy(const p11n_proxy *in, p11n_proxy *out);
void p11n_proxy_clear(p11n_proxy *px);

#endif
