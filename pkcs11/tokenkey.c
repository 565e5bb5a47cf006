/* A static key whose private half lives in a PKCS#11 token: the same
 * handle as a software key, with dh() done by the token. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"
#include "secp256k1_x.h"
#include "secure.h"
#include "token.h"

/* Peers whose static-static parity a key remembers (34 bytes each). */
#define P11N_PARITY_CACHE 256

struct token_key {
    struct p11n_key base;       /* first: the engine sees only this */
    struct p11n_token *tok;     /* holds the key's handle (tok->key) */
    /* The key URI as given, pin-value included: recovery logs in with it
     * again (and reads pin-source again). Wiped before it is freed. */
    char *text;
    unsigned flags;             /* P11N_KEY_DEV_ALLOW_EXTRACTABLE */
    char warning[512];          /* base.warning points here when not empty */
    /* The y parity of k·P for peers' static keys P: the bit only, never
     * the DH value. A static-static DH is the same in every handshake
     * with that peer, so once the bit is known each one costs a single
     * derivation. Bounded; the oldest entry makes room. */
    pthread_mutex_t lock;
    struct parity_entry {
        uint8_t peer[P11N_PUBKEY_LEN];
        uint8_t bit;
    } parity[P11N_PARITY_CACHE];
    size_t nparity, next_parity;
};

/* Thread-safe: each call borrows its own session from the token's pool. */
static int tkey_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    struct token_key *tk = (struct token_key *)key;
    return p11n_token_ecdh(tk->tok, key->pub, peer, out, NULL);
}

static int tkey_dh_x(struct p11n_key *key, const uint8_t *peer, uint8_t *x)
{
    return p11n_token_ecdh_x(((struct token_key *)key)->tok, peer, x);
}

static int tkey_dh_x2(struct p11n_key *key, const uint8_t *p1, const uint8_t *p2, uint8_t *x1,
    uint8_t *x2)
{
    return p11n_token_ecdh_x2(((struct token_key *)key)->tok, p1, p2, x1, x2);
}

/* The remembered parity for `peer`: 1 and *bit, or 0. The lookup is on
 * the public key; the bit is only copied. */
static int parity_get(struct token_key *tk, const uint8_t *peer, uint8_t *bit)
{
    int found = 0;
    pthread_mutex_lock(&tk->lock);
    for (size_t i = 0; i < tk->nparity && !found; i++)
        if (memcmp(tk->parity[i].peer, peer, P11N_PUBKEY_LEN) == 0) {
            *bit = tk->parity[i].bit;
            found = 1;
        }
    pthread_mutex_unlock(&tk->lock);
    return found;
}

static void parity_put(struct token_key *tk, const uint8_t *peer, uint8_t bit)
{
    uint8_t old;
    if (parity_get(tk, peer, &old))
        return;
    pthread_mutex_lock(&tk->lock);
    struct parity_entry *e = &tk->parity[tk->next_parity];
    memcpy(e->peer, peer, P11N_PUBKEY_LEN);
    e->bit = bit;
    tk->next_parity = (tk->next_parity + 1) % P11N_PARITY_CACHE;
    if (tk->nparity < P11N_PARITY_CACHE)
        tk->nparity++;
    pthread_mutex_unlock(&tk->lock);
}

/* DH with a peer's static key: one derivation once the parity is known,
 * else the two-derivation recovery, which teaches it. */
static int tkey_dh_static(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    struct token_key *tk = (struct token_key *)key;
    uint8_t bit = 0, x[32];
    int err;
    if (parity_get(tk, peer, &bit)) {
        err = p11n_token_ecdh_x(tk->tok, peer, x);
        if (err == P11N_OK)
            err = p11n_secp256k1_dh_of_x(x, bit, out);
        p11n_wipe(x, sizeof(x));
    } else {
        err = p11n_token_ecdh(tk->tok, key->pub, peer, out, &bit);
        if (err == P11N_OK)
            parity_put(tk, peer, bit);
    }
    p11n_wipe(&bit, sizeof(bit));
    return err;
}

static int tkey_knows_static(struct p11n_key *key, const uint8_t *peer)
{
    uint8_t bit = 0;
    int known = parity_get((struct token_key *)key, peer, &bit);
    p11n_wipe(&bit, sizeof(bit));
    return known;
}

static void tkey_free(struct token_key *tk)
{
    p11n_token_close(tk->tok);
    pthread_mutex_destroy(&tk->lock);
    p11n_wipe(tk->parity, sizeof(tk->parity));
    if (tk->text != NULL) {
        p11n_wipe(tk->text, strlen(tk->text));
        free(tk->text);
    }
    free(tk);
}

static void tkey_destroy(struct p11n_key *key)
{
    tkey_free((struct token_key *)key);
}

static const struct p11n_key_ops tkey_ops = {
    .kind = "pkcs11",
    .slow = 1,
    .dh = tkey_dh,
    .dh_static = tkey_dh_static,
    .knows_static = tkey_knows_static,
    .dh_x = tkey_dh_x,
    .dh_x2 = tkey_dh_x2,
    .destroy = tkey_destroy,
};

struct p11n_token *p11n_token_of_key(struct p11n_key *key)
{
    if (key == NULL || key->ops != &tkey_ops)
        return NULL;
    return ((struct token_key *)key)->tok;
}

/* Why a key is weaker than it should be; each is said once. */
static const char WARN_EXTRACTABLE[] =
    "private key is extractable or not sensitive: it can be read out of the token; "
    "allowed for development only";
static const char WARN_PUB_PUBLIC[] =
    "public-key object can be changed without the PIN: anyone with access to the token "
    "could break every handshake; re-create the key with p11noise keygen";
static const char WARN_PUB_MODIFIABLE[] =
    "public-key object is modifiable: a change to it would break every handshake; "
    "re-create the key with p11noise keygen";

static void add_warning(char *buf, size_t cap, const char *text)
{
    if (buf == NULL || strstr(buf, text) != NULL)
        return;
    size_t used = strlen(buf);
    snprintf(buf + used, cap - used, "%s%s", used ? "; " : "", text);
}

/* 1 if the object reads back as CKA_PRIVATE true. */
static int is_private(struct p11n_token *tok, CK_OBJECT_HANDLE h)
{
    uint8_t *v = NULL;
    size_t len = 0;
    int ok = p11n_token_attr(tok, tok->anchor, h, CKA_PRIVATE, &v, &len) == P11N_OK &&
        v != NULL && len == sizeof(CK_BBOOL) && *(CK_BBOOL *)v == CK_TRUE;
    free(v);
    return ok;
}

/* The one private key the URI's object attributes (object=, id=, type=)
 * name. Only CKA_PRIVATE objects count, in the search and when read back:
 * anyone who reaches the token without the PIN can create a public
 * object of class CKO_PRIVATE_KEY under our label, and such a planted
 * object must neither be used nor make the real key ambiguous. */
static int find_private(struct p11n_token *tok, P11KitUri *uri, CK_OBJECT_HANDLE *out)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE tmpl[4] = { { CKA_CLASS, &cls, sizeof(cls) },
                             { CKA_PRIVATE, &yes, sizeof(yes) } };
    CK_ULONG n = 2;
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
    size_t kept = 0;
    for (size_t i = 0; i < count; i++)
        if (is_private(tok, h[i]))
            h[kept++] = h[i];
    count = kept;
    if (count == 1)
        *out = h[0];
    free(h);
    if (count == 0)
        return p11n_token_errorf(P11N_ERR_KEY_NOT_FOUND, tok->uri,
            "no private key matches (only CKA_PRIVATE objects are used)");
    if (count > 1)
        return p11n_token_errorf(P11N_ERR_URI, tok->uri,
            "%zu private keys match: name one with object= or id=", count);
    return P11N_OK;
}

/* Fail early, with the reason, for keys the DH cannot use, and refuse a
 * key the token would let out unless the application allows it. */
static int check_private(struct p11n_token *tok, CK_OBJECT_HANDLE priv, unsigned flags,
    char *warn, size_t cap)
{
    CK_KEY_TYPE type = 0;
    CK_BBOOL derive = CK_FALSE, extractable = CK_TRUE, sensitive = CK_FALSE;
    uint8_t params[32];
    CK_ATTRIBUTE a[] = {
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_DERIVE, &derive, sizeof(derive) },
        { CKA_EC_PARAMS, params, sizeof(params) },
        { CKA_EXTRACTABLE, &extractable, sizeof(extractable) },
        { CKA_SENSITIVE, &sensitive, sizeof(sensitive) },
    };
    CK_RV rv = tok->fn->C_GetAttributeValue(tok->anchor, priv, a, 5);
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
    /* An attribute the token does not report counts as the unsafe value. */
    int leaks = a[3].ulValueLen != sizeof(CK_BBOOL) || extractable != CK_FALSE ||
                a[4].ulValueLen != sizeof(CK_BBOOL) || sensitive != CK_TRUE;
    if (leaks && !(flags & P11N_KEY_DEV_ALLOW_EXTRACTABLE))
        return p11n_token_errorf(P11N_ERR_KEY_EXTRACTABLE, tok->uri,
            "the private key is %s: its value can be read out of the token; re-create it "
            "with p11noise keygen (P11N_KEY_DEV_ALLOW_EXTRACTABLE allows it for development)",
            extractable != CK_FALSE ? "extractable" : "not sensitive");
    if (leaks)
        add_warning(warn, cap, WARN_EXTRACTABLE);
    return P11N_OK;
}

/* Whether a public-key object needed the PIN to be created and cannot be
 * changed: 2 private and not modifiable, 1 private but modifiable, 0
 * public (anyone with a session could have written it). */
static int pub_trust(struct p11n_token *tok, CK_OBJECT_HANDLE h)
{
    CK_BBOOL priv = CK_FALSE, modifiable = CK_TRUE;
    CK_ATTRIBUTE a[] = {
        { CKA_PRIVATE, &priv, sizeof(priv) },
        { CKA_MODIFIABLE, &modifiable, sizeof(modifiable) },
    };
    CK_RV rv = tok->fn->C_GetAttributeValue(tok->anchor, h, a, 2);
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID)
        return 0;
    if (a[0].ulValueLen != sizeof(priv) || priv != CK_TRUE)
        return 0;
    return a[1].ulValueLen == sizeof(modifiable) && modifiable == CK_FALSE ? 2 : 1;
}

/* The point of one candidate public-key object: P11N_OK, or
 * KEY_NOT_FOUND for a ceremony object or one without a valid point. */
static int pub_point(struct p11n_token *tok, CK_OBJECT_HANDLE h, uint8_t K[P11N_PUBKEY_LEN])
{
    uint8_t *oid = NULL, *pt = NULL;
    size_t oidlen = 0, ptlen = 0;
    int err = P11N_ERR_KEY_NOT_FOUND;
    /* A ceremony object never stands for our own key. */
    if (p11n_token_attr(tok, tok->anchor, h, CKA_ID, &oid, &oidlen) == P11N_OK &&
        !p11n_is_peer_id(oid, oidlen) &&
        p11n_token_attr(tok, tok->anchor, h, CKA_EC_POINT, &pt, &ptlen) == P11N_OK &&
        pt != NULL && p11n_ec_point_decode(pt, ptlen, K) == P11N_OK)
        err = P11N_OK;
    free(oid);
    free(pt);
    return err;
}

/* Of the candidates, the most trusted; two of that trust that disagree
 * are refused. */
static int pick_public(struct p11n_token *tok, const CK_OBJECT_HANDLE *h, size_t n,
    uint8_t K[P11N_PUBKEY_LEN], int *trust)
{
    int best = -1, clash = 0;
    uint8_t cand[P11N_PUBKEY_LEN];
    for (size_t i = 0; i < n; i++) {
        if (pub_point(tok, h[i], cand) != P11N_OK)
            continue;
        int t = pub_trust(tok, h[i]);
        if (t > best) {
            best = t;
            clash = 0;
            memcpy(K, cand, sizeof(cand));
        } else if (t == best && memcmp(K, cand, sizeof(cand)) != 0) {
            clash = 1;
        }
    }
    *trust = best;
    if (best < 0)
        return p11n_token_errorf(P11N_ERR_KEY_NOT_FOUND, tok->uri,
            "no public key object with the private key's CKA_ID: its public half "
            "must be on the token too");
    if (clash)
        return p11n_token_errorf(P11N_ERR_TOKEN, tok->uri,
            "two public-key objects for this key hold different points: remove the wrong one");
    return P11N_OK;
}

/* K = k·G with its sign, from the public key object that shares the
 * private key's CKA_ID (or, without an ID, its label), preferring one that
 * needed the PIN to be written. */
static int find_public(struct p11n_token *tok, CK_OBJECT_HANDLE priv, uint8_t K[P11N_PUBKEY_LEN],
    char *warn, size_t cap)
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
    int trust = 0;
    if (err == P11N_OK)
        err = pick_public(tok, h, n, K, &trust);
    if (err == P11N_OK && trust < 2)
        add_warning(warn, cap, trust == 0 ? WARN_PUB_PUBLIC : WARN_PUB_MODIFIABLE);
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

/* Find the URI's key on the opened token and check everything about it:
 * at load and again after each recovery. */
static int locate(struct token_key *tk, P11KitUri *uri, CK_OBJECT_HANDLE *priv,
    uint8_t K[P11N_PUBKEY_LEN], char *warn, size_t cap)
{
    int err = p11n_token_check_ecdh(tk->tok);
    if (err == P11N_OK)
        err = find_private(tk->tok, uri, priv);
    if (err == P11N_OK)
        err = check_private(tk->tok, *priv, tk->flags, warn, cap);
    if (err == P11N_OK)
        err = find_public(tk->tok, *priv, K, warn, cap);
    if (err == P11N_OK)
        err = self_check(tk->tok, *priv, K);
    return err;
}

/* Recovery: log in again with the URI as given and find the same key. */
static int tkey_relocate(struct p11n_token *tok, void *arg, CK_OBJECT_HANDLE *key)
{
    struct token_key *tk = arg;
    P11KitUri *uri;
    char *safe;
    int err = p11n_uri_parse(tk->text, &uri, &safe);
    if (err != P11N_OK)
        return err;
    free(safe);
    uint8_t K[P11N_PUBKEY_LEN];
    err = p11n_token_reopen(tok, uri);
    /* Warnings were given at load; the key must be the same one. */
    if (err == P11N_OK)
        err = locate(tk, uri, key, K, NULL, 0);
    if (err == P11N_OK && !p11n_ct_eq(K, tk->base.pub, sizeof(K)))
        err = p11n_token_errorf(P11N_ERR_TOKEN, tok->uri,
            "after the token came back, the URI names another key (its public key "
            "differs): not using it");
    p11n_uri_free(uri);
    return err;
}

static int token_key_open(const char *text, unsigned flags, struct p11n_key **out)
{
    P11KitUri *uri;
    char *safe;
    int err = p11n_uri_parse(text, &uri, &safe);
    if (err != P11N_OK)
        return err;
    struct token_key *tk = calloc(1, sizeof(*tk));
    if (tk == NULL || (tk->text = strdup(text)) == NULL) {
        free(tk);
        err = P11N_ERR_NOMEM;
        goto out;
    }
    tk->flags = flags;
    pthread_mutex_init(&tk->lock, NULL);
    err = p11n_token_open(uri, safe, P11N_TOKEN_LOGIN, &tk->tok);
    CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE;
    if (err == P11N_OK)
        err = locate(tk, uri, &priv, tk->base.pub, tk->warning, sizeof(tk->warning));
    if (err != P11N_OK) {
        tkey_free(tk);
        goto out;
    }
    tk->tok->key = priv;
    tk->tok->relocate = tkey_relocate;
    tk->tok->relocate_arg = tk;
    tk->base.ops = &tkey_ops;
    tk->base.alg = &p11n_dh_secp256k1;
    tk->base.warning = tk->warning[0] != '\0' ? tk->warning : NULL;
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
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (uri == NULL || (flags & ~P11N_KEY_DEV_ALLOW_EXTRACTABLE) != 0)
        return P11N_ERR_INVALID_ARG;
    p11n_token_error_clear();
    if (strncmp(uri, "file:", 5) == 0)
        return p11n_key_load_file(uri + 5, &p11n_dh_secp256k1, out);
    if (strncmp(uri, "pkcs11:", 7) == 0)
        return token_key_open(uri, flags, out);
    /* The text may hold a PIN: do not repeat it. */
    return p11n_token_errorf(P11N_ERR_URI, NULL, "key URI must start with pkcs11: or file:");
}
