/* The x-only DH memo of a KK responder's act one: see key.h. */
#include <string.h>

#include "key.h"
#include "secure.h"

static struct p11n_key_memo *memo_of(struct p11n_key *key)
{
    return (struct p11n_key_memo *)key;
}

static int memo_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    return p11n_key_dh(memo_of(key)->inner, peer, out);
}

static int memo_dh_static(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    return p11n_key_dh_static(memo_of(key)->inner, peer, out);
}

/* Whether the memo holds x for `peer` (a public key: a plain compare). */
static int memo_hit(const struct p11n_key_memo *m, const uint8_t *peer)
{
    return m->has && memcmp(m->peer, peer, m->base.alg->publen) == 0;
}

static void memo_keep(struct p11n_key_memo *m, const uint8_t *peer, const uint8_t *x)
{
    memcpy(m->peer, peer, m->base.alg->publen);
    memcpy(m->x, x, sizeof(m->x));
    m->has = 1;
}

static int memo_dh_x(struct p11n_key *key, const uint8_t *peer, uint8_t *x)
{
    struct p11n_key_memo *m = memo_of(key);
    if (memo_hit(m, peer)) {
        memcpy(x, m->x, sizeof(m->x));
        return P11N_OK;
    }
    int rc = p11n_key_dh_x(m->inner, peer, x);
    if (rc == P11N_OK)
        memo_keep(m, peer, x);
    return rc;
}

/* The first of the pair (es, which all candidates share) is the one kept. */
static int memo_dh_x2(struct p11n_key *key, const uint8_t *peer1, const uint8_t *peer2,
    uint8_t *x1, uint8_t *x2)
{
    struct p11n_key_memo *m = memo_of(key);
    if (memo_hit(m, peer1)) {
        memcpy(x1, m->x, sizeof(m->x));
        return p11n_key_dh_x(m->inner, peer2, x2);
    }
    int rc = p11n_key_dh_x2(m->inner, peer1, peer2, x1, x2);
    if (rc == P11N_OK)
        memo_keep(m, peer1, x1);
    return rc;
}

static void memo_destroy(struct p11n_key *key)
{
    p11n_key_memo_forget(memo_of(key));   /* borrowed: nothing else to free */
}

void p11n_key_memo_init(struct p11n_key_memo *m, struct p11n_key *inner)
{
    memset(m, 0, sizeof(*m));
    m->inner = inner;
    m->ops = (struct p11n_key_ops){
        .kind = inner->ops->kind,
        .slow = inner->ops->slow,
        .dh = memo_dh,
        .dh_static = memo_dh_static,
        /* only a key that gives x only gets the memo's x-only calls */
        .dh_x = inner->ops->dh_x != NULL ? memo_dh_x : NULL,
        .dh_x2 = inner->ops->dh_x != NULL ? memo_dh_x2 : NULL,
        .destroy = memo_destroy,
    };
    m->base.ops = &m->ops;
    m->base.alg = inner->alg;
    memcpy(m->base.pub, inner->pub, sizeof(m->base.pub));
    m->base.warning = inner->warning;
}

void p11n_key_memo_forget(struct p11n_key_memo *m)
{
    p11n_wipe(m->x, sizeof(m->x));
    m->has = 0;
}
