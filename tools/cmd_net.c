/*
 * p11noise listen / p11noise connect: the networking API driven from the
 * command line (public API only).
 *
 * `connect` runs the context inside its own poll() through the external
 * loop interface, so that standard input joins the same loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_control.h"
#include "cli_net.h"
#include "p11noise.h"

#define MAX_LISTEN_PEERS 64
/* connect --linger: how long a silent peer is waited for after the last
 * line went out (default), and the most accepted. */
#define LINGER_DEFAULT_MS 1000
#define LINGER_MAX_MS 3600000

struct net_args {
    const char *key;
    const char *pattern;
    const char *prologue;
    const char *peers_file;
    const char *socks5;
    const char *addr;             /* --bind, or the connect target */
    const char *peer;             /* connect --peer */
    const char *log_format;       /* --log-format */
    const char *control;          /* listen --control */
    struct cli_limits lim;        /* the library's limits from --config */
    int argc0;                    /* the command line as given, for a reload */
    char **argv0;
    int has_config;
    const char *listen_peers[MAX_LISTEN_PEERS];
    size_t nlisten_peers;
    long linger_ms;               /* connect --linger */
    int echo;
    int raw;                      /* listen --raw */
    int show_peer;                /* listen --show-peer */
    int dev_key;                  /* --dev-allow-extractable-key */
    int verbose;
};

static const char LISTEN_USAGE[] =
    "usage: p11noise listen --key URI --bind HOST:PORT [--pattern KK|XK] [--prologue S]\n"
    "                       [--peer ID]... [--peers FILE] [--echo | [--raw] [--show-peer]]\n"
    "                       [--dev-allow-extractable-key] [--log-format text|journal|json] [-v]\n"
    "                       [--config FILE] [--control PATH] [--idle-timeout MS] [--LIMIT N]...\n"
    "Accepts Noise connections and prints each message received on one line of\n"
    "stdout (--echo: sends it back instead). Bytes other than printable ASCII\n"
    "are escaped as \\n \\t \\r \\\\ or \\xNN (two hex digits), so a peer cannot\n"
    "drive the terminal or forge lines; --raw writes the bytes as received.\n"
    "--show-peer starts each line with the peer and \": \". --bind takes a\n"
    "numeric address (\"[::1]:PORT\" for IPv6; port 0 picks a free one). --peer\n"
    "lists the initiators accepted (KK tries them in order); without it, every\n"
    "peer of --peers FILE, or of the token's ceremony objects for a pkcs11: key.\n"
    "--dev-allow-extractable-key: for development only, accept a token key that\n"
    "can be read out of the token. Logs go to stderr (-v: more), time-stamped\n"
    "lines unless --log-format says journal (\"<N>\" priority prefix, the default\n"
    "when stderr is the journal) or json (one object per line). SIGHUP reloads\n"
    "the peers; SIGTERM or SIGINT closes every connection gracefully and exits 0.\n"
    "--config FILE reads options and the library's limits from \"key = value\"\n"
    "lines (p11noise.conf(5)); the command line's options win. --control PATH\n"
    "serves `p11noise status` on a Unix socket (mode 0600). Each of the library's\n"
    "limits is an option too, named as its key without the unit: --idle-timeout MS\n"
    "(close established connections idle this long), --act1-timeout MS,\n"
    "--max-established N, --keepalive-idle S|off, ... (p11noise(1), LIMITS).\n";
static const char CONNECT_USAGE[] =
    "usage: p11noise connect --key URI --peer ID|PUBHEX [--pattern KK|XK] [--prologue S]\n"
    "                        [--peers FILE] [--socks5 [USER:PASS@]HOST:PORT] [--linger MS]\n"
    "                        [--dev-allow-extractable-key] [--log-format text|journal|json]\n"
    "                        [--config FILE] [--idle-timeout MS] [--LIMIT N]... [-v]\n"
    "                        HOST:PORT\n"
    "Connects, sends each line of standard input as one message and prints each\n"
    "message received. Once input has ended and every line went out, it closes\n"
    "the channel and exits 0 when as many messages came back as it sent (an\n"
    "echo), or when the peer has been silent for --linger MS (default 1000).\n"
    "--socks5 reaches HOST through a SOCKS5 proxy, which resolves the name.\n"
    "--dev-allow-extractable-key: for development only, accept a token key that\n"
    "can be read out of the token. Logs go to stderr (-v: more). The library's\n"
    "limits are options too (--idle-timeout MS, ...: p11noise(1), LIMITS).\n";

/* Parse results of parse_args besides 0. */
#define ARGS_BAD 2       /* error printed: exit 2 */
#define ARGS_HELP (-1)   /* usage printed on stdout: exit 0 */

enum {
    O_KEY = 1, O_PATTERN, O_PROLOGUE, O_PEERS, O_BIND, O_SOCKS5, O_PEER, O_LINGER,
    O_ECHO, O_RAW, O_SHOW_PEER, O_DEV_KEY, O_VERBOSE, O_LOG_FORMAT, O_CONTROL
};

/* The options of both commands, then those of one only. */
#define NET_OPTS \
    { "--key", O_KEY, 1 }, { "--pattern", O_PATTERN, 1 }, { "--prologue", O_PROLOGUE, 1 }, \
    { "--peers", O_PEERS, 1 }, { "--peer", O_PEER, 1 }, \
    { "--dev-allow-extractable-key", O_DEV_KEY, 0 }, { "-v", O_VERBOSE, 0 }, \
    { "--log-format", O_LOG_FORMAT, 1 }
static const struct cli_opt listen_opts[] = {
    NET_OPTS, { "--bind", O_BIND, 1 }, { "--echo", O_ECHO, 0 }, { "--raw", O_RAW, 0 },
    { "--show-peer", O_SHOW_PEER, 0 }, { "--control", O_CONTROL, 1 }, { NULL, 0, 0 },
};
static const struct cli_opt connect_opts[] = {
    NET_OPTS, { "--socks5", O_SOCKS5, 1 }, { "--linger", O_LINGER, 1 }, { NULL, 0, 0 },
};

/* Where an option's value or flag goes; NULL for those handled apart. */
static const char **str_field(struct net_args *a, int id)
{
    switch (id) {
    case O_KEY: return &a->key;
    case O_PATTERN: return &a->pattern;
    case O_PROLOGUE: return &a->prologue;
    case O_PEERS: return &a->peers_file;
    case O_BIND: return &a->addr;
    case O_SOCKS5: return &a->socks5;
    case O_LOG_FORMAT: return &a->log_format;
    case O_CONTROL: return &a->control;
    default: return NULL;
    }
}

static int *flag_field(struct net_args *a, int id)
{
    switch (id) {
    case O_ECHO: return &a->echo;
    case O_RAW: return &a->raw;
    case O_SHOW_PEER: return &a->show_peer;
    case O_DEV_KEY: return &a->dev_key;
    case O_VERBOSE: return &a->verbose;
    default: return NULL;
    }
}

/* One option (id, value) of parse_args that is neither a plain string
 * nor a flag. Returns 0 or ARGS_BAD after printing. */
static int set_special(const char *cmd, int listen, struct net_args *a, int id, const char *val)
{
    if (id == O_PEER && !listen) {
        a->peer = val;
    } else if (id == O_PEER) {
        if (a->nlisten_peers == MAX_LISTEN_PEERS) {
            cli_error("%s: at most %d --peer options", cmd, MAX_LISTEN_PEERS);
            return ARGS_BAD;
        }
        a->listen_peers[a->nlisten_peers++] = val;
    } else if (id == O_LINGER) {
        char *end;
        errno = 0;
        long ms = strtol(val, &end, 10);
        if (val[0] < '0' || val[0] > '9' || *end != '\0' || errno != 0 || ms > LINGER_MAX_MS) {
            cli_error("%s: --linger wants milliseconds, 0 to %d", cmd, LINGER_MAX_MS);
            return ARGS_BAD;
        }
        a->linger_ms = ms;
    }
    return 0;
}

/* What parse_args requires once every argument is read. Returns 0 or
 * ARGS_BAD after printing. */
static int check_args(const char *cmd, int listen, const struct net_args *a)
{
    const char *missing = a->key == NULL ? "--key URI is required"
        : a->addr == NULL ? (listen ? "--bind HOST:PORT is required" : "HOST:PORT is required")
        : !listen && a->peer == NULL ? "--peer ID|PUBHEX is required"
        : NULL;
    if (missing != NULL) {
        cli_error("%s: %s", cmd, missing);
        return ARGS_BAD;
    }
    if (a->pattern != NULL && strcmp(a->pattern, "KK") != 0 && strcmp(a->pattern, "XK") != 0) {
        cli_error("%s: --pattern must be KK or XK", cmd);
        return ARGS_BAD;
    }
    if (a->log_format != NULL && cli_log_format_parse(a->log_format) < 0) {
        cli_error("%s: --log-format must be text, journal or json", cmd);
        return ARGS_BAD;
    }
    if (a->echo && (a->raw || a->show_peer)) {
        cli_error("%s: --echo prints no messages: --raw and --show-peer go without it", cmd);
        return ARGS_BAD;
    }
    return 0;
}

/* The options of either command; the positional argument goes to `addr`
 * (connect only). Returns 0, ARGS_BAD or ARGS_HELP. */
static int parse_args(int argc, char **argv, int listen, struct net_args *a)
{
    memset(a, 0, sizeof(*a));
    a->linger_ms = LINGER_DEFAULT_MS;
    const char *cmd = argv[0];
    struct cli_parser p;
    cli_parser_init(&p, cmd, argc, argv, listen ? listen_opts : connect_opts);
    const char *val;
    int id;
    while ((id = cli_next(&p, &val)) != CLI_END) {
        const char **str = str_field(a, id);
        int *flag = flag_field(a, id);
        if (id == CLI_HELP) {
            fputs(listen ? LISTEN_USAGE : CONNECT_USAGE, stdout);
            return ARGS_HELP;
        }
        if (id == CLI_BAD)
            return ARGS_BAD;
        if (id == CLI_ARG && (listen || a->addr != NULL)) {
            /* Never repeated: it may be a misplaced URI or proxy spec. */
            cli_error("%s: unexpected argument %d (--help for usage)", cmd, p.next - 1);
            return ARGS_BAD;
        }
        if (id == CLI_ARG)
            a->addr = val;
        else if (str != NULL)
            *str = val;
        else if (flag != NULL)
            *flag = 1;
        else if (set_special(cmd, listen, a, id, val) != 0)
            return ARGS_BAD;
    }
    return check_args(cmd, listen, a);
}

/* parse_args, then the address (--bind, or connect's target) split into
 * `host` and `port`. Returns -1 to run the command, else the exit status
 * to return at once (0 after --help). */
static int parse_cmd(int argc, char **argv, int listen, struct net_args *a, char *host,
    size_t cap, uint16_t *port)
{
    struct cli_limits lim;
    struct cli_config_opts co = { argv[0], cli_opts_known,
        (void *)(listen ? listen_opts : connect_opts) };
    int argc0 = argc;
    char **argv0 = argv;
    int rc = cli_config_apply(&co, &argc, &argv, &lim);
    if (rc != 0)
        return rc;
    rc = parse_args(argc, argv, listen, a);
    a->lim = lim;
    a->argc0 = argc0;
    a->argv0 = argv0;
    a->has_config = argv != argv0;
    if (rc != 0)
        return rc == ARGS_HELP ? 0 : rc;
    if (cli_split_host_port(a->addr, host, cap, port) != 0 || (!listen && *port == 0)) {
        char shown[CLI_SHOWN_MAX];
        cli_error("%s: %s wants HOST:PORT or [IPV6]:PORT, got %s", argv[0],
            listen ? "--bind" : "the target", cli_shown(a->addr, shown));
        return 2;
    }
    return -1;
}

/* The context, the key and the peers. Returns 0 or an exit status after
 * printing. */
static int setup(const struct net_args *a, const char *cmd, p11n_ctx **ctx, p11n_key **key)
{
    cli_log_init(a->verbose);
    if (a->log_format != NULL)
        cli_log_format = cli_log_format_parse(a->log_format);
    if (a->lim.log_level != 0 && !a->verbose)
        cli_log_level = a->lim.log_level;
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    cli_limits_apply(&a->lim, &o);
    o.log_record = cli_log_record;
    o.log_level = cli_log_level;
    return cli_net_setup(cmd, &o, a->key, a->dev_key ? P11N_KEY_DEV_ALLOW_EXTRACTABLE : 0,
        a->peers_file, ctx, key);
}

/* The handshake options both commands take from the arguments. */
static p11n_channel_options channel_options(const struct net_args *a, p11n_key *key,
    p11n_callbacks cb)
{
    p11n_channel_options ch = { 0 };
    ch.key = key;
    ch.pattern = a->pattern;
    ch.prologue = (const uint8_t *)a->prologue;
    ch.prologue_len = a->prologue ? strlen(a->prologue) : 0;
    ch.cb = cb;
    return ch;
}

/* ---- listen ---- */

/* The callbacks' arg: the listener's state until a connection is
 * established, then the connection's own, which points back to it. Every
 * established connection is on the listener's list, so that a stop can
 * close each gracefully and the service status can count them. */
struct lconn;
struct listen_state {
    int per_conn;                 /* 0 */
    int raw;                      /* --raw */
    int show_peer;                /* --show-peer */
    int echo;                     /* --echo */
    struct lconn *conns;
    size_t nconns;
};

/* --echo applies backpressure: a message p11n_send refuses because the
 * peer does not read its echoes fast enough is kept, and reading stops
 * until the queue drains, so the peer's sending is held back by TCP
 * instead of the echoes piling up (or being dropped). */
struct lconn {
    int per_conn;                 /* 1 */
    struct listen_state *ls;
    struct lconn *prev, *next;
    p11n_conn *conn;
    uint8_t *pending;             /* the refused message, or NULL */
    size_t len;
};

/* Write bytes a peer chose so that they stay one line of plain text: a
 * terminal escape, a newline or a carriage return in a message would
 * otherwise let any authenticated peer drive the operator's terminal or
 * forge lines of output. Backslash is escaped too, so the text reads back
 * unambiguously. */
static void put_escaped(const uint8_t *p, size_t len, FILE *f)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        uint8_t b = p[i];
        const char *named = b == '\n' ? "\\n" : b == '\t' ? "\\t" : b == '\r' ? "\\r"
            : b == '\\' ? "\\\\" : NULL;
        if (named != NULL) {
            fputs(named, f);
        } else if (b >= 0x20 && b < 0x7f) {
            fputc(b, f);
        } else {
            char x[4] = { '\\', 'x', hex[b >> 4], hex[b & 15] };
            fwrite(x, 1, sizeof(x), f);
        }
    }
}

static void print_message(const struct listen_state *ls, p11n_conn *c, const uint8_t *msg,
    size_t len)
{
    if (ls->show_peer) {
        const char *peer = p11n_conn_peer(c) ? p11n_conn_peer(c) : "?";
        put_escaped((const uint8_t *)peer, strlen(peer), stdout);
        fputs(": ", stdout);
    }
    if (ls->raw)
        fwrite(msg, 1, len, stdout);
    else
        put_escaped(msg, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void echo_fail(p11n_conn *c, const char *what, int rc)
{
    cli_log_event(P11N_LOG_ERROR, NULL, "listen: echo to %s: %s: %s; closing",
        p11n_conn_peer(c), what, p11n_strerror(rc));
    p11n_close(c);
}

static void l_established(p11n_conn *c, const char *peer, void *arg)
{
    (void)peer;
    struct listen_state *ls = arg;
    struct lconn *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        echo_fail(c, "connection state", P11N_ERR_NOMEM);
        return;
    }
    e->per_conn = 1;
    e->ls = ls;
    e->conn = c;
    e->next = ls->conns;
    if (ls->conns != NULL)
        ls->conns->prev = e;
    ls->conns = e;
    ls->nconns++;
    p11n_conn_set_arg(c, e);
    cli_notify("STATUS=%zu connection%s", ls->nconns, ls->nconns == 1 ? "" : "s");
}

static void l_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct lconn *e = arg;
    if (!e->ls->echo) {
        print_message(e->ls, c, msg, len);
        return;
    }
    int rc = p11n_send(c, msg, len);
    if (rc == P11N_OK)
        return;
    if (rc != P11N_ERR_WOULD_BLOCK) {
        echo_fail(c, "send", rc);
        return;
    }
    /* +1: an empty message still needs a buffer to mark it pending. */
    if ((e->pending = malloc(len + 1)) == NULL) {
        echo_fail(c, "keeping a message", P11N_ERR_NOMEM);
        return;
    }
    memcpy(e->pending, msg, len);
    e->len = len;
    if ((rc = p11n_conn_pause_read(c, 1)) != P11N_OK)
        echo_fail(c, "pausing", rc);
}

static void l_writable(p11n_conn *c, void *arg)
{
    struct lconn *e = arg;
    if (e->pending == NULL)
        return;
    int rc = p11n_send(c, e->pending, e->len);
    free(e->pending);
    e->pending = NULL;
    if (rc != P11N_OK)
        echo_fail(c, "send", rc);
    else if ((rc = p11n_conn_pause_read(c, 0)) != P11N_OK)
        echo_fail(c, "resuming", rc);
}

static void l_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    (void)c;
    (void)reason;
    (void)text;
    if (!final || !*(int *)arg)
        return;
    struct lconn *e = arg;
    struct listen_state *ls = e->ls;
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        ls->conns = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    ls->nconns--;
    free(e->pending);
    free(e);
    cli_notify("STATUS=%zu connection%s", ls->nconns, ls->nconns == 1 ? "" : "s");
}

/* Stop accepting, close every connection gracefully and run the loop
 * until they are all closed or CLI_STOP_GRACE_MS has passed. */
static void listen_stop(p11n_ctx *ctx, p11n_listener *l, struct listen_state *st)
{
    cli_notify("STOPPING=1");
    p11n_listener_close(l);
    size_t n = st->nconns;
    /* `next` first: a `closed` callback inside p11n_close frees e. */
    for (struct lconn *e = st->conns, *next; e != NULL; e = next) {
        next = e->next;
        p11n_close(e->conn);
    }
    long long end = cli_now_ms() + CLI_STOP_GRACE_MS;
    while (st->nconns > 0 && cli_now_ms() < end)
        if (p11n_run_once(ctx, 100) == P11N_ERR_IO)
            break;
    cli_log_event(P11N_LOG_INFO, "stop", "listen: stopped: %zu connection%s closed%s", n,
        n == 1 ? "" : "s", st->nconns ? ", the rest cut at the deadline" : " gracefully");
}

static int same(const char *x, const char *y)
{
    return x == y || (x != NULL && y != NULL && strcmp(x, y) == 0);
}

/* SIGHUP with --config: the file is read again, with the command line
 * (which still wins). A running listener takes the peers file, the log
 * level, the log form and the control socket; the rest is named as
 * waiting for a restart. A file that does not parse changes nothing. */
static void reread_config(struct net_args *a, p11n_ctx *ctx, struct cli_control **control)
{
    if (!a->has_config)
        return;
    struct net_args b;
    char host[256];
    uint16_t port;
    if (parse_cmd(a->argc0, a->argv0, 1, &b, host, sizeof(host), &port) >= 0) {
        cli_log_event(P11N_LOG_ERROR, "reload", "listen: the configuration file is not "
            "applied: keeping the one in use");
        return;
    }
    a->peers_file = b.peers_file;
    cli_control_reload(control, ctx, "listen", b.control);
    a->control = b.control;
    cli_log_init(b.verbose);
    if (b.log_format != NULL)
        cli_log_format = cli_log_format_parse(b.log_format);
    if (b.lim.log_level != 0 && !b.verbose)
        cli_log_level = b.lim.log_level;
    struct cli_limits was = a->lim, now = b.lim;
    was.log_level = now.log_level = 0;
    const struct {
        const char *name;
        int differs;
    } later[] = {
        { "key", !same(a->key, b.key) }, { "bind", !same(a->addr, b.addr) },
        { "pattern", !same(a->pattern, b.pattern) },
        { "prologue", !same(a->prologue, b.prologue) },
        { "peer", a->nlisten_peers != b.nlisten_peers },
        { "echo, raw or show_peer", a->echo != b.echo || a->raw != b.raw
            || a->show_peer != b.show_peer },
        { "a limit", memcmp(&was, &now, sizeof(was)) != 0 },
    };
    for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++)
        if (later[i].differs)
            cli_log_event(P11N_LOG_WARN, "reload", "listen: %s changed in the configuration "
                "file: takes effect at the next start", later[i].name);
}

/* Run until SIGTERM or SIGINT, reloading on SIGHUP. Returns the exit
 * status. */
static int listen_run(struct net_args *a, p11n_ctx *ctx, p11n_listener *l,
    struct listen_state *st, struct cli_control **control)
{
    cli_service_signals(ctx);
    cli_notify_ready(0);
    for (;;) {
        int rc = p11n_run(ctx);
        if (rc != P11N_OK) {
            cli_error("listen: %s", p11n_strerror(rc));
            return cli_exit_status(rc);
        }
        int sig = cli_service_signal();
        if (sig == CLI_SIG_STOP)
            break;
        if (sig == CLI_SIG_RELOAD) {
            reread_config(a, ctx, control);
            (void)cli_service_reload("listen", ctx, a->key, a->peers_file);
            cli_notify_ready(st->nconns);
        }
    }
    listen_stop(ctx, l, st);
    return 0;
}

int cmd_listen(int argc, char **argv)
{
    struct net_args a;
    char host[256];
    uint16_t port;
    int rc = parse_cmd(argc, argv, 1, &a, host, sizeof(host), &port);
    if (rc >= 0) {
        cli_config_free();
        return rc;
    }
    p11n_ctx *ctx = NULL;
    p11n_key *key = NULL;
    p11n_listener *l = NULL;
    struct cli_control *control = NULL;
    int status = setup(&a, "listen", &ctx, &key);
    if (status != 0)
        goto out;
    struct listen_state st = { .raw = a.raw, .show_peer = a.show_peer, .echo = a.echo };
    p11n_callbacks cb = { .established = l_established, .message = l_message,
        .writable = l_writable, .closed = l_closed, .arg = &st };
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch = channel_options(&a, key, cb);
    lo.peers = a.listen_peers;
    lo.npeers = a.nlisten_peers;
    if ((status = cli_listen(ctx, "listen", host, port, a.addr, &lo, &l)) != 0)
        goto out;
    if (a.control != NULL && (control = cli_control_open(ctx, "listen", a.control)) == NULL) {
        status = CLI_EXIT_USAGE;
        goto out;
    }
    status = listen_run(&a, ctx, l, &st, &control);
out:
    cli_control_stop(control);
    p11n_ctx_free(ctx);
    cli_control_free(control);
    p11n_key_free(key);
    cli_peers_free();
    cli_config_free();
    return status;
}

/* ---- connect ---- */

struct connect_state {
    p11n_ctx *ctx;
    p11n_conn *conn;
    int up;              /* established */
    int done;            /* final close seen */
    int reason;
    char text[256];
    int stdin_eof;
    int blocked;         /* p11n_send said WOULD_BLOCK */
    int closing;
    unsigned long sent, received;
    uint64_t quiet_since_ms; /* when a line last went out or a message came */
    long linger_ms;      /* --linger */
    char *line;          /* stdin bytes not yet sent (no newline yet) */
    size_t len, cap;
};

static uint64_t now_ms(void)
{
    return (uint64_t)cli_now_ms();
}

/* Whether to close the channel now: input has ended, every line went
 * out, and either as many messages came back as were sent (an echo) or
 * the peer has been silent for the linger time. A peer that does not echo
 * gets that long to answer. Otherwise *timeout (ms, -1: none) is lowered
 * to when the silence will have lasted long enough. */
static int time_to_close(const struct connect_state *st, int *timeout)
{
    if (!st->up || st->conn == NULL || st->closing || !st->stdin_eof || st->len != 0)
        return 0;
    if (st->received >= st->sent)
        return 1;
    uint64_t now = now_ms(), end = st->quiet_since_ms + (uint64_t)st->linger_ms;
    if (now >= end)
        return 1;
    if (*timeout < 0 || (uint64_t)*timeout > end - now)
        *timeout = (int)(end - now);
    return 0;
}

static void c_established(p11n_conn *c, const char *peer, void *arg)
{
    struct connect_state *st = arg;
    (void)c;
    (void)peer;
    st->up = 1;
}

static void c_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    struct connect_state *st = arg;
    (void)c;
    fwrite(msg, 1, len, stdout);
    fputc('\n', stdout);
    st->received++;
    st->quiet_since_ms = now_ms();
}

static void c_writable(p11n_conn *c, void *arg)
{
    struct connect_state *st = arg;
    (void)c;
    st->blocked = 0;
}

static void c_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    struct connect_state *st = arg;
    (void)c;
    if (!final)
        return;
    st->done = 1;
    st->conn = NULL;
    st->reason = reason;
    snprintf(st->text, sizeof(st->text), "%s", text);
}

/* The key we expect `peer` to hold, in hex (67 bytes), or "" when it is
 * not known: `peer` itself when given in hex, else its key in the store
 * (from the peers file or the key's token, as the connection used it). */
static void expected_key(p11n_ctx *ctx, const char *peer, char hex[2 * P11N_PUBKEY_LEN + 1])
{
    hex[0] = '\0';
    uint8_t pub[P11N_PUBKEY_LEN];
    if (strlen(peer) == 2 * P11N_PUBKEY_LEN
        && strspn(peer, "0123456789abcdefABCDEF") == 2 * P11N_PUBKEY_LEN)
        memcpy(hex, peer, 2 * P11N_PUBKEY_LEN + 1);
    else if (p11n_peer_key(ctx, peer, pub) == P11N_OK)
        for (size_t k = 0; k < P11N_PUBKEY_LEN; k++)
            snprintf(hex + 2 * k, 3, "%02x", pub[k]);
}

/* A KK initiator whose handshake ends with the responder hanging up after
 * act 1, or with an act 2 that does not decrypt, cannot tell why: the
 * responder does not know our key, its own key is not the one we have,
 * or the pattern or prologue differ. Say so, rather than "closed by peer",
 * and name the key expected. Returns 1 if that was the case. */
static int report_rejected(const struct net_args *a, const struct connect_state *st)
{
    int kk = a->pattern == NULL || strcmp(a->pattern, "KK") == 0;
    if (st->up || !kk || (st->reason != P11N_ERR_CLOSED && st->reason != P11N_ERR_RESET
        && st->reason != P11N_ERR_BAD_TAG))
        return 0;
    char hex[2 * P11N_PUBKEY_LEN + 1], shown[CLI_SHOWN_MAX];
    expected_key(st->ctx, a->peer, hex);
    cli_error("connect: the responder rejected us or is not the key we know as %s (our key "
        "not in its ceremony, its key changed, or pattern/prologue differ)%s%s; it %s",
        cli_shown(a->peer, shown), hex[0] ? "; expected key " : "", hex,
        st->reason == P11N_ERR_BAD_TAG ? "answered with an act 2 that does not decrypt"
                                       : "hung up during the handshake");
    return 1;
}

/* Send every complete line in the buffer. Returns 0, or 1 after an error
 * that ends the command. */
static int send_lines(struct connect_state *st)
{
    if (st->len == 0)
        return 0;
    size_t off = 0;
    while (!st->blocked) {
        char *nl = memchr(st->line + off, '\n', st->len - off);
        size_t n;
        if (nl != NULL)
            n = (size_t)(nl - (st->line + off));
        else if (st->stdin_eof && st->len > off)
            n = st->len - off; /* a last line without newline */
        else
            break;
        int rc = p11n_send(st->conn, (const uint8_t *)st->line + off, n);
        if (rc == P11N_ERR_WOULD_BLOCK) {
            st->blocked = 1;
            break;
        }
        if (rc != P11N_OK) {
            cli_error("connect: cannot send a line of %zu bytes: %s", n, p11n_strerror(rc));
            return 1;
        }
        st->sent++;
        st->quiet_since_ms = now_ms();
        off += n + (nl != NULL);
    }
    memmove(st->line, st->line + off, st->len - off);
    st->len -= off;
    return 0;
}

static int read_stdin(struct connect_state *st)
{
    if (st->cap - st->len < 4096) {
        size_t cap = st->cap ? st->cap * 2 : 65536;
        /* A line longer than a message can never be sent. */
        if (cap > 4 * (P11N_MAX_MESSAGE + 1) && st->len > P11N_MAX_MESSAGE) {
            cli_error("connect: an input line is longer than %d bytes", P11N_MAX_MESSAGE);
            return 1;
        }
        char *b = realloc(st->line, cap);
        if (b == NULL) {
            cli_error("connect: out of memory");
            return 1;
        }
        st->line = b;
        st->cap = cap;
    }
    ssize_t n = read(STDIN_FILENO, st->line + st->len, st->cap - st->len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0) {
        st->stdin_eof = 1;
        return 0;
    }
    st->len += (size_t)n;
    return 0;
}

/* The context's poll set into *fds, grown as needed, with one spare slot
 * after the *n entries for standard input. Returns 0, or 1 after printing. */
static int loop_fds(p11n_ctx *ctx, struct pollfd **fds, size_t *cap, size_t *n, int *timeout)
{
    while (*fds == NULL
        || p11n_poll_fds(ctx, *fds, *cap, n, timeout) == P11N_ERR_BUFFER_TOO_SMALL) {
        struct pollfd *f = realloc(*fds, (*n + 8 + 1) * sizeof(*f));
        if (f == NULL) {
            cli_error("connect: out of memory");
            return 1;
        }
        *fds = f;
        *cap = *n + 8;
    }
    return 0;
}

int cmd_connect(int argc, char **argv)
{
    struct net_args a;
    char host[256];
    uint16_t port;
    int rc = parse_cmd(argc, argv, 0, &a, host, sizeof(host), &port);
    if (rc >= 0) {
        cli_config_free();
        return rc;
    }
    struct connect_state st;
    memset(&st, 0, sizeof(st));
    st.linger_ms = a.linger_ms;
    p11n_key *key = NULL;
    int status = setup(&a, "connect", &st.ctx, &key);
    if (status != 0)
        goto out;
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch = channel_options(&a, key, (p11n_callbacks){ .established = c_established,
        .message = c_message, .writable = c_writable, .closed = c_closed, .arg = &st });
    co.socks5 = a.socks5;
    rc = p11n_connect(st.ctx, host, port, a.peer, &co, &st.conn);
    if (rc != P11N_OK && a.socks5 != NULL
        && (rc == P11N_ERR_INVALID_ARG || rc == P11N_ERR_SOCKS_CREDENTIALS)) {
        /* Never echo the proxy argument: it may hold a password. */
        cli_error("connect: --socks5 wants [USER:PASS@]HOST:PORT: %s", p11n_strerror(rc));
        status = 2;
        goto out;
    }
    if (rc != P11N_OK) {
        char shown[CLI_SHOWN_MAX];
        cli_error("connect: peer %s: %s", cli_shown(a.peer, shown), p11n_strerror(rc));
        status = cli_exit_status(rc);
        goto out;
    }
    cli_catch_signals(st.ctx);

    struct pollfd *fds = NULL;
    size_t cap = 0;
    while (!st.done) {
        /* Stdin is read only while the channel can take lines. */
        int want_stdin = st.up && !st.stdin_eof && !st.blocked && !st.closing;
        size_t n = 0;
        int timeout = -1;
        if (loop_fds(st.ctx, &fds, &cap, &n, &timeout) != 0) {
            status = 1;
            break;
        }
        /* The final `closed` may come while the queue is written. */
        if (st.done)
            break;
        if (time_to_close(&st, &timeout))
            timeout = 0;
        fds[n] = (struct pollfd){ .fd = want_stdin ? STDIN_FILENO : -1, .events = POLLIN };
        if (poll(fds, n + 1, timeout) < 0 && errno != EINTR) {
            cli_error("connect: poll: %s", strerror(errno));
            status = 1;
            break;
        }
        rc = p11n_process(st.ctx, fds, n);
        if (rc == P11N_ERR_SHUTDOWN) {
            cli_error("connect: interrupted");
            status = 1;
            break;
        }
        if (st.done)
            break;
        if (want_stdin && (fds[n].revents & (POLLIN | POLLHUP)) && read_stdin(&st) != 0) {
            status = 1;
            break;
        }
        if (st.up && st.conn != NULL && !st.closing && send_lines(&st) != 0) {
            status = 1;
            break;
        }
        fflush(stdout);
        int ignored = -1;
        if (time_to_close(&st, &ignored)) {
            st.closing = 1;
            p11n_close(st.conn);
        }
    }
    fflush(stdout);
    if (status == 0 && st.reason != P11N_OK && report_rejected(&a, &st)) {
        status = CLI_EXIT_PEER;
    } else if (status == 0 && st.reason != P11N_OK) {
        cli_error("connect: %s (%s)%s", st.text, p11n_strerror(st.reason),
            st.reason == P11N_ERR_LIMIT ? "; the limit named is raised by its option or "
            "--config key (p11noise(1), LIMITS)" : "");
        status = cli_exit_status(st.reason);
    }
    free(fds);
out:
    p11n_ctx_free(st.ctx);
    p11n_key_free(key);
    cli_peers_free();
    free(st.line);
    return status;
}
