/*
 * The dialer: one outgoing attempt from a host name to a connected
 * socket, through the SOCKS5 proxy when one is given (resolve, try each
 * address in turn, then the proxy phase). It knows the loop, the
 * resolver and socks/, never the connection that asked. A new proxy type
 * changes this file and socks/ alone.
 */
#ifndef P11N_DIALER_H
#define P11N_DIALER_H

#include "net.h"
#include "resolve.h"

typedef struct p11n_dialer p11n_dialer;

/* The attempt's end, called once on the loop thread (never inside
 * p11n_dial_start); the dialer is gone when it runs. rc OK: fd is a
 * connected socket (tunnelled through the proxy when there is one),
 * now the callee's, not watched; addr is "[addr]:port" of its peer (the
 * proxy's when tunnelled). Otherwise fd is -1 and text says why: RESOLVE,
 * CONNECT, TIMEOUT, NOMEM, a SOCKS_* error for the proxy and its phase,
 * RESET or IO. text and addr are valid during the call only. */
typedef void (*p11n_dial_fn)(void *arg, int rc, const char *text, int fd, const char *addr);

/* Start dialing host:port, or through `proxy` (NULL or proxy->host NULL:
 * direct). host and proxy are borrowed: they must stay unchanged until
 * fn runs or the attempt is cancelled. `who` ("conn #7") prefixes the
 * log lines; copied. Each step has a deadline: the context's connect
 * timeout for resolving and for each address, its act-1 deadline (at
 * most the connect timeout) for the proxy phase, which a proxy that
 * accepts and says nothing must not hold longer. Every socket gets the
 * context's keepalive (tcpopt.h). Errors (fn is not called): NOMEM. */
int p11n_dial_start(p11n_ctx *ctx, const char *who, const char *host, uint16_t port,
    const p11n_proxy *proxy, p11n_dial_fn fn, void *arg, p11n_dialer **out);

/* Give up the attempt (NULL: nothing): fn is never called, the socket is
 * closed and the proxy state (credentials) wiped. */
void p11n_dial_cancel(p11n_dialer *d);

#endif
