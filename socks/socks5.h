/*
 * SOCKS5 client (RFC 1928 CONNECT, RFC 1929 username/password) as a
 * sans-I/O state machine: the caller moves bytes between it and the socket
 * connected to the proxy. It never allocates and never blocks; the whole
 * state lives in the caller's struct.
 *
 * Sequence:
 *   p11n_socks5_init()
 *   loop:
 *     p11n_socks5_output() -> send those bytes, p11n_socks5_consumed(n)
 *     read from the proxy  -> p11n_socks5_feed(), until it returns 1 or < 0
 *   bytes left unconsumed by the final feed already belong to the target.
 *
 * We never pipeline: each request is produced only after the reply to the
 * previous one, which every conforming server accepts.
 */
#ifndef P11N_SOCKS5_H
#define P11N_SOCKS5_H

#include <stddef.h>
#include <stdint.h>

#define P11N_SOCKS5_MAX_FIELD 255 /* hostname, username, password */

/* Address types of RFC 1928 section 5. */
#define P11N_SOCKS5_ATYP_IPV4 0x01
#define P11N_SOCKS5_ATYP_DOMAIN 0x03
#define P11N_SOCKS5_ATYP_IPV6 0x04

/* What the state machine is waiting for; see p11n_socks5_phase_text(). */
enum p11n_socks5_phase {
    P11N_SOCKS5_METHOD = 1, /* method selection: request, then reply */
    P11N_SOCKS5_AUTH,       /* username/password sub-negotiation */
    P11N_SOCKS5_CONNECT,    /* CONNECT request and its reply */
    P11N_SOCKS5_DONE,       /* tunnel established */
    P11N_SOCKS5_FAILED      /* an error occurred; see p11n_socks5_error() */
};

/* The longest message either side sends: the RFC 1929 request
 * (1 + 1 + 255 + 1 + 255) and a reply with a 255-byte domain
 * (4 + 1 + 255 + 2). */
#define P11N_SOCKS5_OUT_MAX (3 + 2 * P11N_SOCKS5_MAX_FIELD)
#define P11N_SOCKS5_IN_MAX (4 + 1 + P11N_SOCKS5_MAX_FIELD + 2)

/* Opaque by convention: use the functions below, not the fields. */
typedef struct p11n_socks5 {
    int phase;                 /* enum p11n_socks5_phase */
    int err;                   /* the error once FAILED */
    uint8_t out[P11N_SOCKS5_OUT_MAX];
    size_t out_len, out_off;   /* pending output is out[out_off..out_len) */
    uint8_t in[P11N_SOCKS5_IN_MAX];
    size_t in_len;             /* bytes of the current reply so far */
    /* CONNECT address part (ATYP, DST.ADDR, DST.PORT), built at init. */
    uint8_t dst[1 + 1 + P11N_SOCKS5_MAX_FIELD + 2];
    size_t dst_len;
    /* Credentials until the request carrying them has been sent. */
    uint8_t user[P11N_SOCKS5_MAX_FIELD], pass[P11N_SOCKS5_MAX_FIELD];
    size_t user_len, pass_len;
    int auth_offered;          /* we offered method 0x02 */
    /* BND.ADDR / BND.PORT from the CONNECT reply. */
    uint8_t bnd_atyp;
    uint8_t bnd_addr[P11N_SOCKS5_MAX_FIELD];
    size_t bnd_len;
    uint16_t bnd_port;
} p11n_socks5;

/* Prepare a CONNECT to `host`:`port` through the proxy and queue the method
 * selection request. `host` is an IPv4 literal, an IPv6 literal (without
 * brackets), or a hostname of 1-255 bytes that is sent unresolved for the
 * proxy to resolve. `user` and `pass` are both NULL (no authentication) or
 * both 1-255 bytes; they are copied and wiped from `st` once sent.
 * Errors: INVALID_ARG (NULL or empty host, port 0, hostname over 255 bytes,
 * only one of user/pass, empty user or pass), SOCKS_CREDENTIALS (user or
 * pass over 255 bytes). On error nothing is queued. */
int p11n_socks5_init(p11n_socks5 *st, const char *host, uint16_t port,
    const char *user, const char *pass);

/* Bytes waiting to be sent to the proxy (`*len` is 0 when none). */
void p11n_socks5_output(const p11n_socks5 *st, const uint8_t **ptr, size_t *len);

/* `n` of the pending bytes were sent (n is clamped to what is pending).
 * Sent bytes are wiped, so the password does not linger. */
void p11n_socks5_consumed(p11n_socks5 *st, size_t n);

/* Feed bytes read from the proxy. Consumes only bytes belonging to the
 * proxy's replies; `*consumed` says how many. Returns 0 when more input is
 * needed (or output is pending), 1 when the tunnel is established (the
 * unconsumed rest is the target's data), or a negative error, after which
 * every call returns that error:
 *   SOCKS_VERSION    a reply's version byte is wrong
 *   SOCKS_NO_METHOD  the proxy accepted none of our methods (0xFF)
 *   SOCKS_AUTH       username/password rejected
 *   SOCKS_MALFORMED  method not offered, reserved byte not 0, unknown
 *                    ATYP, or reply bytes arriving before our request
 *                    was fully sent
 *   SOCKS_GENERAL .. SOCKS_ATYP   REP 0x01-0x08;  SOCKS_REPLY  REP > 0x08 */
int p11n_socks5_feed(p11n_socks5 *st, const uint8_t *in, size_t len, size_t *consumed);

/* The proxy closed the connection before the tunnel was established:
 * records SOCKS_MALFORMED (truncated reply) and returns it; returns 0 if
 * the tunnel was already up, or the earlier error if already failed. */
int p11n_socks5_eof(p11n_socks5 *st);

/* enum p11n_socks5_phase; and the error (0 unless FAILED). */
int p11n_socks5_phase(const p11n_socks5 *st);
int p11n_socks5_error(const p11n_socks5 *st);

/* A static text for logs naming what the client is doing or waiting for,
 * e.g. "waiting for the SOCKS5 CONNECT reply" (so a timeout can say where
 * it struck). Never contains credentials. */
const char *p11n_socks5_phase_text(const p11n_socks5 *st);

/* The bound address the proxy reported, once DONE: ATYP and the raw
 * address bytes (4, 16, or the domain's 0-255 bytes, not NUL-terminated).
 * Errors: STATE before DONE. */
int p11n_socks5_bound(const p11n_socks5 *st, uint8_t *atyp, const uint8_t **addr,
    size_t *addrlen, uint16_t *port);

/* The bound address as "1.2.3.4:80", "[::1]:80" or "name:80" for logs;
 * non-printable bytes of a domain are shown as '?'. Truncated to fit
 * `cap` (always NUL-terminated when cap > 0). Errors: STATE before DONE,
 * INVALID_ARG. */
int p11n_socks5_bound_text(const p11n_socks5 *st, char *buf, size_t cap);

/* Wipe the whole state (credentials, buffers); call when abandoning it. */
void p11n_socks5_clear(p11n_socks5 *st);

#endif
