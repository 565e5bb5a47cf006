/*
 * Peers from a ceremony file, loaded at start and again on reload: the
 * file is parsed and checked whole before the store changes, then only
 * the difference is applied, so a reload revokes exactly the peers that
 * left or changed key (p11n_peer_remove closes their connections) and
 * leaves the others' connections alone.
 *
 * A line the library refuses is looked at again here to say what is
 * wrong with it: the library reports the line and a class of error only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_net.h"

#define HEX_LEN (2 * P11N_PUBKEY_LEN)

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

/* What is wrong with the key field `k` (n bytes), or NULL. */
static const char *key_why(const char *k, size_t n, char *buf, size_t cap)
{
    size_t bad = strspn(k, "0123456789abcdefABCDEF");
    if (bad < n) {
        unsigned char c = (unsigned char)k[bad];
        if (c >= 0x21 && c < 0x7f)
            snprintf(buf, cap, "bad character '%c' in the key (hex digits only)", c);
        else
            snprintf(buf, cap, "bad byte 0x%02x in the key (hex digits only)", c);
    } else if (n == 2 * HEX_LEN - 2 && k[0] == '0' && k[1] == '4') {
        snprintf(buf, cap, "uncompressed key (%zu hex digits): give the %d-digit compressed "
            "form, 02 or 03 and the x coordinate", n, HEX_LEN);
    } else if (n != HEX_LEN) {
        snprintf(buf, cap, "wrong length: the key has %zu hex digits, not %d", n, HEX_LEN);
    } else if (k[0] != '0' || (k[1] != '2' && k[1] != '3')) {
        snprintf(buf, cap, "the key does not start with 02 or 03 (not a compressed point)");
    } else {
        snprintf(buf, cap, "the key is not a point of secp256k1");
    }
    return buf;
}

const char *cli_ceremony_line_why(const char *text, size_t len, size_t line, char *buf,
    size_t cap)
{
    const char *p = text, *end = text + len;
    for (size_t l = 1; l < line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        p = nl ? nl + 1 : end;
    }
    if (line == 1 && end - p >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        return "the file starts with a byte order mark (save it as UTF-8 without BOM)";
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    char row[512];
    size_t n = (size_t)((nl ? nl : end) - p);
    if (n >= sizeof(row))
        return "line too long";
    memcpy(row, p, n);
    row[n] = '\0';
    char *hash = strchr(row, '#');
    if (hash != NULL)
        *hash = '\0';
    char *save = NULL, *id = strtok_r(row, " \t\r", &save);
    char *key = id ? strtok_r(NULL, " \t\r", &save) : NULL;
    char *extra = key ? strtok_r(NULL, " \t\r", &save) : NULL;
    if (key == NULL)
        return "IDENTIFIER PUBHEX expected: one field only";
    if (extra != NULL)
        return "extra field after the key";
    if (!p11n_identifier_valid(id))
        return "the identifier is not 1-64 characters of A-Z a-z 0-9 . _ -";
    return key_why(key, strlen(key), buf, cap);
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
    int rc = p11n_peers_parse(text, len, e, n, &bad);
    if (rc != P11N_OK) {
        char detail[160];
        snprintf(why, cap, "line %zu: %s: %s", bad, p11n_strerror(rc),
            cli_ceremony_line_why(text, len, bad, detail, sizeof(detail)));
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
