/*
 * Peers from a ceremony file, loaded at start and again on reload: the
 * file is parsed and checked whole before the store changes, then only
 * the difference is applied, so a reload revokes exactly the peers that
 * left or changed key (p11n_peer_remove closes their connections) and
 * leaves the others' connections alone.
 *
 * A line the library refuses is named with what is wrong with it, as the
 * library's parser says (p11n_peers_parse_why).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_net.h"

/* The entries the store holds from the file (none before the first load). */
static p11n_peer_entry *kept;
static size_t nkept;

static const p11n_peer_entry *find(const p11n_peer_entry *e, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].id, id) == 0)
            return &e[i];
    return NULL;
}

/* Checks the library's parser does not make: one key under two names. */
static int check_keys(const char *text, size_t len, const p11n_peer_entry *e, size_t n,
    char *why, size_t cap)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (memcmp(e[i].pub, e[j].pub, P11N_PUBKEY_LEN) == 0) {
                snprintf(why, cap, "line %zu: the key of line %zu again (%s)",
                    p11n_peers_line(text, len, i), p11n_peers_line(text, len, j),
                    p11n_strerror(P11N_ERR_DUPLICATE_KEY));
                return P11N_ERR_DUPLICATE_KEY;
            }
    return P11N_OK;
}

/* Parse and check the whole file. Returns 0 with the entries, or an exit
 * status with `why`. */
static int read_file(const char *path, p11n_peer_entry **e, size_t *n, char *why, size_t cap)
{
    size_t len = 0, bad = 0;
    char *text = cli_slurp(path, &len);
    if (text == NULL) {
        snprintf(why, cap, "%s", strerror(errno));
        return CLI_EXIT_USAGE;
    }
    char detail[160];
    int rc = p11n_peers_parse_why(text, len, e, n, &bad, detail, sizeof(detail));
    if (rc != P11N_OK) {
        snprintf(why, cap, "line %zu: %s: %s", bad, p11n_strerror(rc), detail);
    } else {
        rc = check_keys(text, len, *e, *n, why, cap);
    }
    free(text);
    if (rc != P11N_OK) {
        free(*e);
        *e = NULL;
        return cli_exit_status(rc);
    }
    return 0;
}

int cli_peers_file_apply(p11n_ctx *ctx, const char *path, struct cli_peers_diff *d, char *why,
    size_t cap)
{
    p11n_peer_entry *e = NULL;
    size_t n = 0;
    memset(d, 0, sizeof(*d));
    int status = read_file(path, &e, &n, why, cap);
    if (status != 0)
        return status;
    /* A peer that changed key is removed and added again rather than
     * replaced, so two peers may swap keys in one reload. */
    for (size_t i = 0; i < nkept; i++) {
        const p11n_peer_entry *now = find(e, n, kept[i].id);
        if (now != NULL && memcmp(now->pub, kept[i].pub, P11N_PUBKEY_LEN) == 0)
            continue;
        (void)p11n_peer_remove(ctx, kept[i].id);
        now != NULL ? d->changed++ : d->removed++;
    }
    for (size_t i = 0; i < n; i++) {
        const p11n_peer_entry *was = find(kept, nkept, e[i].id);
        if (was != NULL && memcmp(was->pub, e[i].pub, P11N_PUBKEY_LEN) == 0)
            continue;
        int rc = p11n_ceremony_input(ctx, e[i].pub, e[i].id, 0);
        if (rc != P11N_OK) {
            /* Only NOMEM is left once the file passed its checks. */
            snprintf(why, cap, "adding peer %s: %s", e[i].id, p11n_strerror(rc));
            free(e);
            return cli_exit_status(rc);
        }
        d->added += was == NULL;
    }
    free(kept);
    kept = e;
    nkept = d->total = n;
    return 0;
}

void cli_peers_free(void)
{
    free(kept);
    kept = NULL;
    nkept = 0;
}
