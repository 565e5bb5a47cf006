/* A static key whose private half lives in a PKCS#11 token: the same
 * handle as a software key, with dh() done by the token. */
#include <stdlib.h>
#include <string.h>

#include "key.h"
#include "secure.h"
#include "token.h"

struct token_key {
    struct p11n_key base;       /* first: the engine sees only this */
    struct p11n_token *tok;
    CK_OBJECT_HANDLE priv;      /* object handles are per application,
                                 * valid in every session of the pool */
};

/* Thread-safe: each call borrows its own session from the token's pool. */
static int tkey_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    struct token_key *tk = (struct token_key *)key;
    return p11n_token_ecdh(tk->tok, tk->priv, key->pub, peer, out);
}

static void tkey_destroy(struct p11n_key *key)
{
    struct token_key *tk = (struct token_key *)key;
    p11n_token_close(tk->tok);
    free(tk);
}

static const struct p11n_key_ops tkey_ops = {
    .kind = "pkcs11",
    .slow = 1,
    .dh = tkey_dh,
    .destroy = tkey_destroy,
};

struct p11n_token *p11n_token_of_key(struct p11n_key *key)
{
    if (key == NULL || key->ops != &tkey_ops)
        return NULL;
    return ((struct token_key *)key)->tok;
}

/* The one private key the URI's object attributes (object=, id=, type=)
 * name. */
static int find_private(struct p11n_token *tok, P11KitUri *uri, CK_OBJECT_HANDLE *out)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[3] = { { CKA_CLASS, &cls, sizeof(cls) } };
    CK_ULONG n = 1;
    CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(uri, CKA_CLASS);
    if (a != NULL && (a->ulValueLen != sizeof(cls) || memcmp(a->pValue, &cls, sizeof(cls)) != 0))
        return p11n_token_errorf(P11N_ERR_URI, tok->uri, "URI names no private key (type=)");
    if ((a = p11_kit_uri_get_attribute(uri, CKA_LABEL)) != NULL)
        tmpl[n++] = *a;
    if ((a = p11_kit_uri_get_attribute(uri, CKA_ID)) != NULL)
        tmpl[n++] = *a;
    CK_OBJECT_HANDLE *h;
    size_t count;
    int err = p11n_token_find(tok, tok->anchor, tmpl, n, &h, &count);
    if (err != P11N_OK)
        return err;
    if (count == 1)
        *out = h[0];
    free(h);
    if (count == 0)
        return p11n_token_errorf(P11N_ERR_KEY_NOT_FOUND, tok->uri, "no private key matches");
    if (count > 1)
        return p11n_token_errorf(P11N_ERR_URI, tok->uri,
            "%zu private keys match: name one with object= or id=", count);
    return P11N_OK;
}

/* Fail early, with the reason, for keys the DH cannot use. */
static int check_private(struct p11n_token *tok, CK_OBJECT_HANDLE priv)
{
    CK_KEY_TYPE type = 0;
    CK_BBOOL derive = CK_FALSE;
    uint8_t params[32];
    CK_ATTRIBUTE a[] = {
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_DERIVE, &derive, sizeof(derive) },
        { CKA_EC_PARAMS, params, sizeof(params) },
    };
    CK_RV rv = tok->fn->C_GetAttributeValue(tok->anchor, priv, a, 3);
    /* Non-EC keys have no CKA_EC_PARAMS (or a bigger one): decide on the
     * key type first. */
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_BUFFER_TOO_SMALL)
        return p11n_token_fail(tok, "C_GetAttributeValue", rv);
    if (a[0].ulValueLen != sizeof(type) || type != CKK_EC)
        return p11n_token_errorf(P11N_ERR_KEY_WRONG_CURVE, tok->uri,
            "key is not an elliptic-curve key; need secp256k1");
    if (a[2].ulValueLen != sizeof(p11n_secp256k1_oid) ||
        memcmp(params, p11n_secp256k1_oid, sizeof(p11n_secp256k1_oid)) != 0)
        return p11n_token_errorf(P11N_ERR_KEY_WRONG_CURVE, tok->uri,
            "key is on another curve than secp256k1");
    if (a[1].ulValueLen != sizeof(derive) || derive != CK_TRUE)
        return p11n_token_errorf(P11N_ERR_KEY_NO_DERIVE, tok->uri, "%s",
            p11n_strerror(P11N_ERR_KEY_NO_DERIVE));
    return P11N_OK;
}

/* K = k·G with its sign, from the public key object that shares the
 * private key's CKA_ID (or, without an ID, its label). */
static int find_public(struct p11n_token *tok, CK_OBJECT_HANDLE priv, uint8_t K[P11N_PUBKEY_LEN])
{
    uint8_t *id = NULL, *label = NULL;
    size_t idlen = 0, labellen = 0, n = 0;
    CK_OBJECT_HANDLE *h = NULL;
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_ATTRIBUTE tmpl[2] = { { CKA_CLASS, &cls, sizeof(cls) } };
    int err = p11n_token_attr(tok, tok->anchor, priv, CKA_ID, &id, &idlen);
    if (err == P11N_OK)
        err = p11n_token_attr(tok, tok->anchor, priv, CKA_LABEL, &label, &labellen);
    if (err == P11N_OK) {
        if (idlen > 0)
            tmpl[1] = (CK_ATTRIBUTE){ CKA_ID, id, idlen };
        else if (labellen > 0)
            tmpl[1] = (CK_ATTRIBUTE){ CKA_LABEL, label, labellen };
        else
            err = p11n_token_errorf(P11N_ERR_KEY_NOT_FOUND, tok->uri,
                "private key has neither CKA_ID nor CKA_LABEL to find its public key by");
    }
    if (err == P11N_OK)
        err = p11n_token_find(tok, tok->anchor, tmpl, 2, &h, &n);
    if (err == P11N_OK) {
        err = P11N_ERR_KEY_NOT_FOUND;
        for (size_t i = 0; i < n && err != P11N_OK; i++) {
            uint8_t *oid = NULL, *pt = NULL;
            size_t oidlen = 0, ptlen = 0;
            /* A ceremony object never stands for our own key. */
            if (p11n_token_attr(tok, tok->anchor, h[i], CKA_ID, &oid, &oidlen) == P11N_OK &&
                !p11n_is_peer_id(oid, oidlen) &&
                p11n_token_attr(tok, tok->anchor, h[i], CKA_EC_POINT, &pt, &ptlen) == P11N_OK &&
                pt != NULL && p11n_ec_point_decode(pt, ptlen, K) == P11N_OK)
                err = P11N_OK;
            free(oid);
            free(pt);
        }
        if (err != P11N_OK)
            p11n_token_errorf(err, tok->uri,
                "no public key object with the private key's CKA_ID: its public half "
                "must be on the token too");
    }
    free(h);
    free(id);
    free(label);
    return err;
}

/* One derivation with G must give x(K): catches a public key object that
 * belongs to another key, and settles the token's point encoding. */
static int self_check(struct p11n_token *tok, CK_OBJECT_HANDLE priv, const uint8_t K[P11N_PUBKEY_LEN])
{
    uint8_t x[32];
    int err = p11n_token_derive_x(tok, priv, p11n_secp256k1_generator, x);
    if (err == P11N_OK && !p11n_ct_eq(x, K + 1, 32))
        err = p11n_token_errorf(P11N_ERR_TOKEN, tok->uri,
            "the key's public key object does not match its private key");
    p11n_wipe(x, sizeof(x));
    return err;
}

static int token_key_open(const char *text, struct p11n_key **out)
{
    P11KitUri *uri;
    char *safe;
    int err = p11n_uri_parse(text, &uri, &safe);
    if (err != P11N_OK)
        return err;
    struct token_key *tk = calloc(1, sizeof(*tk));
    if (tk == NULL) {
        err = P11N_ERR_NOMEM;
        goto out;
    }
    err = p11n_token_open(uri, safe, P11N_TOKEN_LOGIN, &tk->tok);
    if (err == P11N_OK)
        err = p11n_token_check_ecdh(tk->tok);
    if (err == P11N_OK)
        err = find_private(tk->tok, uri, &tk->priv);
    if (err == P11N_OK)
        err = check_private(tk->tok, tk->priv);
    if (err == P11N_OK)
        err = find_public(tk->tok, tk->priv, tk->base.pub);
    if (err == P11N_OK)
        err = self_check(tk->tok, tk->priv, tk->base.pub);
    if (err != P11N_OK) {
        p11n_token_close(tk->tok);
        free(tk);
        goto out;
    }
    tk->base.ops = &tkey_ops;
    tk->base.alg = &p11n_dh_secp256k1;
    *out = &tk->base;
out:
    p11n_uri_free(uri);
    free(safe);
    return err;
}

int p11n_key_load(const char *uri, p11n_key **out)
{
    return p11n_key_load_ex(uri, 0, out);
}

int p11n_key_load_ex(const char *uri, unsigned flags, p11n_key **out)
{
    (void)flags;
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (uri == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_token_error_clear();
    if (strncmp(uri, "file:", 5) == 0)
        return p11n_key_load_file(uri + 5, &p11n_dh_secp256k1, out);
    if (strncmp(uri, "pkcs11:", 7) == 0)
        return token_key_open(uri, out);
    /* The text may hold a PIN: do not repeat it. */
    return p11n_token_errorf(P11N_ERR_URI, NULL, "key URI must start with pkcs11: or file:");
}
