#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_control.h"
#include "p11noise.h"

/* One line per subcommand: its name, its function (declared in cli.h)
 * and its line of the usage. */
static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *usage;
} commands[] = {
    { "keygen", cmd_keygen, "keygen --token URI --label NAME" },
    { "pubkey", cmd_pubkey, "pubkey --key URI [--fingerprint] | --fingerprint PUBHEX" },
    { "ceremony", cmd_ceremony, "ceremony import|list|remove --token URI ..." },
    { "listen", cmd_listen, "listen --key URI --bind HOST:PORT [--config FILE] ..." },
    { "connect", cmd_connect, "connect --key URI --peer ID|PUBHEX [--socks5 ...] HOST:PORT" },
    { "tunnel", cmd_tunnel, "tunnel server|client --key URI --listen ADDR ... (--help)" },
    { "status", cmd_status, "status --control PATH [--json]" },
    { "vectors", cmd_vectors, "vectors FILE..." },
    { "bench", cmd_bench, "bench [options]" },
};

/* In the journal's or the JSON form, the command's own lines take that
 * form too, so that every line on stderr reads the same way. */
static void say(int level, const char *line)
{
    if (cli_log_format == CLI_LOG_TEXT)
        fprintf(stderr, "p11noise: %s\n", line);
    else
        cli_log_event(level, level == P11N_LOG_ERROR ? "error" : "warning", "%s", line);
}

void cli_error(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    say(P11N_LOG_ERROR, line);
}

void cli_warning(const char *fmt, ...)
{
    char line[1024] = "warning: ";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + 9, sizeof(line) - 9, fmt, ap);
    va_end(ap);
    say(P11N_LOG_WARN, line);
}

static int usage(FILE *f)
{
    fprintf(f, "usage: p11noise COMMAND [OPTIONS]   (COMMAND --help for its own)\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  p11noise %s\n", commands[i].usage);
    fprintf(f, "  p11noise --version\n");
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout);
    if (strcmp(argv[1], "--version") == 0) {
        /* The library actually loaded may be another build than the one
         * this command was compiled with. */
        printf("%s (library %s, protocol version %d)\n", PACKAGE_STRING, p11n_version(),
            P11N_PROTOCOL_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    char shown[CLI_SHOWN_MAX];
    cli_error("unknown command %s", cli_shown(argv[1], shown));
    return usage(stderr);
}
