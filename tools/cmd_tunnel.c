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
#include "cli_control.h"
#include "cli_net.h"
#include "tunnel.h"

/* ---- setup ---- */

static int setup(struct tunnel *t, const char *cmd)
{
    cli_log_init(t->a.verbose);
    if (t->a.log_format != NULL)
        cli_log_format = cli_log_format_parse(t->a.log_format);
    if (t->lim.log_level != 0 && !t->a.verbose)
        cli_log_level = t->lim.log_level;
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    cli_limits_apply(&t->lim, &o);
    o.log_record = cli_log_record;
    o.log_level = cli_log_level;
    return cli_net_setup(cmd, &o, t->a.key, 0, t->a.peers_file, &t->ctx, &t->key);
}

/* ---- the loop ---- */

long long tun_now_ms(void)
{
    return cli_now_ms();
}

static size_t count_conns(const struct tunnel *t)
{
    size_t n = 0;
    for (const struct tun *c = t->conns; c != NULL; c = c->next)
        n += !c->dead;
    return n;
}

/* SIGTERM or SIGINT: stop accepting and close every tunnelled connection
 * (the channel gracefully); the loop then runs until they are gone or
 * the deadline has passed. */
static void begin_stop(struct tunnel *t, const char *cmd)
{
    cli_notify("STOPPING=1");
    t->stop_count = count_conns(t);
    t->stop_deadline_ms = tun_now_ms() + CLI_STOP_GRACE_MS;
    if (t->l != NULL) {
        p11n_listener_close(t->l);
        t->l = NULL;
    }
    if (t->lfd >= 0) {
        close(t->lfd);
        t->lfd = -1;
        if (t->listen_addr.is_unix)
            unlink(t->listen_addr.host);
    }
    for (struct tun *c = t->conns; c != NULL; c = c->next)
        tun_abort(c, "%s stopping", cmd);
}

/* SIGHUP with --config: the file is read again, with the command line
 * (which still wins). A running tunnel takes the peers file, the log
 * level, the log form and the control socket; other changes wait for a
 * restart. A file that does not parse changes nothing. */
static void reread_config(struct tunnel *t, const char *cmd)
{
    if (!t->has_config)
        return;
    struct tunnel *n = calloc(1, sizeof(*n));
    int argc = t->argc0;
    char **argv = t->argv0;
    int rc = n == NULL ? CLI_EXIT_INTERNAL : 0;
    if (rc == 0) {
        n->a.server = t->a.server;
        rc = tun_config(&argc, &argv, n);
    }
    if (rc == 0)
        rc = tun_parse_args(argc, argv, n);
    if (rc != 0) {
        cli_log_event(P11N_LOG_ERROR, "reload", "%s: the configuration file is not applied: "
            "keeping the one in use", cmd);
        free(n);
        return;
    }
    t->a.peers_file = n->a.peers_file;
    cli_control_reload(&t->control, t->ctx, cmd, n->a.control);
    t->a.control = n->a.control;
    cli_log_init(n->a.verbose);
    if (n->a.log_format != NULL)
        cli_log_format = cli_log_format_parse(n->a.log_format);
    if (n->lim.log_level != 0 && !n->a.verbose)
        cli_log_level = n->lim.log_level;
    free(n);
}

/* A signal made the loop return: reload, or begin the stop. */
static void on_signal(struct tunnel *t, const char *cmd)
{
    int sig = cli_service_signal();
    if (sig == CLI_SIG_RELOAD && t->stop_deadline_ms == 0) {
        reread_config(t, cmd);
        (void)cli_service_reload(cmd, t->ctx, t->a.key, t->a.peers_file);
        cli_notify_ready(count_conns(t));
    }
    if (sig == CLI_SIG_STOP && t->stop_deadline_ms == 0)
        begin_stop(t, cmd);
}

/* Stopping, and every connection is gone or the deadline has passed. */
static int stopped(const struct tunnel *t, const char *cmd, int *timeout)
{
    if (t->stop_deadline_ms == 0)
        return 0;
    long long left = t->stop_deadline_ms - tun_now_ms();
    size_t n = count_conns(t);
    if (n > 0 && left > 0) {
        if (*timeout < 0 || *timeout > left)
            *timeout = (int)left;
        return 0;
    }
    cli_log_event(P11N_LOG_INFO, "stop", "%s: stopped: %zu connection%s closed%s", cmd,
        t->stop_count, t->stop_count == 1 ? "" : "s",
        n ? ", the rest cut at the deadline" : " gracefully");
    return 1;
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
        if (stopped(t, cmd, &timeout))
            break;
        if (poll(ps.fds, ps.n, timeout) < 0 && errno != EINTR) {
            cli_error("%s: poll: %s", cmd, strerror(errno));
            status = 1;
            break;
        }
        int rc = p11n_process(t->ctx, ps.fds, ps.nctx);
        if (rc == P11N_ERR_SHUTDOWN) {
            on_signal(t, cmd);
            rc = P11N_OK;
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
    cli_control_stop(t->control);
    p11n_ctx_free(t->ctx);  /* no callback runs: the connections are ours to close */
    cli_control_free(t->control);
    t->control = NULL;
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
    int targc = argc - 1;
    char **targv = argv + 1;
    t.argc0 = targc;
    t.argv0 = targv;
    int status = tun_config(&targc, &targv, &t);
    t.has_config = targv != t.argv0;
    if (status == 0)
        status = tun_parse_args(targc, targv, &t);
    if (status != 0) {
        cli_config_free();
        return status < 0 ? 0 : status;
    }
    status = setup(&t, cmd);
    if (status == 0)
        status = t.a.server ? tun_server_start(&t) : tun_client_start(&t);
    if (status == 0) {
        cli_service_signals(t.ctx);
        cli_notify_ready(0);
        status = run(&t, cmd);
    }
    teardown(&t);
    cli_peers_free();
    cli_config_free();
    return status;
}
