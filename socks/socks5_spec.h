/* The proxy option as users write it: "[USER:PASS@]HOST:PORT"
 * (p11noise connect --socks5, p11n_connect_options.socks5). */
#ifndef P11N_SOCKS5_SPEC_H
#define P11N_SOCKS5_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "socks5.h"

typedef struct p11n_socks5_proxy {
    char host[P11N_SOCKS5_MAX_FIELD + 1]; /* name or address, brackets removed */
    uint16_t port;
    int has_auth;                         /* user and pass are set */
    char user[P11N_SOCKS5_MAX_FIELD + 1];
    char pass[P11N_SOCKS5_MAX_FIELD + 1];
} p11n_socks5_proxy;

/* Parse a proxy spec. HOST is a name, an IPv4 address or a bracketed IPv6
 * address ("[::1]:1080"); PORT is 1-65535. The username ends at the first
 * ':' of the part before the last '@', so the password may contain ':'
 * and '@'. Errors: INVALID_ARG (NULL), PARSE (syntax; empty host, user or
 * password; host over 255 bytes), SOCKS_CREDENTIALS (user or password
 * over 255 bytes). On error `out` holds no credentials. Error texts never
 * quote the spec: it may hold a password. */
int p11n_socks5_proxy_parse(const char *spec, p11n_socks5_proxy *out);

/* HOST:PORT in s[0..len), as p11n_hostport_parse (p11noise.h). */
int p11n_hostport_parse_n(const char *s, size_t len, char *host, size_t cap, uint16_t *port);

/* Wipe the parsed spec (it holds the password). */
void p11n_socks5_proxy_clear(p11n_socks5_proxy *p);

#endif
