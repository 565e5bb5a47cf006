/* Command-line helpers shared by the commands that run a context: address
 * syntax, signals, and the context/key/peers setup (public API only). */
#ifndef P11N_CLI_NET_H
#define P11N_CLI_NET_H

#include <stddef.h>
#include <stdint.h>

#include "p11noise.h"

/* "HOST:PORT" or "[V6]:PORT" (a bare IPv6 address needs brackets); host is
 * copied into `host` (cap bytes). Returns 0, or -1 when malformed. */
int cli_split_host_port(const char *s, char *host, size_t cap, uint16_t *port);

/* SIGINT and SIGTERM call p11n_stop(ctx); SIGPIPE is ignored. */
void cli_catch_signals(p11n_ctx *ctx);

/* A context with options `o`, the key `key_uri` (loaded with
 * p11n_key_load_ex's `key_flags`; its warning, if any, printed once), and
 * the peers: from `peers_file`, or else, for a pkcs11: key, from its
 * token's ceremony objects. Returns 0, or an exit status (CLI_EXIT_*)
 * after printing one line prefixed with `cmd`; whatever was made is left
 * in *ctx and *key for the caller to free. */
int cli_net_setup(const char *cmd, const p11n_ctx_options *o, const char *key_uri,
    unsigned key_flags, const char *peers_file, p11n_ctx **ctx, p11n_key **key);

#endif
