/*
 * The context's peer store: identifier -> static public key, filled by the
 * ceremony (by hand, from a peers file, or from a token's ceremony
 * objects). A deployment has a handful of machines, so a flat array with
 * linear lookups is the right size; lookups happen once per handshake.
 */
#include "net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "log.h"
#include "secure.h"

/* A peers file larger than this is not a ceremony file. */
#define MAX_PEERS_FILE (1024 * 1024)

const p11n_peer_entry *p11n_peer_by_id(const p11n_ctx *ctx, const char *id)
{
    for (size_t i = 0; i < ctx->npeers; i++)
        if (strcmp(ctx->peers[i].id, id) == 0)
            return &ctx->peers[i];
    return NULL;
}

const p11n_peer_entry *p11n_peer_by_pub(const p11n_ctx *ctx, const uint8_t *pub)
{
    for (size_t i = 0; i < ctx->npeers; i++)
        if (memcmp(ctx->peers[i].pub, pub, P11N_PUBKEY_LEN) == 0)
            return &ctx->peers[i];
    return NULL;
}

void p11n_peers_free(p11n_ctx *ctx)
{
    free(ctx->peers);
    ctx->peers = NULL;
    ctx->npeers = ctx->cappeers = 0;
}

/* 1 if entry i's key would end up under a second identifier: an earlier
 * entry of the batch, or a stored peer that the batch does not give
 * another key. A peer's identity must be unambiguous: one key, one name. */
static int key_taken(const p11n_ctx *ctx, const p11n_peer_entry *e, size_t n, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(e[j].id, e[i].id) != 0 && memcmp(e[j].pub, e[i].pub, P11N_PUBKEY_LEN) == 0)
            return 1;
    for (size_t k = 0; k < ctx->npeers; k++) {
        const p11n_peer_entry *s = &ctx->peers[k];
        if (strcmp(s->id, e[i].id) == 0 || memcmp(s->pub, e[i].pub, P11N_PUBKEY_LEN) != 0)
            continue;
        int moved = 0;
        for (size_t j = 0; j < n && !moved; j++)
            moved = strcmp(e[j].id, s->id) == 0 && memcmp(e[j].pub, s->pub, P11N_PUBKEY_LEN) != 0;
        if (!moved)
            return 1;
    }
    return 0;
}

/* Check entries against the store and each other without changing
 * anything; `*add` counts the ones that are new. */
static int check_entries(const p11n_ctx *ctx, const p11n_peer_entry *e, size_t n,
    unsigned flags, size_t *add)
{
    *add = 0;
    for (size_t i = 0; i < n; i++) {
        if (!p11n_identifier_valid(e[i].id))
            return P11N_ERR_BAD_IDENTIFIER;
        if (p11n_dh_secp256k1.check_pub(e[i].pub) != P11N_OK)
            return P11N_ERR_BAD_PUBKEY;
        if (key_taken(ctx, e, n, i))
            return P11N_ERR_DUPLICATE_KEY;
        const p11n_peer_entry *old = p11n_peer_by_id(ctx, e[i].id);
        if (old == NULL)
            (*add)++;
        else if (memcmp(old->pub, e[i].pub, P11N_PUBKEY_LEN) != 0
            && !(flags & P11N_PEER_REPLACE))
            return P11N_ERR_PUBKEY_MISMATCH;
    }
    return P11N_OK;
}

/* All or nothing: check, make room, then apply. */
static int store_add(p11n_ctx *ctx, const p11n_peer_entry *e, size_t n, unsigned flags)
{
    size_t add;
    int rc = check_entries(ctx, e, n, flags, &add);
    if (rc != P11N_OK)
        return rc;
    if (ctx->npeers + add > ctx->cappeers) {
        size_t cap = ctx->cappeers ? ctx->cappeers : 8;
        while (cap < ctx->npeers + add)
            cap *= 2;
        p11n_peer_entry *p = realloc(ctx->peers, cap * sizeof(*p));
        if (p == NULL)
            return P11N_ERR_NOMEM;
        ctx->peers = p;
        ctx->cappeers = cap;
    }
    for (size_t i = 0; i < n; i++) {
        p11n_peer_entry *old = (p11n_peer_entry *)p11n_peer_by_id(ctx, e[i].id);
        if (old != NULL)
            memcpy(old->pub, e[i].pub, P11N_PUBKEY_LEN);
        else
            ctx->peers[ctx->npeers++] = e[i];
    }
    return P11N_OK;
}

int p11n_ceremony_input(p11n_ctx *ctx, const uint8_t pub[P11N_PUBKEY_LEN],
    const char *identifier, unsigned flags)
{
    if (ctx == NULL || pub == NULL || identifier == NULL
        || (flags & ~(P11N_PEER_REPLACE | P11N_PEER_TO_TOKEN)) != 0
        || ((flags & P11N_PEER_TO_TOKEN) && ctx->opt.token_uri == NULL))
        return P11N_ERR_INVALID_ARG;
    if (!p11n_identifier_valid(identifier))
        return P11N_ERR_BAD_IDENTIFIER;
    p11n_peer_entry e;
    memset(&e, 0, sizeof(e));
    memcpy(e.id, identifier, strlen(identifier));
    memcpy(e.pub, pub, P11N_PUBKEY_LEN);
    size_t add;
    int rc = check_entries(ctx, &e, 1, flags, &add);
    if (rc != P11N_OK)
        return rc;
    if (flags & P11N_PEER_TO_TOKEN) {
        size_t bad = 0;
        rc = p11n_ceremony_write(ctx->opt.token_uri, &e, 1, (flags & P11N_PEER_REPLACE) != 0,
            &bad);
        if (rc != P11N_OK) {
            p11n_log(ctx, P11N_LOG_ERROR, "ceremony: writing peer %s to the token: %s",
                identifier, p11n_strerror(rc));
            return rc;
        }
    }
    const p11n_peer_entry *old = p11n_peer_by_id(ctx, identifier);
    int replaced = old != NULL && memcmp(old->pub, pub, P11N_PUBKEY_LEN) != 0;
    rc = store_add(ctx, &e, 1, flags);
    if (rc != P11N_OK)
        return rc;
    p11n_log(ctx, P11N_LOG_INFO, "ceremony: peer %s %s%s", identifier,
        replaced ? "replaced (new key)" : "added",
        (flags & P11N_PEER_TO_TOKEN) ? " (and stored on the token)" : "");
    /* A replaced key is revoked at once. */
    p11n_trust_revoke_stale(ctx);
    return P11N_OK;
}

static int read_file(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return P11N_ERR_IO;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = P11N_OK;
    while (buf != NULL) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = P11N_ERR_IO;
            break;
        }
        if (n == cap) {
            if (cap >= MAX_PEERS_FILE) {
                rc = P11N_ERR_PARSE;
                break;
            }
            char *b = realloc(buf, cap * 2);
            if (b == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL)
        return P11N_ERR_NOMEM;
    if (rc != P11N_OK) {
        free(buf);
        return rc;
    }
    *text = buf;
    *len = n;
    return P11N_OK;
}

static int load_entries(p11n_ctx *ctx, p11n_peer_entry *e, size_t n, const char *from)
{
    int rc = store_add(ctx, e, n, 0);
    if (rc != P11N_OK) {
        p11n_log(ctx, P11N_LOG_ERROR, "peers from %s: %s", from, p11n_strerror(rc));
        return rc;
    }
    p11n_log(ctx, P11N_LOG_INFO, "peers: %zu loaded from %s", n, from);
    return n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
}

int p11n_peers_load_file(p11n_ctx *ctx, const char *path)
{
    if (ctx == NULL || path == NULL)
        return P11N_ERR_INVALID_ARG;
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(path, &text, &len);
    if (rc != P11N_OK) {
        p11n_log(ctx, P11N_LOG_ERROR, "peers file %s: %s", path,
            rc == P11N_ERR_IO ? strerror(errno) : p11n_strerror(rc));
        return rc;
    }
    p11n_peer_entry *e = NULL;
    size_t n = 0, bad_line = 0;
    char why[160];
    rc = p11n_peers_parse_why(text, len, &e, &n, &bad_line, why, sizeof(why));
    free(text);
    if (rc != P11N_OK) {
        p11n_log(ctx, P11N_LOG_ERROR, "peers file %s, line %zu: %s: %s", path, bad_line,
            p11n_strerror(rc), why);
        return rc;
    }
    rc = load_entries(ctx, e, n, path);
    free(e);
    return rc;
}

/* Check a whole new store: what p11n_ceremony_scan trusted is checked
 * again here, since the store's lookups rely on it. */
static int check_store(const p11n_peer_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!p11n_identifier_valid(e[i].id))
            return P11N_ERR_BAD_IDENTIFIER;
        if (p11n_dh_secp256k1.check_pub(e[i].pub) != P11N_OK)
            return P11N_ERR_BAD_PUBKEY;
        for (size_t j = 0; j < i; j++)
            if (strcmp(e[i].id, e[j].id) == 0)
                return P11N_ERR_EXISTS;
    }
    return P11N_OK;
}

static void log_ignored(p11n_ctx *ctx, const p11n_ceremony_ignored *ig, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p11n_log(ctx, P11N_LOG_WARN, "ceremony object %s ignored: %s", ig[i].id, ig[i].reason);
}

int p11n_peers_load_token(p11n_ctx *ctx, const char *token_uri)
{
    if (ctx == NULL || token_uri == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_peer_entry *e = NULL;
    p11n_ceremony_ignored *ig = NULL;
    size_t n = 0, nig = 0;
    int rc = p11n_ceremony_scan(token_uri, &e, &n, &ig, &nig);
    if (rc != P11N_OK) {
        p11n_log(ctx, P11N_LOG_ERROR, "peers from the token: %s (%s)", p11n_strerror(rc),
            p11n_token_last_error());
        return rc;
    }
    log_ignored(ctx, ig, nig);
    free(ig);
    rc = check_store(e, n);
    if (rc != P11N_OK) {
        p11n_log(ctx, P11N_LOG_ERROR, "peers from the token: %s; the peer store is unchanged",
            p11n_strerror(rc));
        free(e);
        return rc;
    }
    /* The swap is the whole change: the old store stays until here. */
    free(ctx->peers);
    ctx->peers = e;
    ctx->npeers = ctx->cappeers = n;
    p11n_log(ctx, P11N_LOG_INFO, "peers: %zu loaded from the token (the store replaced)%s", n,
        nig > 0 ? "; some objects ignored, see the warnings" : "");
    p11n_trust_revoke_stale(ctx);
    return n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
}

int p11n_peer_remove(p11n_ctx *ctx, const char *identifier)
{
    if (ctx == NULL || identifier == NULL)
        return P11N_ERR_INVALID_ARG;
    const p11n_peer_entry *e = p11n_peer_by_id(ctx, identifier);
    if (e == NULL)
        return P11N_ERR_UNKNOWN_PEER;
    size_t i = (size_t)(e - ctx->peers);
    memmove(&ctx->peers[i], &ctx->peers[i + 1], (ctx->npeers - i - 1) * sizeof(*e));
    ctx->npeers--;
    p11n_log(ctx, P11N_LOG_INFO, "ceremony: peer %s removed", identifier);
    p11n_trust_revoke_stale(ctx);
    return P11N_OK;
}

int p11n_peer_key(const p11n_ctx *ctx, const char *identifier, uint8_t out[P11N_PUBKEY_LEN])
{
    if (ctx == NULL || identifier == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    const p11n_peer_entry *e = p11n_peer_by_id(ctx, identifier);
    if (e == NULL)
        return P11N_ERR_UNKNOWN_PEER;
    memcpy(out, e->pub, P11N_PUBKEY_LEN);
    return P11N_OK;
}
