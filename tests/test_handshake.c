/* The wire handshake: BOLT #8 vectors in both roles with every failure,
 * KK and XK in memory, candidate selection, tampering, fail-closed. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "p11noise.h"
#include "testutil.h"
#include "bolt8case.h"
#include "softhsm.h"
#include "xkey.h"

#define XK_PROTO "Noise_XK_secp256k1_ChaChaPoly_SHA256"
#define MAX_ACT 128

static json_t *vectors;

static json_t *case_named(const char *name)
{
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(vectors, "cases"), i, item) {
        const char *n = json_string_value(json_object_get(item, "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return item;
    }
    return NULL;
}

static p11n_key *key_from_hex(json_t *obj, const char *field)
{
    uint8_t *priv = t_hex_field(obj, field, 32);
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(p11n_key_from_private("secp256k1", priv, 32, &k) == P11N_OK);
    free(priv);
    return k;
}

static p11n_key *fresh_key(void)
{
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(p11n_key_generate("secp256k1", &k) == P11N_OK);
    return k;
}

static void pub_of(const p11n_key *k, uint8_t pub[P11N_PUBKEY_LEN])
{
    size_t n = 0;
    CU_ASSERT_FATAL(p11n_key_public(k, pub, P11N_PUBKEY_LEN, &n) == P11N_OK);
    CU_ASSERT_FATAL(n == P11N_PUBKEY_LEN);
}

/* Exchange messages both ways: every frame must decode at the peer.
 * Enough messages to cross the 500-message rotation in each direction. */
static void exchange(p11n_transport *a, p11n_transport *b, unsigned count)
{
    static uint8_t frame[300 + P11N_FRAME_OVERHEAD];
    uint64_t seed = count;
    for (unsigned i = 0; i < count; i++) {
        for (int dir = 0; dir < 2; dir++) {
            p11n_transport *from = dir == 0 ? a : b, *to = dir == 0 ? b : a;
            uint8_t m[300];
            size_t len = t_rand(&seed) % sizeof(m), flen = 0;
            t_fill(m, len, &seed);
            CU_ASSERT_FATAL(p11n_transport_seal(from, m, len, frame, sizeof(frame), &flen)
                == P11N_OK);
            const uint8_t *got = NULL;
            size_t glen = 0, used = 0;
            CU_ASSERT_FATAL(p11n_transport_feed(to, frame, flen, &used, &got, &glen) == 1);
            CU_ASSERT_FATAL(used == flen && glen == len && memcmp(got, m, len) == 0);
        }
    }
}


/* Run one BOLT #8 vector case with a software key from ls_priv. */
static void run_vector(json_t *c, const uint8_t *ck)
{
    p11n_key *local = key_from_hex(c, "ls_priv");
    /* The vectors' initiator uses the static key 0x11..11. */
    uint8_t *ipub = t_hex_field(case_named("transport-initiator successful handshake"),
        "ls_pub", P11N_PUBKEY_LEN);
    t_bolt8_run_case(c, local, ck, ipub);
    free(ipub);
    p11n_key_free(local);
}

static void test_bolt8_vectors(void)
{
    json_t *msg = case_named("transport-message test");
    CU_ASSERT_FATAL(msg != NULL);
    /* The handshake's final ck is the one the message vectors start from. */
    uint8_t *ck = t_hex_field(msg, "ck", 32);
    size_t i, ran = 0, errors = 0;
    json_t *c;
    json_array_foreach(json_object_get(vectors, "cases"), i, c) {
        json_t *steps = json_object_get(c, "steps");
        if (steps == NULL)
            continue;
        run_vector(c, ck);
        ran++;
        size_t j;
        json_t *s;
        json_array_foreach(steps, j, s)
            errors += json_object_get(s, "error") != NULL;
    }
    CU_ASSERT(ran == 15);
    CU_ASSERT(errors == 13);
    free(ck);
}

/* Drive two handshakes against each other. Returns the first error and in
 * which act (1-based) it happened; `flip` (bit index, or -1) corrupts act
 * `flip_act` in flight. */
typedef struct {
    int rc;
    int act;
    int side;     /* who failed: 0 initiator, 1 responder */
} outcome;

static outcome run(p11n_handshake *i, p11n_handshake *r, int flip_act, long flip)
{
    outcome o = { P11N_OK, 0, 0 };
    p11n_handshake *side[2] = { i, r };
    for (int act = 1; act <= 3; act++) {
        p11n_handshake *w = side[(act - 1) % 2], *rd = side[act % 2];
        if (p11n_handshake_done(w) && p11n_handshake_done(rd))
            break;
        uint8_t buf[MAX_ACT];
        size_t n = 0;
        CU_ASSERT_FATAL(p11n_handshake_want(w) == 0);
        o.rc = p11n_handshake_write(w, buf, sizeof(buf), &n);
        if (o.rc != P11N_OK) {
            o.act = act;
            o.side = (act - 1) % 2;
            return o;
        }
        CU_ASSERT_FATAL(p11n_handshake_want(rd) == n);
        if (act == flip_act && flip >= 0)
            buf[flip / 8] ^= (uint8_t)(1u << (flip % 8));
        o.rc = p11n_handshake_read(rd, buf, n);
        if (o.rc != P11N_OK) {
            o.act = act;
            o.side = act % 2;
            return o;
        }
    }
    CU_ASSERT(p11n_handshake_done(i) && p11n_handshake_done(r));
    return o;
}

typedef struct {
    p11n_key *ik, *rk;
    uint8_t ipub[P11N_PUBKEY_LEN], rpub[P11N_PUBKEY_LEN];
    p11n_handshake_config icfg, rcfg;
} pair;

/* A pair whose initiator (xi) or responder (xr) key is x-only (as a token
 * key: tests/xkey.h). */
static void pair_init_keys(pair *p, const char *pattern, int xi, int xr)
{
    memset(p, 0, sizeof(*p));
    p->ik = xi ? t_xkey_new(NULL, NULL) : fresh_key();
    p->rk = xr ? t_xkey_new(NULL, NULL) : fresh_key();
    CU_ASSERT_FATAL(p->ik != NULL && p->rk != NULL);
    pub_of(p->ik, p->ipub);
    pub_of(p->rk, p->rpub);
    p->icfg = (p11n_handshake_config){ .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .local = p->ik, .remote = &p->rpub, .nremote = 1 };
    p->rcfg = (p11n_handshake_config){ .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .local = p->rk };
    if (strcmp(pattern, "KK") == 0) {
        p->rcfg.remote = &p->ipub;
        p->rcfg.nremote = 1;
    }
}

static void pair_init(pair *p, const char *pattern)
{
    pair_init_keys(p, pattern, 0, 0);
}

static void pair_free(pair *p)
{
    p11n_key_free(p->ik);
    p11n_key_free(p->rk);
}

static outcome pair_run(pair *p, int flip_act, long flip, p11n_transport **ti,
    p11n_transport **tr)
{
    p11n_handshake *i = NULL, *r = NULL;
    CU_ASSERT_FATAL(p11n_handshake_initiate(&p->icfg, &i) == P11N_OK);
    CU_ASSERT_FATAL(p11n_handshake_respond(&p->rcfg, &r) == P11N_OK);
    outcome o = run(i, r, flip_act, flip);
    if (o.rc == P11N_OK && ti != NULL) {
        uint8_t peer[P11N_PUBKEY_LEN];
        CU_ASSERT(p11n_handshake_remote(i, peer) == P11N_OK
            && memcmp(peer, p->rpub, P11N_PUBKEY_LEN) == 0);
        CU_ASSERT(p11n_handshake_remote(r, peer) == P11N_OK
            && memcmp(peer, p->ipub, P11N_PUBKEY_LEN) == 0);
        CU_ASSERT_FATAL(p11n_handshake_finish(i, ti) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_finish(r, tr) == P11N_OK);
    }
    if (o.rc != P11N_OK) {
        /* The failed side refuses everything. */
        p11n_handshake *dead = o.side == 0 ? i : r;
        uint8_t buf[MAX_ACT];
        size_t n;
        p11n_transport *t = NULL;
        CU_ASSERT(p11n_handshake_want(dead) == 0);
        CU_ASSERT(p11n_handshake_read(dead, buf, 50) == P11N_ERR_STATE);
        CU_ASSERT(p11n_handshake_write(dead, buf, sizeof(buf), &n) == P11N_ERR_STATE);
        CU_ASSERT(p11n_handshake_finish(dead, &t) == P11N_ERR_STATE && t == NULL);
    }
    p11n_handshake_free(i);
    p11n_handshake_free(r);
    return o;
}

static void in_memory(const char *pattern)
{
    pair p;
    pair_init(&p, pattern);
    p11n_transport *ti = NULL, *tr = NULL;
    outcome o = pair_run(&p, 0, -1, &ti, &tr);
    CU_ASSERT_FATAL(o.rc == P11N_OK);
    exchange(ti, tr, 1100);
    p11n_transport_free(ti);
    p11n_transport_free(tr);
    pair_free(&p);
}

static void test_kk_in_memory(void)
{
    in_memory("KK");
}

static void test_xk_in_memory(void)
{
    in_memory("XK");
}

static void test_act_sizes(void)
{
    static const struct {
        const char *pattern;
        size_t acts[3];
    } sizes[] = { { "KK", { 50, 50, 0 } }, { "XK", { 50, 50, 66 } } };
    for (size_t s = 0; s < 2; s++) {
        pair p;
        pair_init(&p, sizes[s].pattern);
        p11n_handshake *hs[2] = { NULL, NULL };
        CU_ASSERT_FATAL(p11n_handshake_initiate(&p.icfg, &hs[0]) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_respond(&p.rcfg, &hs[1]) == P11N_OK);
        for (int act = 0; act < 3 && sizes[s].acts[act] != 0; act++) {
            uint8_t buf[MAX_ACT];
            size_t n = 0;
            CU_ASSERT(p11n_handshake_want(hs[(act + 1) % 2]) == sizes[s].acts[act]);
            CU_ASSERT(p11n_handshake_write(hs[act % 2], buf, sizes[s].acts[act] - 1, &n)
                == P11N_ERR_BUFFER_TOO_SMALL);   /* retryable */
            CU_ASSERT_FATAL(p11n_handshake_write(hs[act % 2], buf, sizeof(buf), &n) == P11N_OK);
            CU_ASSERT(n == sizes[s].acts[act] && buf[0] == 0);
            CU_ASSERT_FATAL(p11n_handshake_read(hs[(act + 1) % 2], buf, n) == P11N_OK);
        }
        CU_ASSERT(p11n_handshake_done(hs[0]) && p11n_handshake_done(hs[1]));
        CU_ASSERT(p11n_handshake_want(hs[0]) == 0 && p11n_handshake_want(hs[1]) == 0);
        p11n_handshake_free(hs[0]);
        p11n_handshake_free(hs[1]);
        pair_free(&p);
    }
}

static void test_wrong_prologue(void)
{
    static const uint8_t other[] = "p11noise/2";
    /* KK: the responder cannot tell a wrong prologue from a wrong peer. */
    const char *patterns[] = { "KK", "XK" };
    const int want[] = { P11N_ERR_UNKNOWN_PEER, P11N_ERR_BAD_TAG };
    for (int k = 0; k < 2; k++) {
        pair p;
        pair_init(&p, patterns[k]);
        p.icfg.prologue = other;
        p.icfg.prologue_len = sizeof(other) - 1;
        outcome o = pair_run(&p, 0, -1, NULL, NULL);
        CU_ASSERT(o.rc == want[k] && o.act == 1 && o.side == 1);
        /* The same explicit prologue on both sides works. */
        p.rcfg.prologue = other;
        p.rcfg.prologue_len = sizeof(other) - 1;
        o = pair_run(&p, 0, -1, NULL, NULL);
        CU_ASSERT(o.rc == P11N_OK);
        pair_free(&p);
    }
}

static void test_wrong_remote(void)
{
    uint8_t stranger[P11N_PUBKEY_LEN];
    p11n_key *s = fresh_key();
    pub_of(s, stranger);

    /* The initiator aims at the wrong responder key. */
    pair p;
    pair_init(&p, "KK");
    p.icfg.remote = &stranger;
    outcome o = pair_run(&p, 0, -1, NULL, NULL);
    CU_ASSERT(o.rc == P11N_ERR_UNKNOWN_PEER && o.act == 1 && o.side == 1);
    pair_free(&p);

    pair_init(&p, "XK");
    p.icfg.remote = &stranger;
    o = pair_run(&p, 0, -1, NULL, NULL);
    CU_ASSERT(o.rc == P11N_ERR_BAD_TAG && o.act == 1 && o.side == 1);
    pair_free(&p);

    /* XK responder with a peer list: the act-3 key must be in it. */
    pair_init(&p, "XK");
    p.rcfg.remote = &stranger;
    p.rcfg.nremote = 1;
    p11n_handshake *i = NULL, *r = NULL;
    CU_ASSERT_FATAL(p11n_handshake_initiate(&p.icfg, &i) == P11N_OK);
    CU_ASSERT_FATAL(p11n_handshake_respond(&p.rcfg, &r) == P11N_OK);
    o = run(i, r, 0, -1);
    CU_ASSERT(o.rc == P11N_ERR_UNKNOWN_PEER && o.act == 3 && o.side == 1);
    uint8_t seen[P11N_PUBKEY_LEN];
    /* A refused key is no authenticated peer: it is not reported. */
    CU_ASSERT(p11n_handshake_remote(r, seen) == P11N_ERR_STATE);
    p11n_handshake_free(i);
    p11n_handshake_free(r);

    uint8_t both[2][P11N_PUBKEY_LEN];
    memcpy(both[0], stranger, P11N_PUBKEY_LEN);
    memcpy(both[1], p.ipub, P11N_PUBKEY_LEN);
    p.rcfg.remote = both;
    p.rcfg.nremote = 2;
    o = pair_run(&p, 0, -1, NULL, NULL);
    CU_ASSERT(o.rc == P11N_OK);
    pair_free(&p);
    p11n_key_free(s);
}

/* p11n_handshake_remote reports a key only once it is authenticated, that
 * is when the handshake is done: not the initiator's configured key
 * before its final act, not the KK responder's candidate that act one
 * picked, not the XK responder's act-three key before the act verified. */
static void test_remote_only_when_authenticated(void)
{
    const char *patterns[] = { "KK", "XK" };
    for (size_t k = 0; k < 2; k++) {
        pair p;
        pair_init(&p, patterns[k]);
        p11n_handshake *hs[2] = { NULL, NULL };
        CU_ASSERT_FATAL(p11n_handshake_initiate(&p.icfg, &hs[0]) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_respond(&p.rcfg, &hs[1]) == P11N_OK);
        uint8_t got[P11N_PUBKEY_LEN];
        int acts = k == 0 ? 2 : 3;
        for (int act = 1; act <= acts; act++) {
            for (int side = 0; side < 2; side++)
                CU_ASSERT(p11n_handshake_remote(hs[side], got) == P11N_ERR_STATE);
            p11n_handshake *w = hs[(act - 1) % 2], *rd = hs[act % 2];
            uint8_t buf[MAX_ACT];
            size_t n = 0;
            CU_ASSERT_FATAL(p11n_handshake_write(w, buf, sizeof(buf), &n) == P11N_OK);
            /* The writer of the last act is done before its peer has read
             * it; it is authenticated only if it is done. */
            CU_ASSERT(p11n_handshake_remote(w, got)
                == (p11n_handshake_done(w) ? P11N_OK : P11N_ERR_STATE));
            CU_ASSERT(p11n_handshake_remote(rd, got) == P11N_ERR_STATE);
            CU_ASSERT_FATAL(p11n_handshake_read(rd, buf, n) == P11N_OK);
        }
        CU_ASSERT(p11n_handshake_remote(hs[0], got) == P11N_OK
            && memcmp(got, p.rpub, P11N_PUBKEY_LEN) == 0);
        CU_ASSERT(p11n_handshake_remote(hs[1], got) == P11N_OK
            && memcmp(got, p.ipub, P11N_PUBKEY_LEN) == 0);
        CU_ASSERT(p11n_handshake_remote(NULL, got) == P11N_ERR_INVALID_ARG);
        CU_ASSERT(p11n_handshake_remote(hs[0], NULL) == P11N_ERR_INVALID_ARG);
        p11n_handshake_free(hs[0]);
        p11n_handshake_free(hs[1]);
        pair_free(&p);
    }
}

static void test_kk_candidates(void)
{
    p11n_key *k1 = fresh_key(), *k2 = fresh_key();
    uint8_t cands[3][P11N_PUBKEY_LEN];
    pub_of(k1, cands[0]);
    pub_of(k2, cands[1]);

    pair p;
    pair_init(&p, "KK");
    memcpy(cands[2], p.ipub, P11N_PUBKEY_LEN);
    p.rcfg.remote = cands;
    p.rcfg.nremote = 3;
    p11n_transport *ti = NULL, *tr = NULL;
    outcome o = pair_run(&p, 0, -1, &ti, &tr);   /* also checks remote() */
    CU_ASSERT_FATAL(o.rc == P11N_OK);
    exchange(ti, tr, 10);
    p11n_transport_free(ti);
    p11n_transport_free(tr);

    /* None of them. */
    pub_of(p.rk, cands[2]);
    o = pair_run(&p, 0, -1, NULL, NULL);
    CU_ASSERT(o.rc == P11N_ERR_UNKNOWN_PEER && o.act == 1 && o.side == 1);

    /* A bad point in act one fails at once, whatever the candidates. */
    memcpy(cands[2], p.ipub, P11N_PUBKEY_LEN);
    o = pair_run(&p, 1, 1 * 8 + 2, NULL, NULL);   /* 0x02/0x03 -> 0x06/0x07 */
    CU_ASSERT(o.rc == P11N_ERR_BAD_PUBKEY && o.act == 1);

    pair_free(&p);
    p11n_key_free(k1);
    p11n_key_free(k2);
}

/* One flipped bit in each act gives the error that part of the act maps
 * to: version byte, ephemeral key prefix, encrypted static key (XK act 3),
 * tag. */
static void bit_flips(int xi, int xr)
{
    static const struct {
        const char *pattern;
        int act;
        long bit;
        int rc;
    } cases[] = {
        { "KK", 1, 0, P11N_ERR_BAD_VERSION },
        { "KK", 1, 7, P11N_ERR_BAD_VERSION },
        { "KK", 1, 1 * 8 + 2, P11N_ERR_BAD_PUBKEY },
        { "KK", 1, 49 * 8, P11N_ERR_UNKNOWN_PEER },   /* act 1 tag picks the peer */
        { "KK", 1, 34 * 8 + 5, P11N_ERR_UNKNOWN_PEER },
        { "KK", 2, 0, P11N_ERR_BAD_VERSION },
        { "KK", 2, 1 * 8 + 2, P11N_ERR_BAD_PUBKEY },
        { "KK", 2, 49 * 8 + 3, P11N_ERR_BAD_TAG },
        { "XK", 1, 4, P11N_ERR_BAD_VERSION },
        { "XK", 1, 1 * 8 + 2, P11N_ERR_BAD_PUBKEY },
        { "XK", 1, 40 * 8, P11N_ERR_BAD_TAG },
        { "XK", 2, 1, P11N_ERR_BAD_VERSION },
        { "XK", 2, 1 * 8 + 2, P11N_ERR_BAD_PUBKEY },
        { "XK", 2, 49 * 8 + 7, P11N_ERR_BAD_TAG },
        { "XK", 3, 0, P11N_ERR_BAD_VERSION },
        { "XK", 3, 1 * 8, P11N_ERR_BAD_CIPHERTEXT },
        { "XK", 3, 49 * 8 + 1, P11N_ERR_BAD_CIPHERTEXT },
        { "XK", 3, 50 * 8, P11N_ERR_BAD_TAG },
        { "XK", 3, 65 * 8 + 6, P11N_ERR_BAD_TAG },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        pair p;
        pair_init_keys(&p, cases[k].pattern, xi, xr);
        outcome o = pair_run(&p, cases[k].act, cases[k].bit, NULL, NULL);
        CU_ASSERT(o.rc == cases[k].rc);
        CU_ASSERT(o.act == cases[k].act);
        CU_ASSERT(o.side == (cases[k].act % 2 == 1 ? 1 : 0));
        pair_free(&p);
    }
}

static void test_bit_flips(void)
{
    bit_flips(0, 0);
}

/* The same errors when the tag, not a second derivation, decides the
 * parity of the x-only key's DHs. */
static void test_bit_flips_x_only(void)
{
    bit_flips(1, 1);
}

/* A KK responder with several candidate initiator keys derives es once
 * and ss once per candidate tried (the token operations an
 * unauthenticated act one may cost). */
static void test_kk_candidates_x_only(void)
{
    p11n_key *k1 = fresh_key(), *k2 = fresh_key();
    uint8_t cands[3][P11N_PUBKEY_LEN];
    pub_of(k1, cands[0]);
    pub_of(k2, cands[1]);
    pair p;
    pair_init_keys(&p, "KK", 0, 1);
    memcpy(cands[2], p.ipub, P11N_PUBKEY_LEN);
    p.rcfg.remote = cands;
    p.rcfg.nremote = 3;
    CU_ASSERT(pair_run(&p, 0, -1, NULL, NULL).rc == P11N_OK);
    struct t_xkey_counts c = t_xkey_counts(p.rk);
    CU_ASSERT(c.dh_x == 1 + 3);     /* es, then ss for each candidate */
    /* None of them: the same, and the act refused as before. */
    t_xkey_reset(p.rk);
    pub_of(p.rk, cands[2]);
    outcome o = pair_run(&p, 0, -1, NULL, NULL);
    CU_ASSERT(o.rc == P11N_ERR_UNKNOWN_PEER && o.act == 1);
    c = t_xkey_counts(p.rk);
    CU_ASSERT(c.dh_x == 1 + 3);
    pair_free(&p);
    p11n_key_free(k1);
    p11n_key_free(k2);
}

/* What each role of an x-only key must have asked for: the DHs it reads
 * after are x only (one derivation on a token), the static-static DH it
 * writes goes through dh_static, the rest through dh. */
static const struct {
    const char *pattern;
    int initiator;
    struct t_xkey_counts want;
} x_roles[] = {
    { "KK", 1, { .dh = 0, .dh_static = 1, .dh_x = 1 } },   /* writes ss, reads se */
    { "KK", 0, { .dh = 0, .dh_static = 0, .dh_x = 2, .dh_x_pairs = 1 } },  /* es, ss at once */
    { "XK", 1, { .dh = 1, .dh_static = 0, .dh_x = 0 } },   /* writes se */
    { "XK", 0, { .dh = 0, .dh_static = 0, .dh_x = 1 } },   /* reads es */
};

/* Enough key pairs that both parities of each DH come up (1/2 each). */
#define X_ROUNDS 24

/* x-only keys against software keys and each other: every handshake
 * completes, the transports agree, and each role used dh_x where it
 * reads. */
static void test_x_only_keys(void)
{
    for (size_t r = 0; r < sizeof(x_roles) / sizeof(x_roles[0]); r++) {
        for (int round = 0; round < X_ROUNDS; round++) {
            int both = round % 2;   /* every other round, x-only on both sides */
            int xi = x_roles[r].initiator || both, xr = !x_roles[r].initiator || both;
            pair p;
            pair_init_keys(&p, x_roles[r].pattern, xi, xr);
            p11n_transport *ti = NULL, *tr = NULL;
            outcome o = pair_run(&p, 0, -1, &ti, &tr);
            CU_ASSERT_FATAL(o.rc == P11N_OK);
            exchange(ti, tr, 3);
            struct t_xkey_counts c = t_xkey_counts(x_roles[r].initiator ? p.ik : p.rk);
            CU_ASSERT(c.dh == x_roles[r].want.dh);
            CU_ASSERT(c.dh_static == x_roles[r].want.dh_static);
            CU_ASSERT(c.dh_x == x_roles[r].want.dh_x);
            CU_ASSERT(c.dh_x_pairs == x_roles[r].want.dh_x_pairs);
            p11n_transport_free(ti);
            p11n_transport_free(tr);
            pair_free(&p);
        }
    }
}

/* One side of a generic Noise handshake over secp256k1. */
static p11n_noise *noise_side(const char *proto, int initiator, p11n_key *local,
    const p11n_key *remote, int psk)
{
    static const uint8_t psk_bytes[32] = { 7, 7, 7 };
    p11n_noise *ns = NULL;
    uint8_t pub[P11N_PUBKEY_LEN];
    pub_of(remote, pub);
    CU_ASSERT_FATAL(p11n_noise_new(proto, initiator, &ns) == P11N_OK);
    CU_ASSERT_FATAL(p11n_noise_set_local_static(ns, local) == P11N_OK);
    CU_ASSERT_FATAL(p11n_noise_set_remote_static(ns, pub, sizeof(pub)) == P11N_OK);
    if (psk)
        CU_ASSERT_FATAL(p11n_noise_add_psk(ns, psk_bytes, sizeof(psk_bytes)) == P11N_OK);
    CU_ASSERT_FATAL(p11n_noise_start(ns) == P11N_OK);
    return ns;
}

/* Messages with payloads until both may split; the handshake hashes
 * agree. A flipped payload bit in message `flip` (-1: none) must fail the
 * reader with BAD_TAG. */
static int noise_run(p11n_noise *a, p11n_noise *b, int flip)
{
    p11n_noise *side[2] = { a, b };
    for (int m = 0; p11n_noise_action(a) != P11N_NOISE_SPLIT; m++) {
        p11n_noise *w = side[m % 2], *r = side[(m + 1) % 2];
        uint8_t msg[256], payload[16], got[16];
        size_t n = 0, plen = 0;
        memset(payload, 'a' + m, sizeof(payload));
        CU_ASSERT_FATAL(p11n_noise_write_message(w, payload, sizeof(payload), msg,
            sizeof(msg), &n) == P11N_OK);
        if (m == flip)
            msg[n - 20] ^= 1;
        int rc = p11n_noise_read_message(r, msg, n, got, sizeof(got), &plen);
        if (rc != P11N_OK)
            return rc;
        CU_ASSERT(plen == sizeof(payload) && memcmp(got, payload, plen) == 0);
    }
    uint8_t h1[64], h2[64];
    size_t l1 = 0, l2 = 0;
    CU_ASSERT(p11n_noise_handshake_hash(a, h1, sizeof(h1), &l1) == P11N_OK);
    CU_ASSERT(p11n_noise_handshake_hash(b, h2, sizeof(h2), &l2) == P11N_OK);
    CU_ASSERT(l1 >= 32 && l1 == l2 && memcmp(h1, h2, l1) == 0);
    return P11N_OK;
}

/* The engine's parity by the tag beyond KK and XK: a psk after the
 * token DH (mixed into every candidate), payloads, and a pattern whose
 * message decrypts a static key after the token DH (IK: the parity
 * cannot wait for the tag there, so the full DH is used). */
static void test_x_only_engine(void)
{
    static const struct {
        const char *proto;
        int psk;
        unsigned resp_dh_x, resp_dh;  /* the responder's x-only key */
    } cases[] = {
        { "Noise_KKpsk2_secp256k1_ChaChaPoly_SHA256", 1, 2, 0 },
        { "Noise_KKpsk0_secp256k1_ChaChaPoly_SHA512", 1, 2, 0 },
        { "Noise_IK_secp256k1_ChaChaPoly_SHA256", 0, 0, 2 },   /* es, ss in full */
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        for (int round = 0; round < 8; round++) {
            p11n_key *ik = t_xkey_new(NULL, NULL), *rk = t_xkey_new(NULL, NULL);
            CU_ASSERT_FATAL(ik != NULL && rk != NULL);
            int flip = round == 7 ? round % 2 : -1;
            p11n_noise *a = noise_side(cases[k].proto, 1, ik, rk, cases[k].psk);
            p11n_noise *b = noise_side(cases[k].proto, 0, rk, ik, cases[k].psk);
            int rc = noise_run(a, b, flip);
            CU_ASSERT(rc == (flip < 0 ? P11N_OK : P11N_ERR_BAD_TAG));
            if (flip < 0) {
                struct t_xkey_counts c = t_xkey_counts(rk);
                CU_ASSERT(c.dh_x == cases[k].resp_dh_x);
                CU_ASSERT(c.dh + c.dh_static == cases[k].resp_dh);
            }
            p11n_noise_free(a);
            p11n_noise_free(b);
            p11n_key_free(ik);
            p11n_key_free(rk);
        }
    }
}

/* ---- token keys without blocking (P11N_HS_ASYNC_TOKEN) ---- */

static struct t_token T;

/* A key on the test token, through tests/faultmod.so with `faults`. */
static p11n_key *token_key(const char *label, const char *faults)
{
    char uri[2048];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s?module-path=%s&pin-value=" T_PIN,
        T.label, label, P11N_FAULT_MODULE);
    setenv("P11N_FAULT", faults, 1);
    p11n_key *k = NULL;
    int rc = p11n_key_load(uri, &k);
    unsetenv("P11N_FAULT");
    CU_ASSERT_FATAL(rc == P11N_OK && k != NULL);
    return k;
}

static void *run_op(void *arg)
{
    (void)p11n_handshake_pending_run(arg);
    return NULL;
}

/* One step of `hs`: the write (out != NULL) or the read of `act`. If it
 * is deferred, its operation runs on another thread while this one
 * completes a whole software handshake -- the token does not hold it up --
 * then the step resumes. Returns whether it was deferred. */
static int async_step(p11n_handshake *hs, uint8_t *act, size_t *len, int write)
{
    int rc = write ? p11n_handshake_write(hs, act, MAX_ACT, len)
                   : p11n_handshake_read(hs, act, *len);
    if (rc != P11N_ERR_PENDING) {
        CU_ASSERT_FATAL(rc == P11N_OK);
        return 0;
    }
    p11n_handshake_op *op = p11n_handshake_pending(hs);
    CU_ASSERT_FATAL(op != NULL);
    uint8_t scratch[MAX_ACT];
    size_t n = 0;
    CU_ASSERT(p11n_handshake_resume(hs, scratch, sizeof(scratch), &n) == P11N_ERR_PENDING);
    CU_ASSERT(p11n_handshake_write(hs, scratch, sizeof(scratch), &n) == P11N_ERR_PENDING);
    CU_ASSERT(p11n_handshake_want(hs) == 0);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, run_op, op) == 0);
    pair p;
    pair_init(&p, "KK");
    CU_ASSERT(pair_run(&p, 0, -1, NULL, NULL).rc == P11N_OK);
    pair_free(&p);
    pthread_join(th, NULL);
    CU_ASSERT(p11n_handshake_pending(hs) == NULL);
    CU_ASSERT(p11n_handshake_pending_run(op) == P11N_ERR_STATE);
    size_t got = 0;
    CU_ASSERT_FATAL(p11n_handshake_resume(hs, write ? act : NULL, MAX_ACT, &got) == P11N_OK);
    if (write)
        *len = got;
    else
        CU_ASSERT(got == 0);
    CU_ASSERT(p11n_handshake_resume(hs, act, MAX_ACT, &got) == P11N_ERR_STATE);
    return 1;
}

/* Token keys on both sides, every derivation delayed: exactly the steps
 * with token work are deferred (KK: the initiator's act 1 and its read of
 * act 2, the responder's read of act 1; XK: the responder's read of act
 * 1, the initiator's act 3), and the transports work. */
static void test_async_token(void)
{
    static const struct {
        const char *pattern;
        int deferred[3][2];     /* per act: writer, reader */
    } cases[] = {
        { "KK", { { 1, 1 }, { 0, 1 }, { 0, 0 } } },
        { "XK", { { 0, 1 }, { 0, 0 }, { 1, 0 } } },
    };
    p11n_key *ik = token_key("hs-init", "C_DeriveKey:delay=20");
    p11n_key *rk = token_key("hs-resp", "C_DeriveKey:delay=20");
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        uint8_t ipub[P11N_PUBKEY_LEN], rpub[P11N_PUBKEY_LEN];
        pub_of(ik, ipub);
        pub_of(rk, rpub);
        p11n_handshake_config icfg = { .size = sizeof(p11n_handshake_config),
            .pattern = cases[c].pattern, .local = ik,
            .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])rpub, .nremote = 1,
            .flags = P11N_HS_ASYNC_TOKEN };
        p11n_handshake_config rcfg = { .size = sizeof(p11n_handshake_config),
            .pattern = cases[c].pattern, .local = rk,
            .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])ipub, .nremote = 1,
            .flags = P11N_HS_ASYNC_TOKEN };
        p11n_handshake *side[2] = { NULL, NULL };
        CU_ASSERT_FATAL(p11n_handshake_initiate(&icfg, &side[0]) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_respond(&rcfg, &side[1]) == P11N_OK);
        for (int act = 0; !p11n_handshake_done(side[0]) || !p11n_handshake_done(side[1]);
            act++) {
            CU_ASSERT_FATAL(act < 3);
            uint8_t buf[MAX_ACT];
            size_t n = 0;
            CU_ASSERT(async_step(side[act % 2], buf, &n, 1) == cases[c].deferred[act][0]);
            CU_ASSERT_FATAL(p11n_handshake_want(side[(act + 1) % 2]) == n);
            CU_ASSERT(async_step(side[(act + 1) % 2], buf, &n, 0) ==
                cases[c].deferred[act][1]);
        }
        p11n_transport *ti = NULL, *tr = NULL;
        CU_ASSERT_FATAL(p11n_handshake_finish(side[0], &ti) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_finish(side[1], &tr) == P11N_OK);
        exchange(ti, tr, 3);
        p11n_transport_free(ti);
        p11n_transport_free(tr);
        p11n_handshake_free(side[0]);
        p11n_handshake_free(side[1]);
    }
    p11n_key_free(ik);
    p11n_key_free(rk);
}

/* A token failure inside the deferred operation comes back from the
 * resume, and the handshake is dead; a handshake freed with an operation
 * pending (never run) leaks nothing. */
static void test_async_token_failure(void)
{
    p11n_key *ik = token_key("hs-init", "C_DeriveKey:fail>1=CKR_FUNCTION_FAILED");
    p11n_key *rk = fresh_key();
    uint8_t rpub[P11N_PUBKEY_LEN], buf[MAX_ACT];
    pub_of(rk, rpub);
    p11n_handshake_config icfg = { .size = sizeof(p11n_handshake_config),
        .pattern = "KK", .local = ik,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])rpub, .nremote = 1,
        .flags = P11N_HS_ASYNC_TOKEN };
    p11n_handshake *hs = NULL;
    size_t n = 0;
    CU_ASSERT_FATAL(p11n_handshake_initiate(&icfg, &hs) == P11N_OK);
    CU_ASSERT_FATAL(p11n_handshake_write(hs, buf, sizeof(buf), &n) == P11N_ERR_PENDING);
    CU_ASSERT(p11n_handshake_pending_run(p11n_handshake_pending(hs)) == P11N_ERR_TOKEN);
    CU_ASSERT(p11n_handshake_resume(hs, buf, sizeof(buf), &n) == P11N_ERR_TOKEN && n == 0);
    CU_ASSERT(p11n_handshake_write(hs, buf, sizeof(buf), &n) == P11N_ERR_STATE);
    p11n_handshake_free(hs);
    CU_ASSERT_FATAL(p11n_handshake_initiate(&icfg, &hs) == P11N_OK);
    CU_ASSERT(p11n_handshake_write(hs, buf, sizeof(buf), &n) == P11N_ERR_PENDING);
    p11n_handshake_free(hs);
    /* Without the flag the same key blocks, as before. */
    icfg.flags = 0;
    CU_ASSERT_FATAL(p11n_handshake_initiate(&icfg, &hs) == P11N_OK);
    CU_ASSERT(p11n_handshake_write(hs, buf, sizeof(buf), &n) == P11N_ERR_TOKEN);
    p11n_handshake_free(hs);
    icfg.flags = 2;
    CU_ASSERT(p11n_handshake_initiate(&icfg, &hs) == P11N_ERR_INVALID_ARG && hs == NULL);
    p11n_key_free(ik);
    p11n_key_free(rk);
}

static void test_framing_errors(void)
{
    pair p;
    pair_init(&p, "XK");
    p11n_handshake *i = NULL, *r = NULL;
    uint8_t act1[MAX_ACT];
    size_t n = 0;
    CU_ASSERT_FATAL(p11n_handshake_initiate(&p.icfg, &i) == P11N_OK);
    /* Reading when it is our turn to write is refused without harm. */
    CU_ASSERT(p11n_handshake_want(i) == 0);
    CU_ASSERT(p11n_handshake_read(i, act1, 50) == P11N_ERR_STATE);
    CU_ASSERT_FATAL(p11n_handshake_write(i, act1, sizeof(act1), &n) == P11N_OK);
    CU_ASSERT(p11n_handshake_want(i) == 50);

    const struct {
        size_t len;
        uint8_t version;
        int rc;
    } cases[] = {
        { 49, 0, P11N_ERR_SHORT_MESSAGE },
        { 0, 0, P11N_ERR_SHORT_MESSAGE },
        { 51, 0, P11N_ERR_LONG_MESSAGE },
        { 50, 1, P11N_ERR_BAD_VERSION },
        { 49, 1, P11N_ERR_SHORT_MESSAGE },   /* length is checked first */
        { 50, 0, P11N_OK },
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        uint8_t in[MAX_ACT];
        memcpy(in, act1, n);
        in[0] = cases[k].version;
        CU_ASSERT_FATAL(p11n_handshake_respond(&p.rcfg, &r) == P11N_OK);
        CU_ASSERT(p11n_handshake_read(r, in, cases[k].len) == cases[k].rc);
        if (cases[k].rc != P11N_OK)
            CU_ASSERT(p11n_handshake_read(r, act1, n) == P11N_ERR_STATE);
        p11n_handshake_free(r);
    }
    p11n_handshake_free(i);
    pair_free(&p);
}

static void test_config_errors(void)
{
    pair p;
    pair_init(&p, "KK");
    p11n_handshake *hs = (p11n_handshake *)&hs;
    p11n_handshake_config c = p.icfg;

    c.pattern = "NN";
    CU_ASSERT(p11n_handshake_initiate(&c, &hs) == P11N_ERR_UNSUPPORTED && hs == NULL);
    c = p.icfg;
    c.local = NULL;
    CU_ASSERT(p11n_handshake_initiate(&c, &hs) == P11N_ERR_MISSING_KEY);
    c = p.icfg;
    c.nremote = 0;
    CU_ASSERT(p11n_handshake_initiate(&c, &hs) == P11N_ERR_MISSING_KEY);
    c = p.rcfg;
    c.nremote = 0;
    CU_ASSERT(p11n_handshake_respond(&c, &hs) == P11N_ERR_MISSING_KEY);
    uint8_t bad[1][P11N_PUBKEY_LEN] = { { 0x05 } };
    c = p.rcfg;
    c.remote = bad;
    CU_ASSERT(p11n_handshake_respond(&c, &hs) == P11N_ERR_BAD_PUBKEY);
    CU_ASSERT(p11n_handshake_initiate(NULL, &hs) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_handshake_initiate(&p.icfg, NULL) == P11N_ERR_INVALID_ARG);
    /* The config grows like the option structures: a size of 0 (not made
     * with P11N_HANDSHAKE_CONFIG_INIT) is refused, a newer caller's larger
     * one is accepted while what this library does not know is zero. */
    c = p.icfg;
    c.size = 0;
    CU_ASSERT(p11n_handshake_initiate(&c, &hs) == P11N_ERR_INVALID_ARG && hs == NULL);
    struct { p11n_handshake_config cfg; uint64_t later; } newer = { p.icfg, 0 };
    newer.cfg.size = sizeof(newer);
    CU_ASSERT(p11n_handshake_initiate(&newer.cfg, &hs) == P11N_OK);
    p11n_handshake_free(hs);
    newer.later = 1;
    CU_ASSERT(p11n_handshake_initiate(&newer.cfg, &hs) == P11N_ERR_INVALID_ARG && hs == NULL);

    /* pattern NULL means KK; an XK responder needs no remote key. */
    c = p.icfg;
    c.pattern = NULL;
    CU_ASSERT(p11n_handshake_initiate(&c, &hs) == P11N_OK);
    uint8_t peer[P11N_PUBKEY_LEN];
    CU_ASSERT(p11n_handshake_want(hs) == 0 && !p11n_handshake_done(hs));
    p11n_handshake_free(hs);
    c = p.rcfg;
    c.pattern = "XK";
    c.nremote = 0;
    CU_ASSERT(p11n_handshake_respond(&c, &hs) == P11N_OK);
    CU_ASSERT(p11n_handshake_remote(hs, peer) == P11N_ERR_STATE);   /* not known yet */
    CU_ASSERT(p11n_handshake_want(hs) == 50);
    p11n_handshake_free(hs);
    p11n_handshake_free(NULL);
    pair_free(&p);
}

int main(void)
{
    json_error_t jerr;
    vectors = json_load_file(t_vector_path("bolt8.json"), 0, &jerr);
    if (vectors == NULL)
        return 1;
    static const p11n_test tests[] = {
        { "BOLT 8 handshake vectors, both roles, every failure", test_bolt8_vectors },
        { "KK in memory, 1100 messages each way", test_kk_in_memory },
        { "XK in memory, 1100 messages each way", test_xk_in_memory },
        { "fixed act sizes", test_act_sizes },
        { "wrong prologue", test_wrong_prologue },
        { "wrong remote key; XK responder peer list", test_wrong_remote },
        { "KK responder candidates", test_kk_candidates },
        { "remote key reported only once authenticated", test_remote_only_when_authenticated },
        { "a flipped bit in each act", test_bit_flips },
        { "x-only (token-like) keys: parity by the tag, every role", test_x_only_keys },
        { "a flipped bit in each act, x-only keys", test_bit_flips_x_only },
        { "KK responder candidates, x-only key: es derived once", test_kk_candidates_x_only },
        { "x-only keys in the generic engine: psk, payloads, IK", test_x_only_engine },
        { "SoftHSM2 keys, derivations delayed: token steps deferred and run elsewhere",
          test_async_token },
        { "a token failure in a deferred step; freed while pending", test_async_token_failure },
        { "short, long, bad version", test_framing_errors },
        { "configuration errors", test_config_errors },
        { NULL, NULL },
    };
    t_token_setup(&T, "p11n-hs");
    uint8_t pub[P11N_PUBKEY_LEN];
    if (p11n_token_keygen(T.uri, "hs-init", pub) != P11N_OK ||
        p11n_token_keygen(T.uri, "hs-resp", pub) != P11N_OK)
        return 1;
    int rc = p11n_test_main("handshake", tests);
    t_token_teardown(&T);
    json_decref(vectors);
    return rc;
}
