/* The x-only DH memo of a KK responder's act one, and a batch's table of
 * ss values: see key.h. */
#include <string.h>

#include "key.h"
#include "secure.h"

static struct p11n_key_memo *memo_of(struct p11n_key *key)
{
    return (struct p11n_key_memo *)key;
}

/* Whether the token may still be asked (the step's job still wanted). */
static int memo_gate(const struct p11n_key_memo *m)
{
    return m->wanted != NULL ? m->wanted(m->wanted_arg) : P11N_OK;
}

static int memo_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    int rc = memo_gate(memo_of(key));
    return rc == P11N_OK ? p11n_key_dh(memo_of(key)->inner, peer, out) : rc;
}

static int memo_dh_static(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    int rc = memo_gate(memo_of(key));
    return rc == P11N_OK ? p11n_key_dh_static(memo_of(key)->inner, peer, out) : rc;
}

/* ---- the batch's table ---- */

void p11n_ss_table_init(struct p11n_ss_table *t)
{
    memset(t, 0, sizeof(*t));
}

/* The entry for `peer` (a public key: a plain compare), or NULL. */
static struct p11n_ss_entry *table_find(struct p11n_ss_table *t, const uint8_t *peer)
{
    for (size_t i = 0; t != NULL && i < t->n; i++)
        if (memcmp(t->e[i].peer, peer, P11N_PUBKEY_LEN) == 0)
            return &t->e[i];
    return NULL;
}

void p11n_ss_table_admit(struct p11n_ss_table *t, const uint8_t (*peers)[P11N_PUBKEY_LEN],
    size_t n)
{
    for (size_t i = 0; i < n && t->n < P11N_SS_TABLE_KEYS; i++)
        if (table_find(t, peers[i]) == NULL)
            memcpy(t->e[t->n++].peer, peers[i], P11N_PUBKEY_LEN);
}

void p11n_ss_table_wipe(struct p11n_ss_table *t)
{
    p11n_wipe(t, sizeof(*t));
}

/* ---- x-only DH through the memo ---- */

/* x for `peer` without the token: this act's es, or a candidate's ss
 * from the batch. 1 if found. */
static int memo_lookup(struct p11n_key_memo *m, const uint8_t *peer, uint8_t *x)
{
    const struct p11n_ss_entry *e = table_find(m->ss, peer);
    if (e != NULL && e->has) {
        memcpy(x, e->x, sizeof(e->x));
        return 1;
    }
    if (m->has && memcmp(m->peer, peer, m->base.alg->publen) == 0) {
        memcpy(x, m->x, sizeof(m->x));
        return 1;
    }
    return 0;
}

/* Keep a derived x: a candidate's ss in the batch's table; otherwise, if
 * `slot`, in the memo's one slot (es, which every candidate shares). */
static void memo_learn(struct p11n_key_memo *m, const uint8_t *peer, const uint8_t *x, int slot)
{
    struct p11n_ss_entry *e = table_find(m->ss, peer);
    if (e != NULL) {
        memcpy(e->x, x, sizeof(e->x));
        e->has = 1;
    } else if (slot) {
        memcpy(m->peer, peer, m->base.alg->publen);
        memcpy(m->x, x, sizeof(m->x));
        m->has = 1;
    }
}

static int memo_dh_x(struct p11n_key *key, const uint8_t *peer, uint8_t *x)
{
    struct p11n_key_memo *m = memo_of(key);
    if (memo_lookup(m, peer, x))
        return P11N_OK;
    int rc = memo_gate(m);
    if (rc == P11N_OK)
        rc = p11n_key_dh_x(m->inner, peer, x);
    if (rc == P11N_OK)
        memo_learn(m, peer, x, 1);
    return rc;
}

/* A pair asks the token only for what the memo and the table lack. Of a
 * pair outside the table, the first (es, which all candidates share) is
 * the one kept. */
static int memo_dh_x2(struct p11n_key *key, const uint8_t *peer1, const uint8_t *peer2,
    uint8_t *x1, uint8_t *x2)
{
    struct p11n_key_memo *m = memo_of(key);
    int has1 = memo_lookup(m, peer1, x1), has2 = memo_lookup(m, peer2, x2);
    if (has1 && has2)
        return P11N_OK;
    int rc = memo_gate(m);
    if (rc == P11N_OK && !has1 && !has2)
        rc = p11n_key_dh_x2(m->inner, peer1, peer2, x1, x2);
    else if (rc == P11N_OK)
        rc = has1 ? p11n_key_dh_x(m->inner, peer2, x2) : p11n_key_dh_x(m->inner, peer1, x1);
    if (rc != P11N_OK)
        return rc;
    if (!has1)
        memo_learn(m, peer1, x1, 1);
    if (!has2)
        memo_learn(m, peer2, x2, 0);
    return P11N_OK;
}

static int memo_knows_static(struct p11n_key *key, const uint8_t *peer)
{
    struct p11n_key *inner = memo_of(key)->inner;
    return inner->ops->knows_static != NULL && inner->ops->knows_static(inner, peer);
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
        .knows_static = memo_knows_static,
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

void p11n_key_memo_gate(struct p11n_key_memo *m, p11n_key_wanted_fn wanted, void *arg,
    struct p11n_ss_table *ss)
{
    m->wanted = wanted;
    m->wanted_arg = arg;
    m->ss = ss;
}
