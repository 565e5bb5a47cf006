/* The control socket of listen and tunnel server (--control PATH) and
 * the `status` command that reads it (tools/cli_control.c). */
#ifndef P11N_CLI_CONTROL_H
#define P11N_CLI_CONTROL_H

#include "p11noise.h"

struct cli_control;

/* Serve the connections of `ctx` on a Unix socket at `path` (mode 0600;
 * an old socket file there is replaced) from a thread of its own. Close
 * it with the two calls below. Returns NULL after printing one line prefixed
 * with `cmd`. */
struct cli_control *cli_control_open(p11n_ctx *ctx, const char *cmd, const char *path);
/* Stop the thread, close and remove the socket: before p11n_ctx_free
 * (the thread posts to the context). Then, after p11n_ctx_free (a
 * snapshot posted and not yet run may still run until then), free it.
 * NULL does nothing. */
void cli_control_stop(struct cli_control *k);
void cli_control_free(struct cli_control *k);
/* SIGHUP: the control socket moves to `path` (NULL: none), opened before
 * the old one closes; when it cannot be opened the old one stays, and
 * one log line says so. The same path changes nothing. *k may change;
 * free it as above. */
void cli_control_reload(struct cli_control **k, p11n_ctx *ctx, const char *cmd,
    const char *path);

/* p11noise status --control PATH [--json]. */
int cmd_status(int argc, char **argv);

#endif
