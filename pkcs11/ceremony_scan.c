/*
 * Reading the ceremony from a token: every object with the prefix that a
 * logged-in session sees, its attributes read one by one and judged by
 * ceremony_obj.c. Only what the PIN was needed to create can be trusted,
 * so the search for peers asks for CKA_PRIVATE true and each object found
 * is checked again; every other object is looked at too, to be reported.
 * A public object (found by a search for CKA_PRIVATE false) has only its
 * CKA_ID read: anyone could make thousands of them.
 */
#include <stdlib.h>
#include <string.h>

#include "ceremony.h"

int p11n_cer_open(const char *token_uri, int flags, struct p11n_token **tok)
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

/* A session that is not logged in sees only public objects: exactly the
 * ones that are never trusted. Refuse rather than report an empty list. */
static int check_logged_in(struct p11n_token *tok)
{
    CK_SESSION_INFO si;
    CK_RV rv = tok->fn->C_GetSessionInfo(tok->anchor, &si);
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_GetSessionInfo", rv);
    if (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS)
        return P11N_OK;
    return p11n_token_errorf(P11N_ERR_PIN_REQUIRED, tok->uri,
        "ceremony objects are read only from a logged-in session");
}

static int by_handle(const void *a, const void *b)
{
    CK_OBJECT_HANDLE x = *(const CK_OBJECT_HANDLE *)a, y = *(const CK_OBJECT_HANDLE *)b;
    return (x > y) - (x < y);
}

/* The objects the token finds with CKA_PRIVATE `priv` (and, when
 * `ec_public`, of class CKO_PUBLIC_KEY and key type CKK_EC), sorted. */
static int find_sorted(struct p11n_token *tok, CK_BBOOL priv, int ec_public,
    CK_OBJECT_HANDLE **h, size_t *n)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE type = CKK_EC;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_PRIVATE, &priv, sizeof(priv) },
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
    };
    int err = p11n_token_find(tok, tok->anchor, tmpl, ec_public ? 3 : 1, h, n);
    if (err == P11N_OK)
        qsort(*h, *n, sizeof(**h), by_handle);
    return err;
}

/* The handles a scan sorts objects by: the private EC public keys (the
 * only candidates for trust) and the public objects (never trusted). */
struct found {
    CK_OBJECT_HANDLE *priv, *pub;
    size_t npriv, npub;
};

static int in(const CK_OBJECT_HANDLE *h, const CK_OBJECT_HANDLE *set, size_t n)
{
    return bsearch(h, set, n, sizeof(*set), by_handle) != NULL;
}

/* The attributes judged, in the order of struct attr_bufs. */
static const CK_ATTRIBUTE_TYPE wanted[] = {
    CKA_LABEL, CKA_EC_PARAMS, CKA_EC_POINT, CKA_PRIVATE, CKA_MODIFIABLE, CKA_CLASS, CKA_KEY_TYPE,
};
#define NWANTED (sizeof(wanted) / sizeof(wanted[0]))

static int ulong_is(const uint8_t *v, size_t len, CK_ULONG want)
{
    CK_ULONG x;
    if (v == NULL || len != sizeof(x))
        return 0;
    memcpy(&x, v, sizeof(x));
    return x == want;
}

/* Read the object's attributes and judge it. */
static int judge(struct p11n_token *tok, CK_OBJECT_HANDLE h, const uint8_t *id, size_t idlen,
    int found_private, struct p11n_cer_obj *o)
{
    uint8_t *v[NWANTED] = { NULL };
    size_t len[NWANTED] = { 0 };
    int err = P11N_OK;
    for (size_t i = 0; i < NWANTED && err == P11N_OK; i++)
        err = p11n_token_attr_loose(tok, h, wanted[i], &v[i], &len[i]);
    if (err == P11N_OK) {
        struct p11n_cer_attrs a = {
            .id = id + P11N_PEER_ID_PREFIX_LEN, .idlen = idlen - P11N_PEER_ID_PREFIX_LEN,
            .label = v[0], .labellen = len[0],
            .params = v[1], .paramslen = len[1],
            .point = v[2], .pointlen = len[2],
            .priv = v[3], .privlen = len[3],
            .modifiable = v[4], .modifiablelen = len[4],
            .ec_public_key = ulong_is(v[5], len[5], CKO_PUBLIC_KEY) &&
                             ulong_is(v[6], len[6], CKK_EC),
            .found_private = found_private,
        };
        p11n_cer_decode(&a, o);
        o->h = h;
    }
    for (size_t i = 0; i < NWANTED; i++)
        free(v[i]);
    return err;
}

/* A public object with the prefix: the search said CKA_PRIVATE false,
 * which alone decides that it is never trusted, so none of its other
 * attributes is read (a token may hold thousands, made without the PIN). */
static void judge_public(CK_OBJECT_HANDLE h, const uint8_t *id, size_t idlen,
    struct p11n_cer_obj *o)
{
    static const CK_BBOOL no = CK_FALSE;
    struct p11n_cer_attrs a = {
        .id = id + P11N_PEER_ID_PREFIX_LEN, .idlen = idlen - P11N_PEER_ID_PREFIX_LEN,
        .priv = &no, .privlen = sizeof(no),
    };
    p11n_cer_decode(&a, o);
    o->h = h;
}

/* Judge every object in `all` that has the prefix into `o`; *count gets
 * their number. Only its CKA_ID is read unless it may be trusted. */
static int judge_all(struct p11n_token *tok, const CK_OBJECT_HANDLE *all, size_t nall,
    const struct found *f, struct p11n_cer_obj *o, size_t *count)
{
    int err = P11N_OK;
    *count = 0;
    for (size_t i = 0; i < nall && err == P11N_OK; i++) {
        uint8_t *id;
        size_t idlen;
        err = p11n_token_attr_loose(tok, all[i], CKA_ID, &id, &idlen);
        if (err == P11N_OK && p11n_is_peer_id(id, idlen)) {
            if (in(&all[i], f->pub, f->npub))
                judge_public(all[i], id, idlen, &o[*count]);
            else
                err = judge(tok, all[i], id, idlen, in(&all[i], f->priv, f->npriv),
                    &o[*count]);
            *count += err == P11N_OK;
        }
        free(id);
    }
    return err;
}

int p11n_cer_scan_token(struct p11n_token *tok, struct p11n_cer_obj **objs, size_t *n)
{
    *objs = NULL;
    *n = 0;
    struct found f = { NULL, NULL, 0, 0 };
    CK_OBJECT_HANDLE *all = NULL;
    size_t nall = 0, count = 0;
    struct p11n_cer_obj *o = NULL;
    int err = check_logged_in(tok);
    if (err == P11N_OK)
        err = find_sorted(tok, CK_TRUE, 1, &f.priv, &f.npriv);
    if (err == P11N_OK)
        err = find_sorted(tok, CK_FALSE, 0, &f.pub, &f.npub);
    /* Every object the session sees, whatever its class and CKA_PRIVATE:
     * the ones left out above are reported. */
    if (err == P11N_OK)
        err = p11n_token_find(tok, tok->anchor, NULL, 0, &all, &nall);
    if (err == P11N_OK && (o = calloc(nall + 1, sizeof(*o))) == NULL)
        err = P11N_ERR_NOMEM;
    if (err == P11N_OK)
        err = judge_all(tok, all, nall, &f, o, &count);
    if (err == P11N_OK)
        err = p11n_cer_resolve(o, count);
    free(f.priv);
    free(f.pub);
    free(all);
    if (err != P11N_OK) {
        free(o);
        return err;
    }
    *objs = o;
    *n = count;
    return P11N_OK;
}

int p11n_ceremony_scan(const char *token_uri, p11n_peer_entry **entries, size_t *n,
    p11n_ceremony_ignored **ignored, size_t *nignored)
{
    if (entries == NULL || n == NULL || ignored == NULL || nignored == NULL)
        return P11N_ERR_INVALID_ARG;
    *entries = NULL;
    *ignored = NULL;
    *n = *nignored = 0;
    if (token_uri == NULL)
        return P11N_ERR_INVALID_ARG;
    struct p11n_token *tok;
    int err = p11n_cer_open(token_uri, 0, &tok);
    if (err != P11N_OK)
        return err;
    struct p11n_cer_obj *objs;
    size_t nobjs;
    err = p11n_cer_scan_token(tok, &objs, &nobjs);
    p11n_token_close(tok);
    if (err != P11N_OK)
        return err;
    err = p11n_cer_split(objs, nobjs, entries, n, ignored, nignored);
    free(objs);
    return err;
}

int p11n_ceremony_read(const char *token_uri, p11n_peer_entry **entries, size_t *n)
{
    if (entries == NULL || n == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_ceremony_ignored *ignored;
    size_t nignored;
    int err = p11n_ceremony_scan(token_uri, entries, n, &ignored, &nignored);
    free(ignored);
    return err;
}
