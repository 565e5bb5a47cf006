/* Socket activation: systemd (or systemd-socket-activate, or any
 * manager speaking the same protocol) binds the port and passes the
 * listening socket as descriptor 3, naming this process in LISTEN_PID.
 * Done by hand, so the command works the same without libsystemd. */
#include "cli_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define LISTEN_FDS_START 3

/* Returns the passed descriptor, -1 when nothing was passed to this
 * process, or -2 (after printing why) when the variables are there but
 * unusable. The variables are removed either way, so that a child (the
 * tunnel's target is never exec'd, but anything spawned later) does not
 * take them for its own. */
static int activated_fd(const char *cmd)
{
    const char *fds = getenv("LISTEN_FDS"), *pid = getenv("LISTEN_PID");
    if (fds == NULL)
        return -1;
    char *end;
    errno = 0;
    long n = strtol(fds, &end, 10);
    int bad = errno != 0 || *end != '\0' || end == fds;
    long p = pid != NULL ? strtol(pid, &end, 10) : 0;
    int ours = pid != NULL && *end == '\0' && p == (long)getpid();
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
    if (!ours)
        return -1;  /* meant for the process that spawned us */
    if (bad || n != 1) {
        cli_error("%s: socket activation passed %s sockets; one is supported", cmd, fds);
        return -2;
    }
    return LISTEN_FDS_START;
}

int cli_listen(p11n_ctx *ctx, const char *cmd, const char *host, uint16_t port,
    const char *addr, const p11n_listen_options *lo, p11n_listener **out)
{
    int fd = activated_fd(cmd);
    if (fd == -2)
        return CLI_EXIT_USAGE;
    if (fd < 0) {
        int rc = p11n_listen(ctx, host, port, lo, out);
        return rc == P11N_OK ? 0 : cli_listen_failed(cmd, addr, rc);
    }
    int rc = p11n_listen_fd(ctx, fd, lo, out);
    if (rc == P11N_OK)
        return 0;
    cli_error("%s: cannot listen on the socket passed by socket activation: %s", cmd,
        p11n_strerror(rc));
    return rc == P11N_ERR_INVALID_ARG ? CLI_EXIT_USAGE : cli_exit_status(rc);
}
