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

/* p11n_listen failed with `rc`: one line, with the limit and the option
 * that sets it for LIMIT. Returns the exit status. */
#define CLI_STR_(x) #x
#define CLI_STR(x) CLI_STR_(x)
int cli_listen_failed(const char *cmd, const char *addr, int rc);

/* Listen on the socket passed by socket activation (LISTEN_FDS and
 * LISTEN_PID naming this process: exactly one socket) or else bind
 * host:port (`addr` is how the user wrote it). Returns 0, or an exit
 * status after printing one line prefixed with `cmd`. */
int cli_listen(p11n_ctx *ctx, const char *cmd, const char *host, uint16_t port,
    const char *addr, const p11n_listen_options *lo, p11n_listener **out);

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

/* A long-running service (tools/cli_service.c). SIGHUP asks for a
 * reload, SIGTERM and SIGINT for a stop: each sets a flag and makes the
 * loop return (p11n_stop); cli_service_signal() then takes the request. */
#define CLI_SIG_NONE 0
#define CLI_SIG_RELOAD 1
#define CLI_SIG_STOP 2
/* How long a stop waits for connections to close gracefully. */
#define CLI_STOP_GRACE_MS (P11N_LINGER_MS + 3000)
void cli_service_signals(p11n_ctx *ctx);
int cli_service_signal(void);
/* Reload the peers: --peers FILE (`peers_file`), or else the ceremony of
 * a pkcs11: key's token. Logs one line; a failure keeps the peers in use.
 * Tells systemd RELOADING=1 (the caller says READY=1 after). Returns 0 or
 * -1. */
int cli_service_reload(const char *cmd, p11n_ctx *ctx, const char *key_uri,
    const char *peers_file);
/* sd_notify(3) when built with libsystemd, else nothing. */
void cli_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_notify_ready(size_t nconns);   /* READY=1 and STATUS= with the count */

/* Peers from a ceremony file (tools/cli_peers.c): parse and check the
 * whole file, then bring the context's store to it, revoking the peers
 * that left or changed key (their connections close with REVOKED). On
 * error the store is unchanged and `why` says what (with the line).
 * Returns 0 or an exit status. */
struct cli_peers_diff {
    size_t total, added, removed, changed;
};
int cli_peers_file_apply(p11n_ctx *ctx, const char *path, struct cli_peers_diff *d, char *why,
    size_t cap);
void cli_peers_free(void);

#endif
