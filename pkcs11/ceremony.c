/*
 * Writing and removing ceremony objects: each peer's public key as a token
 * object (layout and trust rules in doc/ceremony.md). CKA_ID
 * "p11noise-peer:" + identifier marks them, so a peer's key can never be
 * taken for the machine's own. Reading them is ceremony_scan.c.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "ceremony.h"

#define PEER_CKA_ID_MAX (P11N_PEER_ID_PREFIX_LEN + P11N_MAX_IDENTIFIER)

/* The CKA_ID of a valid identifier's object into `out`; its length. */
static CK_ULONG peer_cka_id(const char *identifier, char out[PEER_CKA_ID_MAX])
{
    size_t n = strlen(identifier);
    memcpy(out, P11N_PEER_ID_PREFIX, P11N_PEER_ID_PREFIX_LEN);
    memcpy(out + P11N_PEER_ID_PREFIX_LEN, identifier, n);
    return (CK_ULONG)(P11N_PEER_ID_PREFIX_LEN + n);
}

static int create_peer(struct p11n_token *tok, const p11n_peer_entry *e, CK_OBJECT_HANDLE *h)
{
    uint8_t point[P11N_EC_POINT_DER_LEN];
    char id[PEER_CKA_ID_MAX];
    if (p11n_ec_point_der(e->pub, point) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    size_t idlen = strlen(e->id);
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE type = CKK_EC;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    /* Private: creating it needs the PIN, which is what makes it trusted
     * (a public object could come from anyone who can open a session), and
     * only the logged-in user sees who the peers are. Not modifiable: a
     * replacement is a new object. Destroyable (the default): `ceremony
     * remove`. No operation allowed: the key is only ever read. */
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_MODIFIABLE, &no, sizeof(no) },
        { CKA_LABEL, (void *)e->id, idlen },
        { CKA_ID, id, peer_cka_id(e->id, id) },
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

/* The entry alone and against the entries before it. */
static int check_entry(const p11n_peer_entry *entries, size_t i)
{
    const p11n_peer_entry *e = &entries[i];
    if (strnlen(e->id, sizeof(e->id)) == sizeof(e->id) || !p11n_identifier_valid(e->id))
        return p11n_token_errorf(P11N_ERR_BAD_IDENTIFIER, NULL, "%s",
            p11n_strerror(P11N_ERR_BAD_IDENTIFIER));
    if (p11n_dh_secp256k1.check_pub(e->pub) != P11N_OK)
        return p11n_token_errorf(P11N_ERR_BAD_PUBKEY, NULL, "%s: %s", e->id,
            p11n_strerror(P11N_ERR_BAD_PUBKEY));
    for (size_t j = 0; j < i; j++) {
        if (strcmp(entries[j].id, e->id) == 0)
            return p11n_token_errorf(P11N_ERR_EXISTS, NULL, "identifier %s given twice", e->id);
        /* One key, two names: whoever holds it could be taken for either. */
        if (memcmp(entries[j].pub, e->pub, P11N_PUBKEY_LEN) == 0)
            return p11n_token_errorf(P11N_ERR_DUPLICATE_KEY, NULL,
                "%s: the same public key as %s, given before", e->id, entries[j].id);
    }
    return P11N_OK;
}

static int in_input(const p11n_peer_entry *entries, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(entries[i].id, id) == 0)
            return 1;
    return 0;
}

/* Refuse e's key when a valid object on the token holds it under another
 * identifier that stays. Objects that are not valid (public ones among
 * them) do not count: anyone could have planted them. */
static int check_key_on_token(struct p11n_token *tok, const p11n_peer_entry *entries, size_t n,
    const p11n_peer_entry *e, const struct p11n_cer_obj *have, size_t nhave, int replace)
{
    for (size_t i = 0; i < nhave; i++) {
        const struct p11n_cer_obj *o = &have[i];
        if (!o->valid || strcmp(o->ident, e->id) == 0 ||
            memcmp(o->pub, e->pub, P11N_PUBKEY_LEN) != 0)
            continue;
        if (replace && in_input(entries, n, o->ident))
            continue;                       /* that identifier gets a new key */
        return p11n_token_errorf(P11N_ERR_DUPLICATE_KEY, tok->uri,
            "%s: the same public key is already on the token under %s", e->id, o->ident);
    }
    return P11N_OK;
}

enum { CREATE = 'c', SKIP = 's', REPLACE = 'r' };

/* What to do with e given the objects that have its identifier: nothing
 * when exactly one is there, trusted, with e's key; otherwise create, and
 * with `replace` destroy them afterwards. */
static int choose_action(struct p11n_token *tok, const p11n_peer_entry *e,
    const struct p11n_cer_obj *have, size_t nhave, int replace, unsigned char *action)
{
    size_t same = 0;
    const struct p11n_cer_obj *match = NULL, *other_key = NULL, *ignored = NULL;
    for (size_t i = 0; i < nhave; i++) {
        const struct p11n_cer_obj *o = &have[i];
        if (strcmp(o->ident, e->id) != 0)
            continue;
        same++;
        int same_key = memcmp(o->pub, e->pub, P11N_PUBKEY_LEN) == 0;
        if (o->valid && !same_key)
            other_key = o;
        else if (o->trusted)
            match = o;
        else
            ignored = o;
    }
    *action = same == 0 ? CREATE : same == 1 && match != NULL ? SKIP : REPLACE;
    if (*action != REPLACE || replace)
        return P11N_OK;
    if (other_key != NULL)
        return p11n_token_errorf(P11N_ERR_PUBKEY_MISMATCH, tok->uri,
            "%s is already on the token with another key", e->id);
    return p11n_token_errorf(P11N_ERR_EXISTS, tok->uri,
        "%s: an ignored ceremony object has this identifier (%s); --replace rewrites it",
        e->id, ignored->reason);
}

/* Check every entry against the others and the token; nothing written. */
static int validate(struct p11n_token *tok, const p11n_peer_entry *entries, size_t n,
    const struct p11n_cer_obj *have, size_t nhave, int replace, size_t *bad_index,
    unsigned char *action)
{
    for (size_t i = 0; i < n; i++) {
        *bad_index = i;
        int err = check_entry(entries, i);
        if (err == P11N_OK)
            err = check_key_on_token(tok, entries, n, &entries[i], have, nhave, replace);
        if (err == P11N_OK)
            err = choose_action(tok, &entries[i], have, nhave, replace, &action[i]);
        if (err != P11N_OK)
            return err;
    }
    *bad_index = SIZE_MAX;
    return P11N_OK;
}

/* All or nothing: create every new object; any failure destroys the ones
 * created. */
static int create_all(struct p11n_token *tok, const p11n_peer_entry *entries, size_t n,
    const unsigned char *action, size_t *bad_index)
{
    CK_OBJECT_HANDLE *made = calloc(n + 1, sizeof(*made));
    if (made == NULL)
        return P11N_ERR_NOMEM;
    size_t nmade = 0;
    int err = P11N_OK;
    for (size_t i = 0; i < n && err == P11N_OK; i++) {
        if (action[i] == SKIP)
            continue;
        err = create_peer(tok, &entries[i], &made[nmade]);
        if (err == P11N_OK)
            nmade++;
        else
            *bad_index = i;
    }
    for (size_t i = 0; err != P11N_OK && i < nmade; i++)
        tok->fn->C_DestroyObject(tok->anchor, made[i]);
    free(made);
    return err;
}

/* Once every new object exists: destroy the objects the replaced
 * identifiers had, trusted or not (objects written as public by older
 * versions go this way). */
static int drop_replaced(struct p11n_token *tok, const p11n_peer_entry *entries, size_t n,
    const unsigned char *action, const struct p11n_cer_obj *have, size_t nhave,
    size_t *bad_index)
{
    int err = P11N_OK;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; action[i] == REPLACE && j < nhave; j++) {
            if (strcmp(have[j].ident, entries[i].id) != 0)
                continue;
            CK_RV rv = tok->fn->C_DestroyObject(tok->anchor, have[j].h);
            if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID && err == P11N_OK) {
                *bad_index = i;
                err = p11n_token_fail(tok, "C_DestroyObject", rv);
            }
        }
    }
    return err;
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
    int err = p11n_cer_open(token_uri, P11N_TOKEN_RW, &tok);
    if (err != P11N_OK)
        return err;
    struct p11n_cer_obj *have = NULL;
    size_t nhave = 0;
    unsigned char *action = malloc(n + 1);
    if (action == NULL)
        err = P11N_ERR_NOMEM;
    if (err == P11N_OK)
        err = p11n_cer_scan_token(tok, &have, &nhave);
    if (err == P11N_OK)
        err = validate(tok, entries, n, have, nhave, replace, bad_index, action);
    if (err == P11N_OK)
        err = create_all(tok, entries, n, action, bad_index);
    if (err == P11N_OK)
        err = drop_replaced(tok, entries, n, action, have, nhave, bad_index);
    free(action);
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
    int err = p11n_cer_open(token_uri, P11N_TOKEN_RW, &tok);
    if (err != P11N_OK)
        return err;
    char id[PEER_CKA_ID_MAX];
    /* Any class: every object with this CKA_ID, ignored ones included,
     * is in the ceremony's namespace. */
    CK_ATTRIBUTE tmpl[] = { { CKA_ID, id, peer_cka_id(identifier, id) } };
    CK_OBJECT_HANDLE *h;
    size_t n;
    err = p11n_token_find(tok, tok->anchor, tmpl, 1, &h, &n);
    if (err == P11N_OK && n == 0)
        err = p11n_token_errorf(P11N_ERR_KEY_NOT_FOUND, tok->uri,
            "no ceremony object for %s", identifier);
    /* Every object is tried: one that vanished meanwhile (its maker may
     * destroy a planted object at any time) is already gone, and must not
     * leave the real one behind. */
    for (size_t i = 0; i < n; i++) {
        CK_RV rv = tok->fn->C_DestroyObject(tok->anchor, h[i]);
        if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID && err == P11N_OK)
            err = p11n_token_fail(tok, "C_DestroyObject", rv);
    }
    free(h);
    p11n_token_close(tok);
    return err;
}

