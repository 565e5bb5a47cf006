/*
 * p11noise tunnel: the command line. One table of options, each valid on
 * the server, the client or both; "--opt value" and "--opt=value".
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tunnel.h"

#define DEFAULT_MODE 0600         /* a Unix listening socket: the owner only */
#define DEFAULT_CONNECT_MS 10000  /* the server's connect to its target */

static const char SERVER_USAGE[] =
    "usage: p11noise tunnel server --key URI --listen HOST:PORT --target HOST:PORT|unix:PATH\n"
    "                              [--pattern KK|XK] [--prologue S] [--peer ID]... [--peers FILE]\n"
    "                              [--proxy-protocol] [--connect-timeout MS]\n"
    "                              [--log-format text|journal|json] [--config FILE] [-v]\n"
    "                              [--control PATH]\n"
    "Accepts Noise connections on --listen (a numeric address) and, for each\n"
    "authenticated peer, opens one plain connection to --target and carries the\n"
    "bytes both ways, half-closes included. --peer lists the initiators accepted;\n"
    "without it, every peer of --peers FILE, or of the token's ceremony objects for\n"
    "a pkcs11: key. --proxy-protocol sends the target a PROXY protocol v2 header\n"
    "first (command PROXY), with the peer's identifier (or, without one, its public\n"
    "key in hex) in TLV 0xE0 and its 33-byte key in TLV 0xE1. A target that does not\n"
    "answer within --connect-timeout (10000 ms) fails that connection. SIGHUP reloads\n"
    "the peers; SIGINT or SIGTERM closes every connection and exits 0. Logs go to\n"
    "stderr (-v: more). --control PATH serves `p11noise status` on a Unix socket\n"
    "(mode 0600).\n";
static const char CLIENT_USAGE[] =
    "usage: p11noise tunnel client --key URI --peer ID|PUBHEX --listen HOST:PORT|unix:PATH\n"
    "                              [--pattern KK|XK] [--prologue S] [--peers FILE]\n"
    "                              [--socks5 [USER:PASS@]HOST:PORT] [--mode OCTAL]\n"
    "                              [--log-format text|journal|json] [--config FILE] [-v]\n"
    "                              HOST:PORT\n"
    "Accepts plain connections on --listen and, for each, opens one Noise\n"
    "connection to the tunnel server at HOST:PORT (through the SOCKS5 proxy if\n"
    "given) and carries the bytes both ways, half-closes included. A Unix socket\n"
    "is created with mode 0600 unless --mode says otherwise. SIGINT or SIGTERM\n"
    "stops it. Logs go to stderr (-v: more).\n";

enum opt_kind { OPT_STR, OPT_FLAG, OPT_PEER, OPT_MODE, OPT_MS };
#define SRV 1
#define CLI 2

static const struct opt {
    const char *name;
    int sides;                    /* SRV, CLI or both */
    enum opt_kind kind;
    size_t off;                   /* into struct tun_args */
} opts[] = {
    { "--key", SRV | CLI, OPT_STR, offsetof(struct tun_args, key) },
    { "--pattern", SRV | CLI, OPT_STR, offsetof(struct tun_args, pattern) },
    { "--prologue", SRV | CLI, OPT_STR, offsetof(struct tun_args, prologue) },
    { "--peers", SRV | CLI, OPT_STR, offsetof(struct tun_args, peers_file) },
    { "--listen", SRV | CLI, OPT_STR, offsetof(struct tun_args, listen) },
    { "--peer", SRV | CLI, OPT_PEER, 0 },
    { "--target", SRV, OPT_STR, offsetof(struct tun_args, target) },
    { "--proxy-protocol", SRV, OPT_FLAG, offsetof(struct tun_args, proxy_protocol) },
    { "--socks5", CLI, OPT_STR, offsetof(struct tun_args, socks5) },
    { "--mode", CLI, OPT_MODE, 0 },
    { "--connect-timeout", SRV, OPT_MS, 0 },
    { "-v", SRV | CLI, OPT_FLAG, offsetof(struct tun_args, verbose) },
    { "--log-format", SRV | CLI, OPT_STR, offsetof(struct tun_args, log_format) },
    { "--control", SRV, OPT_STR, offsetof(struct tun_args, control) },
};

static int set_opt(const struct opt *o, const char *val, struct tun_args *a, const char *cmd)
{
    char *end;
    switch (o->kind) {
    case OPT_STR:
        *(const char **)((char *)a + o->off) = val;
        return 0;
    case OPT_FLAG:
        *(int *)((char *)a + o->off) = 1;
        return 0;
    case OPT_MODE:
        errno = 0;
        unsigned long m = strtoul(val, &end, 8);
        if (errno != 0 || *end != '\0' || val[0] == '\0' || m > 0777) {
            cli_error("%s: --mode wants an octal mode such as 0600", cmd);
            return 2;
        }
        a->mode = (unsigned)m;
        return 0;
    case OPT_MS:
        errno = 0;
        unsigned long ms = strtoul(val, &end, 10);
        if (errno != 0 || *end != '\0' || val[0] == '\0' || ms == 0 || ms > 3600000) {
            cli_error("%s: --connect-timeout wants milliseconds (1 to 3600000)", cmd);
            return 2;
        }
        a->connect_ms = (unsigned)ms;
        return 0;
    case OPT_PEER:
        if (!a->server) {
            a->peer = val;
            return 0;
        }
        if (a->nserver_peers == TUN_MAX_PEERS) {
            cli_error("%s: at most %d --peer options", cmd, TUN_MAX_PEERS);
            return 2;
        }
        a->server_peers[a->nserver_peers++] = val;
        return 0;
    }
    return 2;
}

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

/* The shared parser's table for one side: id k + 1 is opts[k]. It names
 * a mistyped option without its value, which may hold a PIN or a proxy
 * password. */
static void side_table(int side, struct cli_opt out[NOPTS + 1])
{
    size_t n = 0;
    for (size_t k = 0; k < NOPTS; k++)
        if (opts[k].sides & side)
            out[n++] = (struct cli_opt){ opts[k].name, (int)k + 1, opts[k].kind != OPT_FLAG };
    out[n] = (struct cli_opt){ NULL, 0, 0 };
}

static int check_args(struct tunnel *t, const char *cmd)
{
    struct tun_args *a = &t->a;
    const char *missing = a->key == NULL ? "--key URI"
        : a->listen == NULL              ? "--listen"
        : a->target == NULL              ? (a->server ? "--target" : "HOST:PORT")
        : !a->server && a->peer == NULL  ? "--peer ID|PUBHEX"
                                         : NULL;
    if (missing != NULL) {
        cli_error("%s: %s is required", cmd, missing);
        return 2;
    }
    if (a->pattern != NULL && strcmp(a->pattern, "KK") != 0 && strcmp(a->pattern, "XK") != 0) {
        cli_error("%s: --pattern must be KK or XK", cmd);
        return 2;
    }
    if (a->log_format != NULL && cli_log_format_parse(a->log_format) < 0) {
        cli_error("%s: --log-format must be text, journal or json", cmd);
        return 2;
    }
    char shown[CLI_SHOWN_MAX];
    if (tun_parse_addr(a->listen, &t->listen_addr) != 0
        || (a->server && t->listen_addr.is_unix)) {
        cli_error("%s: --listen wants HOST:PORT or [IPV6]:PORT%s, got %s", cmd,
            a->server ? "" : " or unix:PATH", cli_shown(a->listen, shown));
        return 2;
    }
    /* The server's target may be a Unix socket; the client's remote is TCP. */
    if (tun_parse_addr(a->target, &t->target_addr) != 0
        || (t->target_addr.is_unix ? !a->server : t->target_addr.port == 0)) {
        cli_error("%s: %s wants HOST:PORT or [IPV6]:PORT%s, got %s", cmd,
            a->server ? "--target" : "the tunnel server", a->server ? " or unix:PATH" : "",
            cli_shown(a->target, shown));
        return 2;
    }
    return 0;
}

int tun_parse_args(int argc, char **argv, struct tunnel *t)
{
    struct tun_args *a = &t->a;
    const char *cmd = a->server ? "tunnel server" : "tunnel client";
    a->mode = DEFAULT_MODE;
    a->connect_ms = DEFAULT_CONNECT_MS;
    struct cli_opt table[NOPTS + 1];
    side_table(a->server ? SRV : CLI, table);
    struct cli_parser p;
    cli_parser_init(&p, cmd, argc, argv, table);
    char shown[CLI_SHOWN_MAX];
    const char *val;
    int id;
    while ((id = cli_next(&p, &val)) != CLI_END) {
        if (id == CLI_HELP) {
            fputs(a->server ? SERVER_USAGE : CLIENT_USAGE, stdout);
            return -1;
        }
        if (id == CLI_BAD)
            return 2;
        if (id == CLI_ARG && !a->server && a->target == NULL) {
            a->target = val;
        } else if (id == CLI_ARG) {
            cli_error("%s: unexpected argument %s", cmd, cli_shown(val, shown));
            return 2;
        } else if (set_opt(&opts[id - 1], val, a, cmd) != 0) {
            return 2;
        }
    }
    return check_args(t, cmd);
}


void tun_usage(void)
{
    printf("%s\n%s", SERVER_USAGE, CLIENT_USAGE);
}

/* cli_config_opts.known for the tunnel: its options on this side. */
static int known(const char *name, int *takes_value, void *arg)
{
    const struct tun_args *a = arg;
    for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
        if (strcmp(opts[k].name, name) == 0 && (opts[k].sides & (a->server ? SRV : CLI))) {
            *takes_value = opts[k].kind != OPT_FLAG;
            return 1;
        }
    return 0;
}

int tun_config(int *argc, char ***argv, struct tunnel *t)
{
    struct cli_config_opts co = { t->a.server ? "tunnel server" : "tunnel client", known,
        &t->a };
    return cli_config_apply(&co, argc, argv, &t->lim);
}
