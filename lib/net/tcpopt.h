/* Socket options every connection's TCP socket gets, incoming and
 * outgoing alike (the proxy's socket when tunnelled). */
#ifndef P11N_TCPOPT_H
#define P11N_TCPOPT_H

#include "net.h"

/* TCP_NODELAY (handshake acts and messages go out at once) and TCP
 * keepalive from ctx->opt (keepalive_idle_s -1: off), so that a peer
 * that vanished without a reset does not hold an established slot
 * forever. Best effort: a system without one of the options keeps its
 * default; returns 0, or -1 (errno) if one could not be set. */
int p11n_tcp_setup(const p11n_ctx *ctx, int fd);

#endif
