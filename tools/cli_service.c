/*
 * What `listen` and `tunnel` do as a long-running service: signals,
 * reloading the ceremony, and telling systemd the state.
 *
 * Signal handlers only set a flag and call p11n_stop() (both
 * async-signal-safe); the loop returns, and the command acts on the flag
 * between two turns of its loop, where any call is allowed:
 *   SIGHUP           reload the peers (the token's ceremony, or --peers FILE)
 *   SIGTERM, SIGINT  stop accepting, close every connection gracefully
 *                    within CLI_STOP_GRACE_MS, exit 0
 */
#include "config.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cli.h"
#include "cli_net.h"

static p11n_ctx *signal_ctx;
static volatile sig_atomic_t want_reload, want_stop;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        want_reload = 1;
    else
        want_stop = 1;
    p11n_stop(signal_ctx);
}

void cli_service_signals(p11n_ctx *ctx)
{
    signal_ctx = ctx;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int cli_service_signal(void)
{
    if (want_stop)
        return CLI_SIG_STOP;
    if (want_reload) {
        want_reload = 0;
        return CLI_SIG_RELOAD;
    }
    return CLI_SIG_NONE;
}

void cli_notify(const char *fmt, ...)
{
#ifdef HAVE_SYSTEMD
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    (void)sd_notify(0, msg);
#else
    (void)fmt;
#endif
}

void cli_notify_ready(size_t nconns)
{
    cli_notify("READY=1\nSTATUS=%zu connection%s", nconns, nconns == 1 ? "" : "s");
}

static unsigned long long monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
}

int cli_service_reload(const char *cmd, p11n_ctx *ctx, const char *key_uri,
    const char *peers_file)
{
    cli_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the peers", monotonic_usec());
    char shown[CLI_SHOWN_MAX], why[256];
    int ok;
    if (peers_file != NULL) {
        struct cli_peers_diff d;
        ok = cli_peers_file_apply(ctx, peers_file, &d, why, sizeof(why)) == 0;
        if (ok)
            cli_log_event(P11N_LOG_INFO, "reload", "%s: reloaded peers file %s: %zu peers "
                "(%zu added, %zu removed, %zu changed key)", cmd, cli_shown(peers_file, shown),
                d.total, d.added, d.removed, d.changed);
        else
            cli_log_event(P11N_LOG_ERROR, "reload", "%s: reload failed, keeping the peers "
                "in use: peers file %s: %s", cmd, cli_shown(peers_file, shown), why);
    } else if (strncmp(key_uri, "pkcs11:", 7) == 0) {
        int rc = p11n_peers_load_token(ctx, key_uri);
        ok = rc >= 0;
        if (ok) {
            cli_log_event(P11N_LOG_INFO, "reload", "%s: reloaded the ceremony of the key's "
                "token: %d peers", cmd, rc);
        } else {
            const char *detail = p11n_token_last_error();
            cli_log_event(P11N_LOG_ERROR, "reload", "%s: reload failed, keeping the peers in "
                "use: the ceremony of the key's token: %s%s%s", cmd, p11n_strerror(rc),
                detail[0] ? " — " : "", detail);
        }
    } else {
        ok = 1;
        cli_log_event(P11N_LOG_INFO, "reload", "%s: reload: no peers file and no token: "
            "nothing to reload", cmd);
    }
    return ok ? 0 : -1;
}
