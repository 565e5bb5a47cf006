/*
 * Exit status by class of failure, so that a supervisor can tell a wrong
 * PIN (never to be retried: a restart loop would lock the token) from a
 * refused connection (worth retrying). One table maps the library's error
 * groups to the classes; doc/p11noise.1 lists the same classes.
 */
#include <stddef.h>

#include "cli.h"
#include "p11noise.h"

/* Rows are tried in order: single errors that leave their group come
 * before the group's range. */
static const struct {
    int first, last;              /* p11n_err values, first >= last */
    int status;
} classes[] = {
    { P11N_OK, P11N_OK, CLI_EXIT_OK },
    /* Text the user gave: an address, a pattern, a peers file. */
    { P11N_ERR_INVALID_ARG, P11N_ERR_INVALID_ARG, CLI_EXIT_USAGE },
    { P11N_ERR_UNSUPPORTED, P11N_ERR_UNSUPPORTED, CLI_EXIT_USAGE },
    { P11N_ERR_PARSE, P11N_ERR_PARSE, CLI_EXIT_USAGE },
    { P11N_ERR_SOCKS_CREDENTIALS, P11N_ERR_SOCKS_CREDENTIALS, CLI_EXIT_USAGE },
    { P11N_ERR_EXISTS, P11N_ERR_PUBKEY_MISMATCH, CLI_EXIT_USAGE },
    { P11N_ERR_DUPLICATE_KEY, P11N_ERR_DUPLICATE_KEY, CLI_EXIT_USAGE },
    /* The key itself: its file, its token, its PIN. */
    { P11N_ERR_BAD_PRIVKEY, P11N_ERR_BAD_PRIVKEY, CLI_EXIT_TOKEN },
    { P11N_ERR_FILE_MODE, P11N_ERR_FILE_MODE, CLI_EXIT_TOKEN },
    { P11N_ERR_URI, P11N_ERR_KEY_EXTRACTABLE, CLI_EXIT_TOKEN },
    /* The peer: a handshake that failed, a key not in the ceremony. */
    { P11N_ERR_REVOKED, P11N_ERR_REVOKED, CLI_EXIT_PEER },
    { P11N_ERR_SHORT_MESSAGE, P11N_ERR_UNKNOWN_PEER, CLI_EXIT_PEER },
    /* The way there: sockets, names, deadlines, the proxy. */
    { P11N_ERR_IO, P11N_ERR_LIMIT, CLI_EXIT_NETWORK },
    { P11N_ERR_SOCKS_UNREACHABLE, P11N_ERR_SOCKS_REPLY, CLI_EXIT_NETWORK },
};

int cli_exit_status(int err)
{
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (err <= classes[i].first && err >= classes[i].last)
            return classes[i].status;
    return CLI_EXIT_INTERNAL;
}
