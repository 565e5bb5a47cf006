/*
 * Ceremony objects: each peer's public key as a token object (layout in
 * doc/ceremony.md). CKA_ID "p11noise-peer:" + identifier marks them, so a
 * peer's key can never be taken for the machine's own.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "secure.h"
#include "token.h"

struct peer_obj {
    p11n_peer_entry e;
    CK_OBJECT_HANDLE h;
};

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct peer_obj *)a)->e.id, ((const struct peer_obj *)b)->e.id);
}

/* Decode one object if it is a ceremony object: 1 if it is, 0 if not. */
static int decode_peer(struct p11n_token *tok, CK_OBJECT_HANDLE h, struct peer_obj *out, int *err)
{
    uint8_t *id = NULL, *label = NULL, *pt = NULL;
    size_t idlen, labellen, ptlen;
    int is_peer = 0;
    *err = p11n_token_attr(tok, tok->anchor, h, CKA_ID, &id, &idlen);
    if (*err != P11N_OK || !p11n_is_peer_id(id, idlen))
        goto out;
    is_peer = 1;
    size_t n = idlen - P11N_PEER_ID_PREFIX_LEN;
    if (n > P11N_MAX_IDENTIFIER)
        n = P11N_MAX_IDENTIFIER;
    memcpy(out->e.id, id + P11N_PEER_ID_PREFIX_LEN, n);
    out->e.id[n] = '\0';
    out->h = h;
    *err = p11n_token_attr(tok, tok->anchor, h, CKA_LABEL, &label, &labellen);
    if (*err == P11N_OK)
        *err = p11n_token_attr(tok, tok->anchor, h, CKA_EC_POINT, &pt, &ptlen);
    if (*err != P11N_OK)
        goto out;
    /* Label and ID must agree: a hand-made object that bends the layout
     * is refused rather than guessed at. */
    if (idlen - P11N_PEER_ID_PREFIX_LEN != n || !p11n_identifier_valid(out->e.id) ||
        label == NULL || labellen != n || memcmp(label, out->e.id, n) != 0) {
        *err = p11n_token_errorf(P11N_ERR_BAD_IDENTIFIER, tok->uri,
            "malformed ceremony object (CKA_ID and CKA_LABEL disagree or are invalid)");
        goto out;
    }
    if (pt == NULL || p11n_ec_point_decode(pt, ptlen, out->e.pub) != P11N_OK)
        *err = p11n_token_errorf(P11N_ERR_BAD_PUBKEY, tok->uri,
            "ceremony object %s holds no valid secp256k1 point", out->e.id);
out:
    free(id);
    free(label);
    free(pt);
    return is_peer;
}

/* Every ceremony object on the token, sorted by identifier. */
static int read_peers(struct p11n_token *tok, struct peer_obj **peers, size_t *npeers)
{
    *peers = NULL;
    *npeers = 0;
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE type = CKK_EC;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
    };
    CK_OBJECT_HANDLE *h;
    size_t n;
    int err = p11n_token_find(tok, tok->anchor, tmpl, 2, &h, &n);
    if (err != P11N_OK)
        return err;
    struct peer_obj *p = calloc(n + 1, sizeof(*p));
    if (p == NULL) {
        free(h);
        return P11N_ERR_NOMEM;
    }
    size_t count = 0;
    for (size_t i = 0; i < n && err == P11N_OK; i++)
        if (decode_peer(tok, h[i], &p[count], &err) && err == P11N_OK)
            count++;
    free(h);
    if (err != P11N_OK) {
        free(p);
        return err;
    }
    qsort(p, count, sizeof(*p), by_id);
    *peers = p;
    *npeers = count;
    return P11N_OK;
}

static int open_token(const char *token_uri, int flags, struct p11n_token **tok)
{
    P11KitUri *uri;
    char *safe;
    *tok = NULL;
    p11n_token_error_clear();
    int err = p11n_uri_parse(token_uri, &uri, &safe);
    if (err != P11N_OK)
        return err;
    /* Ceremony objects are private: always log in. */
    err = p11n_token_open(uri, safe, P11N_TOKEN_LOGIN | flags, tok);
    p11n_uri_free(uri);
    free(safe);
    return err;
}

int p11n_ceremony_read(const char *token_uri, p11n_peer_entry **entries, size_t *n)
{
    if (entries == NULL || n == NULL)
        return P11N_ERR_INVALID_ARG;
    *entries = NULL;
    *n = 0;
    if (token_uri == NULL)
        return P11N_ERR_INVALID_ARG;
    struct p11n_token *tok;
    int err = open_token(token_uri, 0, &tok);
    if (err != P11N_OK)
        return err;
    struct peer_obj *peers;
    size_t np;
    err = read_peers(tok, &peers, &np);
    p11n_token_close(tok);
    if (err != P11N_OK)
        return err;
    p11n_peer_entry *e = calloc(np + 1, sizeof(*e));
    if (e == NULL) {
        free(peers);
        return P11N_ERR_NOMEM;
    }
    for (size_t i = 0; i < np; i++)
        e[i] = peers[i].e;
    free(peers);
    *entries = e;
    *n = np;
    return P11N_OK;
}

static int create_peer(struct p11n_token *tok, const p11n_peer_entry *e, CK_OBJECT_HANDLE *h)
{
    uint8_t point[P11N_EC_POINT_DER_LEN];
    char id[P11N_PEER_ID_PREFIX_LEN + P11N_MAX_IDENTIFIER + 1];
    if (p11n_ec_point_der(e->pub, point) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    size_t idlen = strlen(e->id);
    memcpy(id, P11N_PEER_ID_PREFIX, P11N_PEER_ID_PREFIX_LEN);
    memcpy(id + P11N_PEER_ID_PREFIX_LEN, e->id, idlen);
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE type = CKK_EC;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    /* Private: only the logged-in user sees who the peers are. Not
     * modifiable: a replacement is a new object. No operation allowed: the
     * key is only ever read. */
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_MODIFIABLE, &no, sizeof(no) },
        { CKA_LABEL, (void *)e->id, idlen },
        { CKA_ID, id, P11N_PEER_ID_PREFIX_LEN + idlen },
        { CKA_EC_PARAMS, (void *)p11n_secp256k1_oid, sizeof(p11n_secp256k1_oid) },
        { CKA_EC_POINT, point, sizeof(point) },
        { CKA_VERIFY, &no, sizeof(no) },
        { CKA_ENCRYPT, &no, sizeof(no) },
        { CKA_WRAP, &no, sizeof(no) },
        { CKA_VERIFY_RECOVER, &no, sizeof(no) },
        { CKA_DERIVE, &no, sizeof(no) },
    };
    CK_RV rv = tok->fn->C_CreateObject(tok->anchor, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), h);
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_CreateObject", rv);
    return P11N_OK;
}

static const struct peer_obj *find_peer(const struct peer_obj *p, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(p[i].e.id, id) == 0)
            return &p[i];
    return NULL;
}

/* Check every entry against the others and the token; nothing written. */
static int validate(struct p11n_token *tok, const p11n_peer_entry *entries, size_t n,
    const struct peer_obj *have, size_t nhave, int replace, size_t *bad_index,
    unsigned char *action)
{
    for (size_t i = 0; i < n; i++) {
        *bad_index = i;
        const p11n_peer_entry *e = &entries[i];
        if (strnlen(e->id, sizeof(e->id)) == sizeof(e->id) || !p11n_identifier_valid(e->id))
            return p11n_token_errorf(P11N_ERR_BAD_IDENTIFIER, NULL, "%s",
                p11n_strerror(P11N_ERR_BAD_IDENTIFIER));
        if (p11n_dh_secp256k1.check_pub(e->pub) != P11N_OK)
            return p11n_token_errorf(P11N_ERR_BAD_PUBKEY, NULL, "%s: %s", e->id,
                p11n_strerror(P11N_ERR_BAD_PUBKEY));
        for (size_t j = 0; j < i; j++)
            if (strcmp(entries[j].id, e->id) == 0)
                return p11n_token_errorf(P11N_ERR_EXISTS, NULL,
                    "identifier %s given twice", e->id);
        const struct peer_obj *old = find_peer(have, nhave, e->id);
        action[i] = 'c';                        /* create */
        if (old != NULL && memcmp(old->e.pub, e->pub, P11N_PUBKEY_LEN) == 0)
            action[i] = 's';                    /* already there: skip */
        else if (old != NULL && replace)
            action[i] = 'r';                    /* create, then drop the old one */
        else if (old != NULL)
            return p11n_token_errorf(P11N_ERR_PUBKEY_MISMATCH, tok->uri,
                "%s is already on the token with another key", e->id);
    }
    *bad_index = SIZE_MAX;
    return P11N_OK;
}

int p11n_ceremony_write(const char *token_uri, const p11n_peer_entry *entries, size_t n,
    int replace, size_t *bad_index)
{
    size_t dummy;
    if (bad_index == NULL)
        bad_index = &dummy;
    *bad_index = SIZE_MAX;
    if (token_uri == NULL || (entries == NULL && n > 0))
        return P11N_ERR_INVALID_ARG;
    struct p11n_token *tok;
    int err = open_token(token_uri, P11N_TOKEN_RW, &tok);
    if (err != P11N_OK)
        return err;
    struct peer_obj *have = NULL;
    size_t nhave = 0;
    unsigned char *action = malloc(n + 1);
    CK_OBJECT_HANDLE *made = calloc(n + 1, sizeof(*made));
    if (action == NULL || made == NULL)
        err = P11N_ERR_NOMEM;
    if (err == P11N_OK)
        err = read_peers(tok, &have, &nhave);
    if (err == P11N_OK)
        err = validate(tok, entries, n, have, nhave, replace, bad_index, action);
    /* All or nothing: create every new object first; any failure removes
     * what was created. Old objects go only once all new ones exist. */
    size_t nmade = 0;
    for (size_t i = 0; i < n && err == P11N_OK; i++) {
        if (action[i] == 's')
            continue;
        err = create_peer(tok, &entries[i], &made[nmade]);
        if (err == P11N_OK)
            nmade++;
        else
            *bad_index = i;
    }
    if (err != P11N_OK) {
        for (size_t i = 0; i < nmade; i++)
            tok->fn->C_DestroyObject(tok->anchor, made[i]);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (action[i] != 'r')
                continue;
            const struct peer_obj *old = find_peer(have, nhave, entries[i].id);
            CK_RV rv = tok->fn->C_DestroyObject(tok->anchor, old->h);
            if (rv != CKR_OK && err == P11N_OK) {
                *bad_index = i;
                err = p11n_token_fail(tok, "C_DestroyObject", rv);
            }
        }
    }
    free(action);
    free(made);
    free(have);
    p11n_token_close(tok);
    return err;
}

int p11n_ceremony_remove(const char *token_uri, const char *identifier)
{
    if (token_uri == NULL || identifier == NULL)
        return P11N_ERR_INVALID_ARG;
    if (!p11n_identifier_valid(identifier))
        return p11n_token_errorf(P11N_ERR_BAD_IDENTIFIER, NULL, "%s",
            p11n_strerror(P11N_ERR_BAD_IDENTIFIER));
    struct p11n_token *tok;
    int err = open_token(token_uri, P11N_TOKEN_RW, &tok);
    if (err != P11N_OK)
        return err;
    char id[P11N_PEER_ID_PREFIX_LEN + P11N_MAX_IDENTIFIER + 1];
    size_t idlen = strlen(identifier);
    memcpy(id, P11N_PEER_ID_PREFIX, P11N_PEER_ID_PREFIX_LEN);
    memcpy(id + P11N_PEER_ID_PREFIX_LEN, identifier, idlen);
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_ID, id, P11N_PEER_ID_PREFIX_LEN + idlen },
    };
    CK_OBJECT_HANDLE *h;
    size_t n;
    err = p11n_token_find(tok, tok->anchor, tmpl, 2, &h, &n);
    if (err == P11N_OK && n == 0)
        err = p11n_token_errorf(P11N_ERR_KEY_NOT_FOUND, tok->uri,
            "no ceremony object for %s", identifier);
    for (size_t i = 0; err == P11N_OK && i < n; i++) {
        CK_RV rv = tok->fn->C_DestroyObject(tok->anchor, h[i]);
        if (rv != CKR_OK)
            err = p11n_token_fail(tok, "C_DestroyObject", rv);
    }
    free(h);
    p11n_token_close(tok);
    return err;
}

/* Placeholder until the trusted-object checks land: every object read is
 * returned as trusted. */
int p11n_ceremony_scan(const char *token_uri, p11n_peer_entry **entries, size_t *n,
    p11n_ceremony_ignored **ignored, size_t *nignored)
{
    if (ignored == NULL || nignored == NULL)
        return P11N_ERR_INVALID_ARG;
    *ignored = NULL;
    *nignored = 0;
    return p11n_ceremony_read(token_uri, entries, n);
}
