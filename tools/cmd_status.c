/* p11noise status: ask a running listen or tunnel server, through its
 * control socket, for its connections (tools/cli_control.c answers). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cli.h"
#include "cli_control.h"

static const char STATUS_USAGE[] =
    "usage: p11noise status --control PATH [--json]\n"
    "Prints one line per connection of the listen or tunnel server started with\n"
    "--control PATH: its peer, remote address, direction, state, age, the\n"
    "messages, bytes and key rotations each way, the time of the last rotation,\n"
    "and the handshake hash (channel binding; the same at both ends).\n"
    "--json: one JSON object per line.\n";

enum { O_CONTROL = 1, O_JSON };

static const struct cli_opt status_opts[] = {
    { "--control", O_CONTROL, 1 }, { "--json", O_JSON, 0 }, { NULL, 0, 0 },
};

/* Bounds a service that accepts and never answers. */
#define STATUS_WAIT_MS 10000

static int ask(const char *path, int json)
{
    char shown[CLI_SHOWN_MAX];
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        cli_error("status: --control %s: path too long", cli_shown(path, shown));
        return CLI_EXIT_USAGE;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0
        || send(fd, json ? "json\n" : "text\n", 5, MSG_NOSIGNAL) != 5) {
        cli_error("status: %s: %s", cli_shown(path, shown), strerror(errno));
        if (fd >= 0)
            close(fd);
        return CLI_EXIT_NETWORK;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    for (;;) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, STATUS_WAIT_MS) <= 0) {
            cli_error("status: %s: no answer", cli_shown(path, shown));
            close(fd);
            return CLI_EXIT_NETWORK;
        }
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    return fflush(stdout) == 0 ? 0 : CLI_EXIT_INTERNAL;
}

int cmd_status(int argc, char **argv)
{
    struct cli_parser p;
    cli_parser_init(&p, "status", argc, argv, status_opts);
    const char *path = NULL, *val;
    int json = 0, id;
    while ((id = cli_next(&p, &val)) != CLI_END) {
        if (id == CLI_HELP) {
            fputs(STATUS_USAGE, stdout);
            return 0;
        }
        if (id == CLI_BAD)
            return CLI_EXIT_USAGE;
        if (id == CLI_ARG) {
            cli_error("status: unexpected argument");
            return CLI_EXIT_USAGE;
        }
        if (id == O_CONTROL)
            path = val;
        else
            json = 1;
    }
    if (path == NULL) {
        cli_error("status: --control PATH is required");
        fputs(STATUS_USAGE, stderr);
        return CLI_EXIT_USAGE;
    }
    return ask(path, json);
}
