/* Name resolution through c-ares (resolve.c): a host, a port and a
 * callback; the resolver knows nothing of who asked. */
#ifndef P11N_RESOLVE_H
#define P11N_RESOLVE_H

#include "net.h"

/* The answer to one query: rc OK with n >= 1 addresses (port filled in),
 * or rc RESOLVE with text saying why (valid during the call only, like
 * addrs). */
typedef void (*p11n_resolve_fn)(void *arg, int rc, const char *text,
    const struct sockaddr_storage *addrs, size_t n);
typedef struct p11n_resolve_req p11n_resolve_req;
/* Create the context's c-ares channel now (else on first use). Errors:
 * INVALID_ARG (opt.dns_servers malformed), NOMEM, RESOLVE. */
int p11n_resolver_open(p11n_ctx *ctx);
/* Resolve host for a TCP connection to port; fn(arg, ...) gets the
 * answer once, on the loop thread. *out is the pending request, to hand
 * to p11n_resolve_cancel; it is NULL when the answer came before this
 * returned (names from /etc/hosts), and fn has then run. Errors (fn is
 * not called): NOMEM, RESOLVE. */
int p11n_resolve_start(p11n_ctx *ctx, const char *host, uint16_t port, p11n_resolve_fn fn,
    void *arg, p11n_resolve_req **out);
/* Forget a pending request (NULL: nothing): fn is never called for it.
 * The caller drops its pointer, which is then no longer valid. */
void p11n_resolve_cancel(p11n_resolve_req *req);
void p11n_resolver_free(p11n_ctx *ctx);

#endif
