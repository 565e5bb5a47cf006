/*
 * p11noise tunnel server|client: the command line, the context and the
 * poll() loop that runs the context beside the plain sockets.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_net.h"
#include "tunnel.h"

#define DEFAULT_MODE 0600         /* a Unix listening socket: the owner only */

static const char SERVER_USAGE[] =
    "usage: p11noise tunnel server --key URI --listen HOST:PORT --target HOST:PORT|unix:PATH\n"
    "                              [--pattern KK|XK] [--prologue S] [--peer ID]... [--peers FILE]\n"
    "                              [--proxy-protocol] [-v]\n"
    "Accepts Noise connections on --listen (a numeric address) and, for each\n"
    "authenticated peer, opens one plain connection to --target and carries the\n"
    "bytes both ways, half-closes included. --peer lists the initiators accepted;\n"
    "without it, every peer of --peers FILE, or of the token's ceremony objects for\n"
    "a pkcs11: key. --proxy-protocol sends the target a PROXY protocol v2 header\n"
    "(command LOCAL) first, with the peer's identifier (or, without one, its public\n"
    "key in hex) in TLV 0xE0. SIGINT or SIGTERM stops it. Logs go to stderr (-v: more).\n";
static const char CLIENT_USAGE[] =
    "usage: p11noise tunnel client --key URI --peer ID|PUBHEX --listen HOST:PORT|unix:PATH\n"
    "                              [--pattern KK|XK] [--prologue S] [--peers FILE]\n"
    "                              [--socks5 [USER:PASS@]HOST:PORT] [--mode OCTAL] [-v] HOST:PORT\n"
    "Accepts plain connections on --listen and, for each, opens one Noise\n"
    "connection to the tunnel server at HOST:PORT (through the SOCKS5 proxy if\n"
    "given) and carries the bytes both ways, half-closes included. A Unix socket\n"
    "is created with mode 0600 unless --mode says otherwise. SIGINT or SIGTERM\n"
    "stops it. Logs go to stderr (-v: more).\n";

int tun_log_level = P11N_LOG_INFO;

void tun_log_cb(int level, const char *line, void *arg)
{
    static const char *const names[] = { "debug", "error", "warn", "info", "debug" };
    (void)arg;
    if (level > tun_log_level)
        return;
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ p11noise %s: %s\n", stamp, ts.tv_nsec / 1000000L,
        names[level >= 1 && level <= 4 ? level : 0], line);
}

void tun_log(int level, const char *fmt, ...)
{
    if (level > tun_log_level)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    tun_log_cb(level, line, NULL);
}

/* ---- arguments ---- */

enum opt_kind { OPT_STR, OPT_FLAG, OPT_PEER, OPT_MODE };
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
    { "-v", SRV | CLI, OPT_FLAG, offsetof(struct tun_args, verbose) },
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
            cli_error("%s: --mode wants an octal mode such as 0600, got '%s'", cmd, val);
            return 2;
        }
        a->mode = (unsigned)m;
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

/* One option (with its value from "--opt=value" or the next argument).
 * Returns 0, or 2 after printing. */
static int parse_opt(int argc, char **argv, int *i, struct tun_args *a, const char *cmd)
{
    const char *arg = argv[*i], *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
        const struct opt *o = &opts[k];
        if (strlen(o->name) != nlen || strncmp(o->name, arg, nlen) != 0
            || !(o->sides & (a->server ? SRV : CLI)))
            continue;
        if (o->kind == OPT_FLAG) {
            if (eq != NULL) {
                cli_error("%s: %s takes no value", cmd, o->name);
                return 2;
            }
            return set_opt(o, NULL, a, cmd);
        }
        if (eq == NULL && *i + 1 >= argc) {
            cli_error("%s: %s needs a value", cmd, o->name);
            return 2;
        }
        return set_opt(o, eq ? eq + 1 : argv[++*i], a, cmd);
    }
    cli_error("%s: unknown option '%s' (--help for usage)", cmd, arg);
    return 2;
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
    if (tun_parse_addr(a->listen, &t->listen_addr) != 0
        || (a->server && t->listen_addr.is_unix)) {
        cli_error("%s: --listen wants HOST:PORT or [IPV6]:PORT%s, got '%s'", cmd,
            a->server ? "" : " or unix:PATH", a->listen);
        return 2;
    }
    /* The server's target may be a Unix socket; the client's remote is TCP. */
    if (tun_parse_addr(a->target, &t->target_addr) != 0
        || (t->target_addr.is_unix ? !a->server : t->target_addr.port == 0)) {
        cli_error("%s: %s wants HOST:PORT or [IPV6]:PORT%s, got '%s'", cmd,
            a->server ? "--target" : "the tunnel server", a->server ? " or unix:PATH" : "",
            a->target);
        return 2;
    }
    return 0;
}

/* Returns 0 to run, -1 after --help, or 2 after an error. */
static int parse_args(int argc, char **argv, struct tunnel *t)
{
    struct tun_args *a = &t->a;
    const char *cmd = a->server ? "tunnel server" : "tunnel client";
    a->mode = DEFAULT_MODE;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            fputs(a->server ? SERVER_USAGE : CLIENT_USAGE, stdout);
            return -1;
        }
        if (o[0] == '-' && o[1] != '\0') {
            if (parse_opt(argc, argv, &i, a, cmd) != 0)
                return 2;
        } else if (!a->server && a->target == NULL) {
            a->target = o;
        } else {
            cli_error("%s: unexpected argument '%s'", cmd, o);
            return 2;
        }
    }
    return check_args(t, cmd);
}

/* ---- setup ---- */

static int setup(struct tunnel *t, const char *cmd)
{
    tun_log_level = t->a.verbose ? P11N_LOG_DEBUG : P11N_LOG_INFO;
    p11n_ctx_options o = { 0 };
    o.log = tun_log_cb;
    o.log_level = tun_log_level;
    return cli_net_setup(cmd, &o, t->a.key, t->a.peers_file, &t->ctx, &t->key);
}

/* ---- the loop ---- */

long long tun_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The listening socket's fd, or -1 while accepting is paused (and then a
 * timeout no longer than the pause). */
static int listen_fd(const struct tunnel *t, int *timeout)
{
    long long left = t->accept_resume_ms - tun_now_ms();
    if (t->lfd < 0 || left <= 0)
        return t->lfd;
    if (*timeout < 0 || *timeout > left)
        *timeout = (int)left;
    return -1;
}

/* The context's fds (from p11n_poll_fds), then the client's listening
 * socket, then each connection's plain socket; `who` names the owner of
 * each of the latter. */
struct pollset {
    struct pollfd *fds;
    struct tun **who;
    size_t cap, nctx, n;
};

static int pollset_reserve(struct pollset *ps, size_t n)
{
    if (n <= ps->cap)
        return 0;
    size_t cap = n + 64;
    struct pollfd *f = realloc(ps->fds, cap * sizeof(*f));
    if (f == NULL)
        return -1;
    ps->fds = f;
    struct tun **w = realloc(ps->who, cap * sizeof(*w));
    if (w == NULL)
        return -1;
    ps->who = w;
    ps->cap = cap;
    return 0;
}

static int pollset_fill(struct tunnel *t, struct pollset *ps, int *timeout)
{
    for (;;) {
        int rc = p11n_poll_fds(t->ctx, ps->fds, ps->cap, &ps->nctx, timeout);
        if (rc == P11N_OK)
            break;
        if (rc != P11N_ERR_BUFFER_TOO_SMALL || pollset_reserve(ps, ps->nctx + 1) != 0)
            return -1;
    }
    size_t count = 1;
    for (struct tun *c = t->conns; c != NULL; c = c->next)
        count++;
    if (pollset_reserve(ps, ps->nctx + count) != 0)
        return -1;
    ps->n = ps->nctx;
    ps->who[ps->n] = NULL;
    ps->fds[ps->n++] = (struct pollfd){ .fd = listen_fd(t, timeout), .events = POLLIN };
    for (struct tun *c = t->conns; c != NULL; c = c->next) {
        short ev = tun_events(c);
        /* No events: left out, or a hung-up socket would wake us forever. */
        ps->who[ps->n] = c;
        ps->fds[ps->n++] = (struct pollfd){ .fd = ev ? c->fd : -1, .events = ev };
    }
    return 0;
}

static int run(struct tunnel *t, const char *cmd)
{
    struct pollset ps = { 0 };
    int status = 0;
    for (;;) {
        int timeout = -1;
        if (pollset_fill(t, &ps, &timeout) != 0) {
            cli_error("%s: out of memory", cmd);
            status = 1;
            break;
        }
        if (poll(ps.fds, ps.n, timeout) < 0 && errno != EINTR) {
            cli_error("%s: poll: %s", cmd, strerror(errno));
            status = 1;
            break;
        }
        int rc = p11n_process(t->ctx, ps.fds, ps.nctx);
        if (rc == P11N_ERR_SHUTDOWN) {
            tun_log(P11N_LOG_INFO, "%s: stopping", cmd);
            break;
        }
        if (rc != P11N_OK) {
            cli_error("%s: %s", cmd, p11n_strerror(rc));
            status = 1;
            break;
        }
        if (ps.fds[ps.nctx].fd >= 0 && (ps.fds[ps.nctx].revents & POLLIN))
            tun_client_accept(t);
        for (size_t i = ps.nctx + 1; i < ps.n; i++) {
            struct tun *c = ps.who[i];
            /* A callback may have closed it or reused the fd number. */
            if (ps.fds[i].revents != 0 && !c->dead && c->fd == ps.fds[i].fd)
                tun_ready(c, ps.fds[i].revents);
        }
        tun_reap(t);
    }
    free(ps.fds);
    free(ps.who);
    return status;
}

static void teardown(struct tunnel *t)
{
    p11n_ctx_free(t->ctx);  /* no callback runs: the connections are ours to close */
    for (struct tun *c = t->conns; c != NULL; c = c->next) {
        if (c->fd >= 0)
            tun_close_reset(c->fd);
        c->fd = -1;
        c->conn = NULL;
        c->dead = 1;
    }
    tun_reap(t);
    if (t->lfd >= 0) {
        close(t->lfd);
        if (t->listen_addr.is_unix)
            unlink(t->listen_addr.host);
    }
    p11n_key_free(t->key);
    free(t->targets);
    free(t->target_lens);
}

int cmd_tunnel(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0)) {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            printf("%s\n%s", SERVER_USAGE, CLIENT_USAGE);
            return 0;
        }
        cli_error("tunnel: say 'tunnel server' or 'tunnel client' (--help for usage)");
        return 2;
    }
    struct tunnel t;
    memset(&t, 0, sizeof(t));
    t.kind = TUN_KIND_TUNNEL;
    t.lfd = -1;
    t.a.server = strcmp(argv[1], "server") == 0;
    const char *cmd = t.a.server ? "tunnel server" : "tunnel client";
    int status = parse_args(argc - 1, argv + 1, &t);
    if (status != 0)
        return status < 0 ? 0 : status;
    status = setup(&t, cmd);
    if (status == 0 && (t.a.server ? tun_server_start(&t) : tun_client_start(&t)) != 0)
        status = 1;
    if (status == 0) {
        cli_catch_signals(t.ctx);
        status = run(&t, cmd);
    }
    teardown(&t);
    return status;
}
