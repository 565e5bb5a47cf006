/* Command-line helpers shared by the commands that run a context. */
#include "cli_net.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cli_split_host_port(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *start = s, *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        start = s + 1;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || strchr(s, ':') != colon)
            return -1; /* a bare IPv6 address needs brackets */
    }
    size_t hlen = (size_t)(colon - start) - (s[0] == '[');
    if (hlen == 0 || hlen >= cap)
        return -1;
    memcpy(host, start, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || p > 65535)
        return -1;
    *port = (uint16_t)p;
    return 0;
}

static p11n_ctx *signal_ctx;

static void on_signal(int sig)
{
    (void)sig;
    p11n_stop(signal_ctx);  /* async-signal-safe */
}

void cli_catch_signals(p11n_ctx *ctx)
{
    signal_ctx = ctx;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* The key, and its warning if the library has one. Returns 0 or an exit
 * status after printing. */
static int load_key(const char *cmd, const char *key_uri, unsigned key_flags, p11n_key **key)
{
    int rc = p11n_key_load_ex(key_uri, key_flags, key);
    if (rc != P11N_OK) {
        const char *detail = p11n_token_last_error();
        /* The URI may hold a PIN: never echo it. */
        cli_error("%s: cannot load the key: %s%s%s%s", cmd, p11n_strerror(rc),
            detail[0] ? " — " : "", detail, rc == P11N_ERR_KEY_EXTRACTABLE
            ? " (--dev-allow-extractable-key accepts it, for development only)" : "");
        return cli_exit_status(rc);
    }
    if (p11n_key_warning(*key) != NULL)
        cli_warning("%s", p11n_key_warning(*key));
    return 0;
}

int cli_net_setup(const char *cmd, const p11n_ctx_options *o, const char *key_uri,
    unsigned key_flags, const char *peers_file, p11n_ctx **ctx, p11n_key **key)
{
    int rc = p11n_ctx_new(o, ctx);
    if (rc != P11N_OK) {
        cli_error("%s: %s", cmd, p11n_strerror(rc));
        return cli_exit_status(rc);
    }
    if ((rc = load_key(cmd, key_uri, key_flags, key)) != 0)
        return rc;
    if (peers_file != NULL) {
        /* Checked here first for the system's own reason (the library
         * reports any failure to open as IO) and because the library logs
         * the path, which might be a key URI given to the wrong option. */
        char shown[CLI_SHOWN_MAX];
        if (access(peers_file, R_OK) != 0) {
            const char *why = strerror(errno);
            cli_error("%s: peers file %s: %s", cmd, cli_shown(peers_file, shown), why);
            return CLI_EXIT_USAGE;
        }
        struct cli_peers_diff d;
        char why[256];
        if ((rc = cli_peers_file_apply(*ctx, peers_file, &d, why, sizeof(why))) != 0) {
            cli_error("%s: peers file %s: %s", cmd, cli_shown(peers_file, shown), why);
            return rc;
        }
    } else if (strncmp(key_uri, "pkcs11:", 7) == 0) {
        rc = p11n_peers_load_token(*ctx, key_uri);
        if (rc < 0) {
            const char *detail = p11n_token_last_error();
            cli_error("%s: reading the ceremony objects of the key's token: %s%s%s", cmd,
                p11n_strerror(rc), detail[0] ? " — " : "", detail);
            return cli_exit_status(rc);
        }
    }
    return 0;
}

int cli_listen_failed(const char *cmd, const char *addr, int rc)
{
    /* Every limit p11n_listen has is set by the command line. */
    static const struct {
        int err;
        int status;
        const char *hint;
    } hints[] = {
        { P11N_ERR_INVALID_ARG, CLI_EXIT_USAGE, " (numeric address, and KK needs a known peer)" },
        { P11N_ERR_LIMIT, CLI_EXIT_USAGE, " (a KK listener tries at most "
            CLI_STR(P11N_MAX_KK_CANDIDATES) " initiator keys per handshake: name at most "
            "that many with --peer, or use --pattern XK)" },
    };
    const char *hint = "";
    int status = cli_exit_status(rc);
    for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++)
        if (hints[i].err == rc) {
            hint = hints[i].hint;
            status = hints[i].status;
        }
    char shown[CLI_SHOWN_MAX];
    cli_error("%s: cannot listen on %s: %s%s", cmd, cli_shown(addr, shown), p11n_strerror(rc),
        hint);
    return status;
}
