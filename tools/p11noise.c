#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *usage;
} commands[] = {
    { "keygen", cmd_keygen, "keygen --token URI --label NAME" },
    { "pubkey", cmd_pubkey, "pubkey --key URI" },
    { "ceremony", cmd_ceremony, "ceremony import|list|remove --token URI ..." },
    { "listen", cmd_listen, "listen --key URI --bind HOST:PORT [--pattern KK|XK] ..." },
    { "connect", cmd_connect, "connect --key URI --peer ID|PUBHEX [--socks5 ...] HOST:PORT" },
    { "tunnel", cmd_tunnel, "tunnel server|client --key URI --listen ADDR ... (--help)" },
    { "vectors", cmd_vectors, "vectors FILE..." },
    { "bench", cmd_bench, "bench [options]" },
};

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("p11noise: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int usage(FILE *f)
{
    fprintf(f, "usage: p11noise COMMAND [OPTIONS]\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  p11noise %s\n", commands[i].usage);
    return f == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return usage(stdout);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    cli_error("unknown command '%s'", argv[1]);
    return usage(stderr);
}
