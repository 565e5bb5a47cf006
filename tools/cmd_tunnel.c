/*
 * p11noise tunnel server|client: logging, setup, and the poll() loop that
 * runs the context beside the plain sockets.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_net.h"
#include "tunnel.h"

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

/* ---- setup ---- */

static int setup(struct tunnel *t, const char *cmd)
{
    tun_log_level = t->a.verbose ? P11N_LOG_DEBUG : P11N_LOG_INFO;
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
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
    long long now = tun_now_ms();
    for (struct tun *c = t->conns; c != NULL; c = c->next) {
        short ev = tun_events(c);
        if (c->connecting && !c->dead) {
            long long left = c->deadline_ms > now ? c->deadline_ms - now : 0;
            if (*timeout < 0 || *timeout > left)
                *timeout = (int)left;
        }
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
        long long now = tun_now_ms();
        for (size_t i = ps.nctx + 1; i < ps.n; i++) {
            struct tun *c = ps.who[i];
            /* A callback may have closed it or reused the fd number. */
            if (ps.fds[i].revents != 0 && !c->dead && c->fd == ps.fds[i].fd)
                tun_ready(c, ps.fds[i].revents);
            else if (c->connecting && !c->dead && now >= c->deadline_ms)
                tun_target_timeout(c);
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
            tun_usage();
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
    int status = tun_parse_args(argc - 1, argv + 1, &t);
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
