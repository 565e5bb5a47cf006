/* An x-only test key: see xkey.h. */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "key.h"
#include "secure.h"
#include "tokenx.h"
#include "xkey.h"

struct xkey {
    struct p11n_key base;       /* first: the engine sees only this */
    uint8_t priv[32];
    void (*mark)(void *p, size_t len);
    struct t_xkey_counts counts;
};

static int x_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    struct xkey *k = (struct xkey *)key;
    k->counts.dh++;
    return p11n_dh_secp256k1.dh(k->priv, peer, out);
}

static int x_dh_static(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    struct xkey *k = (struct xkey *)key;
    k->counts.dh_static++;
    return p11n_dh_secp256k1.dh(k->priv, peer, out);
}

static int x_dh_x(struct p11n_key *key, const uint8_t *peer, uint8_t *x)
{
    struct xkey *k = (struct xkey *)key;
    k->counts.dh_x++;
    if (t_token_x(k->priv, peer, x) != 0)
        return P11N_ERR_BAD_PUBKEY;
    if (k->mark != NULL)
        k->mark(x, 32);
    return P11N_OK;
}

static int x_dh_x2(struct p11n_key *key, const uint8_t *p1, const uint8_t *p2, uint8_t *x1,
    uint8_t *x2)
{
    ((struct xkey *)key)->counts.dh_x_pairs++;
    int rc = x_dh_x(key, p1, x1);
    return rc == P11N_OK ? x_dh_x(key, p2, x2) : rc;
}

static void x_destroy(struct p11n_key *key)
{
    p11n_wipe(key, sizeof(struct xkey));
    free(key);
}

static const struct p11n_key_ops xkey_ops = {
    .kind = "test-x-only",
    .slow = 0,
    .dh = x_dh,
    .dh_static = x_dh_static,
    .dh_x = x_dh_x,
    .dh_x2 = x_dh_x2,
    .destroy = x_destroy,
};

p11n_key *t_xkey_new(const uint8_t *priv, void (*mark)(void *p, size_t len))
{
    struct xkey *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->base.ops = &xkey_ops;
    k->base.alg = &p11n_dh_secp256k1;
    k->mark = mark;
    int rc;
    if (priv != NULL) {
        memcpy(k->priv, priv, 32);
        rc = p11n_dh_secp256k1.pubkey(k->priv, k->base.pub);
    } else {
        rc = p11n_dh_secp256k1.generate(k->priv, k->base.pub);
    }
    if (rc != P11N_OK) {
        x_destroy(&k->base);
        return NULL;
    }
    return &k->base;
}

struct t_xkey_counts t_xkey_counts(p11n_key *key)
{
    return ((struct xkey *)key)->counts;
}

void t_xkey_reset(p11n_key *key)
{
    memset(&((struct xkey *)key)->counts, 0, sizeof(struct t_xkey_counts));
}
