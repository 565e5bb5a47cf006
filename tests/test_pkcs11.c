/* The token layer against a real SoftHSM2 token: key generation, token DH
 * equal to software DH, no objects left behind, thread safety, every error
 * case (through tests/faultmod.so where the token must misbehave), and the
 * BOLT #8 handshakes with the local static key on the token. */
#define _GNU_SOURCE /* sched_setaffinity */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <jansson.h>

#include "crypto.h"
#include "key.h"
#include "p11noise.h"
#include "softhsm.h"
#include "testutil.h"
#include "bolt8case.h"
#include "token.h"

static struct t_token T;

/* Private key bytes of the imported test key "k1". */
static const uint8_t K1_PRIV[32] = {
    0x3c, 0x1f, 0x7a, 0x90, 0x11, 0x25, 0x6e, 0x4d, 0x88, 0x02, 0xb3, 0x5c, 0x71, 0xe9, 0x0a, 0x44,
    0x9d, 0x36, 0xc8, 0x5b, 0x27, 0xf0, 0x63, 0x1e, 0xa5, 0x4c, 0x08, 0xd7, 0x92, 0x3b, 0x66, 0x01,
};

/* "pkcs11:token=...;object=NAME?module-path=...&pin-value=..." for T. */
static const char *key_uri(const char *object, int fault)
{
    static char buf[2048];
    snprintf(buf, sizeof(buf), "pkcs11:token=%s;object=%s?module-path=%s&pin-value=" T_PIN,
        T.label, object, fault ? P11N_FAULT_MODULE : T.module);
    return buf;
}

static p11n_key *load(const char *uri)
{
    p11n_key *k = NULL;
    int rc = p11n_key_load(uri, &k);
    if (rc != P11N_OK)
        fprintf(stderr, "load: %s\n", p11n_token_last_error());
    CU_ASSERT_FATAL(rc == P11N_OK && k != NULL);
    return k;
}

/* Load with a fault configuration; the module reads it at C_Initialize. */
static int load_faulty(const char *object, const char *faults, p11n_key **k)
{
    setenv("P11N_FAULT", faults, 1);
    int rc = p11n_key_load(key_uri(object, 1), k);
    unsetenv("P11N_FAULT");
    return rc;
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static uint8_t attr_bool(struct p11n_token *tok, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type)
{
    CK_BBOOL v = 0xff;
    CK_ATTRIBUTE a = { type, &v, sizeof(v) };
    CU_ASSERT_FATAL(tok->fn->C_GetAttributeValue(tok->anchor, h, &a, 1) == CKR_OK);
    return v;
}

static CK_OBJECT_HANDLE find_one(struct p11n_token *tok, CK_OBJECT_CLASS cls, const char *label)
{
    CK_ATTRIBUTE t[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_LABEL, (void *)label, strlen(label) },
    };
    CK_OBJECT_HANDLE *h;
    size_t n;
    CU_ASSERT_FATAL(p11n_token_find(tok, tok->anchor, t, 2, &h, &n) == P11N_OK);
    CU_ASSERT_FATAL(n == 1);
    CK_OBJECT_HANDLE one = h[0];
    free(h);
    return one;
}

static void test_keygen(void)
{
    uint8_t pub[P11N_PUBKEY_LEN], again[P11N_PUBKEY_LEN];
    CU_ASSERT_FATAL(p11n_token_keygen(T.uri, "node1", pub) == P11N_OK);
    CU_ASSERT(p11n_dh_secp256k1.check_pub(pub) == P11N_OK);

    struct p11n_token *tok = t_token_open(T.uri);
    CK_OBJECT_HANDLE priv = find_one(tok, CKO_PRIVATE_KEY, "node1");
    CK_OBJECT_HANDLE pubh = find_one(tok, CKO_PUBLIC_KEY, "node1");
    CU_ASSERT(attr_bool(tok, priv, CKA_SENSITIVE) == CK_TRUE);
    CU_ASSERT(attr_bool(tok, priv, CKA_EXTRACTABLE) == CK_FALSE);
    CU_ASSERT(attr_bool(tok, priv, CKA_DERIVE) == CK_TRUE);
    CU_ASSERT(attr_bool(tok, priv, CKA_PRIVATE) == CK_TRUE);
    CU_ASSERT(attr_bool(tok, priv, CKA_TOKEN) == CK_TRUE);
    CU_ASSERT(attr_bool(tok, pubh, CKA_TOKEN) == CK_TRUE);
    uint8_t *id1, *id2, *params, *point;
    size_t l1, l2, lp, lpt;
    CU_ASSERT_FATAL(p11n_token_attr(tok, tok->anchor, priv, CKA_ID, &id1, &l1) == P11N_OK);
    CU_ASSERT_FATAL(p11n_token_attr(tok, tok->anchor, pubh, CKA_ID, &id2, &l2) == P11N_OK);
    CU_ASSERT(l1 == 16 && l2 == 16 && memcmp(id1, id2, 16) == 0);
    CU_ASSERT(!p11n_is_peer_id(id1, l1));
    CU_ASSERT_FATAL(p11n_token_attr(tok, tok->anchor, priv, CKA_EC_PARAMS, &params, &lp) == P11N_OK);
    CU_ASSERT(lp == sizeof(p11n_secp256k1_oid) && memcmp(params, p11n_secp256k1_oid, lp) == 0);
    CU_ASSERT_FATAL(p11n_token_attr(tok, tok->anchor, pubh, CKA_EC_POINT, &point, &lpt) == P11N_OK);
    CU_ASSERT(p11n_ec_point_decode(point, lpt, again) == P11N_OK &&
              memcmp(again, pub, sizeof(pub)) == 0);
    /* The value of a sensitive key cannot be read. */
    uint8_t v[32];
    CK_ATTRIBUTE a = { CKA_VALUE, v, sizeof(v) };
    CU_ASSERT(tok->fn->C_GetAttributeValue(tok->anchor, priv, &a, 1) == CKR_ATTRIBUTE_SENSITIVE);
    free(id1);
    free(id2);
    free(params);
    free(point);
    size_t before = t_token_objects(tok);
    p11n_token_close(tok);

    /* Same label again: refused, nothing created. */
    CU_ASSERT(p11n_token_keygen(T.uri, "node1", again) == P11N_ERR_EXISTS);
    CU_ASSERT(contains(p11n_token_last_error(), "node1"));
    CU_ASSERT(p11n_token_keygen(T.uri, "bad label", again) == P11N_ERR_BAD_IDENTIFIER);
    tok = t_token_open(T.uri);
    CU_ASSERT(t_token_objects(tok) == before);
    p11n_token_close(tok);

    /* The generated key loads, and its public key is the one reported. */
    p11n_key *k = load(key_uri("node1", 0));
    uint8_t kp[P11N_PUBKEY_LEN];
    size_t kl;
    CU_ASSERT(p11n_key_public(k, kp, sizeof(kp), &kl) == P11N_OK && kl == 33 &&
              memcmp(kp, pub, 33) == 0);
    CU_ASSERT(strcmp(k->ops->kind, "pkcs11") == 0 && p11n_key_is_slow(k));
    CU_ASSERT(strcmp(p11n_key_dh_name(k), "secp256k1") == 0);
    p11n_key_free(k);
}

/* DH(k, P) by the token and by software for `n` random points and the
 * special ones (G, -G, K, -K). */
static void compare_dh(p11n_key *k, int n, uint64_t seed)
{
    uint8_t pts[4][P11N_PUBKEY_LEN];
    memcpy(pts[0], p11n_secp256k1_generator, 33);
    CU_ASSERT_FATAL(p11n_secp256k1_negate(pts[0], pts[1]) == P11N_OK);
    memcpy(pts[2], k->pub, 33);
    CU_ASSERT_FATAL(p11n_secp256k1_negate(pts[2], pts[3]) == P11N_OK);
    int same = 0;
    for (int i = 0; i < n + 4; i++) {
        uint8_t priv[32], pub[33], a[32], b[32];
        if (i < 4) {
            memcpy(pub, pts[i], 33);
        } else {
            do
                t_fill(priv, 32, &seed);
            while (p11n_dh_secp256k1.pubkey(priv, pub) != P11N_OK);
        }
        CU_ASSERT_FATAL(p11n_key_dh(k, pub, a) == P11N_OK);
        CU_ASSERT_FATAL(p11n_dh_secp256k1.dh(K1_PRIV, pub, b) == P11N_OK);
        same += memcmp(a, b, 32) == 0;
    }
    CU_ASSERT(same == n + 4);
}

static void test_dh_equals_software(void)
{
    p11n_key *k = load(key_uri("k1", 0));
    uint8_t want[33];
    CU_ASSERT_FATAL(p11n_dh_secp256k1.pubkey(K1_PRIV, want) == P11N_OK);
    CU_ASSERT(memcmp(k->pub, want, 33) == 0);
    compare_dh(k, 1000, 1);
    /* Off-curve and malformed points never reach the token. */
    uint8_t bad[33], out[32];
    memset(bad, 0xff, sizeof(bad));
    bad[0] = 0x02;
    CU_ASSERT(p11n_key_dh(k, bad, out) == P11N_ERR_BAD_PUBKEY);
    bad[0] = 0x04;
    CU_ASSERT(p11n_key_dh(k, bad, out) == P11N_ERR_BAD_PUBKEY);
    p11n_key_free(k);
}

/* A token that wants the DER form: detected on the first derivation. */
static void test_dh_der_form(void)
{
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(load_faulty("k1", "C_DeriveKey:der-only", &k) == P11N_OK);
    CU_ASSERT(atomic_load(&p11n_token_of_key(k)->point_form) == P11N_FORM_DER);
    compare_dh(k, 20, 2);
    p11n_key_free(k);
}

/* Random peer points and their software DH with K1_PRIV, computed once so
 * the threads below spend their time in the token. */
#define NPOINTS 64
static uint8_t peer_pts[NPOINTS][P11N_PUBKEY_LEN], peer_dh[NPOINTS][32];

static void make_points(void)
{
    uint64_t seed = 99;
    for (int i = 0; i < NPOINTS; i++) {
        uint8_t priv[32];
        do
            t_fill(priv, 32, &seed);
        while (p11n_dh_secp256k1.pubkey(priv, peer_pts[i]) != P11N_OK);
        CU_ASSERT_FATAL(p11n_dh_secp256k1.dh(K1_PRIV, peer_pts[i], peer_dh[i]) == P11N_OK);
    }
}

struct worker {
    p11n_key *key;
    int first, ops, ok, same, failed;
};

static void *dh_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->ops; i++) {
        int p = (w->first + i) % NPOINTS;
        uint8_t out[32];
        int rc = p11n_key_dh(w->key, peer_pts[p], out);
        w->failed += rc != P11N_OK;
        if (rc != P11N_OK)
            continue;
        w->ok++;
        w->same += memcmp(out, peer_dh[p], 32) == 0;
    }
    return NULL;
}

#define NTHREADS 4

static void run_workers(p11n_key *k, int total, struct worker *sum)
{
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    memset(sum, 0, sizeof(*sum));
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){ .key = k, .ops = total / NTHREADS, .first = 17 * i };
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, dh_worker, &w[i]) == 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        sum->ops += w[i].ops;
        sum->ok += w[i].ok;
        sum->same += w[i].same;
        sum->failed += w[i].failed;
    }
}

/* 10,000 DH operations from several threads at once: every result right,
 * and the token holds exactly the objects it held before. */
static void test_dh_threads_leave_no_objects(void)
{
    p11n_key *k = load(key_uri("k1", 0));
    struct p11n_token *tok = p11n_token_of_key(k);
    CU_ASSERT_FATAL(tok != NULL);
    size_t before = t_token_objects(tok);
    make_points();
    struct worker sum;
    run_workers(k, 10000, &sum);
    CU_ASSERT(sum.ops == 10000 && sum.ok == 10000 && sum.same == 10000);
    /* Counted while every pooled session is still open: session objects
     * left behind would show. */
    CU_ASSERT(t_token_objects(tok) == before);
    /* A full DH holds two sessions at once (its two derivations run in
     * parallel). */
    CU_ASSERT(tok->nidle >= 1 && tok->nidle <= 2 * NTHREADS);
    p11n_key_free(k);
}

/* A DH that needs the parity recovery runs its two derivations on two
 * sessions at the same time: from one thread, the pool that held one
 * session after loading holds two afterwards (one after the one-derivation
 * DH, which needs no second). */
static void test_dh_two_sessions_at_once(void)
{
    p11n_key *k = load(key_uri("k1", 0));
    struct p11n_token *tok = p11n_token_of_key(k);
    CU_ASSERT_FATAL(tok != NULL);
    CU_ASSERT(tok->nidle == 1);
    make_points();
    uint8_t x[32], out[32];
    CU_ASSERT(k->ops->dh_x(k, peer_pts[0], x) == P11N_OK);
    CU_ASSERT(memcmp(x, peer_dh[0], 32) != 0);   /* x itself, not the hash */
    CU_ASSERT(tok->nidle == 1);
    CU_ASSERT(p11n_key_dh(k, peer_pts[0], out) == P11N_OK);
    CU_ASSERT(memcmp(out, peer_dh[0], 32) == 0);
    CU_ASSERT(tok->nidle == 2);
    p11n_key_free(k);
    /* Two x-only DHs asked for together (a KK responder's es and ss). */
    k = load(key_uri("k1", 0));
    tok = p11n_token_of_key(k);
    uint8_t xa[32], xb[32], x1[32];
    CU_ASSERT(k->ops->dh_x2(k, peer_pts[1], peer_pts[2], xa, xb) == P11N_OK);
    CU_ASSERT(tok->nidle == 2);
    CU_ASSERT(k->ops->dh_x(k, peer_pts[1], x1) == P11N_OK && memcmp(x1, xa, 32) == 0);
    CU_ASSERT(k->ops->dh_x(k, peer_pts[2], x1) == P11N_OK && memcmp(x1, xb, 32) == 0);
    p11n_key_free(k);
}

/* On one CPU the thread for a pair's second derivation seldom starts
 * before the caller's own derivation is done, and the caller then takes
 * the second derivation over on the second session: the values, the
 * objects left (none) and the session pool (two) are those of the
 * parallel path. */
static void test_dh_pair_taken_over(void)
{
    cpu_set_t was, one;
    CU_ASSERT_FATAL(sched_getaffinity(0, sizeof(was), &was) == 0);
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &was)) {
            CPU_SET(c, &one);
            break;
        }
    CU_ASSERT_FATAL(sched_setaffinity(0, sizeof(one), &one) == 0);
    p11n_key *k = load(key_uri("k1", 0));
    struct p11n_token *tok = p11n_token_of_key(k);
    CU_ASSERT_FATAL(tok != NULL);
    size_t before = t_token_objects(tok);
    make_points();
    for (int i = 0; i < 40; i++) {
        int p = i % NPOINTS, q = (i + 1) % NPOINTS;
        uint8_t out[32], xa[32], xb[32], x[32];
        CU_ASSERT(p11n_key_dh(k, peer_pts[p], out) == P11N_OK
            && memcmp(out, peer_dh[p], 32) == 0);
        CU_ASSERT(k->ops->dh_x2(k, peer_pts[p], peer_pts[q], xa, xb) == P11N_OK);
        CU_ASSERT(k->ops->dh_x(k, peer_pts[p], x) == P11N_OK && memcmp(x, xa, 32) == 0);
        CU_ASSERT(k->ops->dh_x(k, peer_pts[q], x) == P11N_OK && memcmp(x, xb, 32) == 0);
    }
    CU_ASSERT(t_token_objects(tok) == before);
    CU_ASSERT(tok->nidle == 2);
    p11n_key_free(k);
    CU_ASSERT(sched_setaffinity(0, sizeof(was), &was) == 0);
}

/* Failures in the middle of DH (derive refused, value unreadable, object
 * not destroyed) leave no objects either, and do not poison later DH. */
static void test_dh_errors_leave_no_objects(void)
{
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(load_faulty("k1", "C_DeriveKey:fail%5=CKR_FUNCTION_FAILED;"
        "C_DestroyObject:fail%7=CKR_FUNCTION_FAILED;"
        "C_GetAttributeValue:fail@30=CKR_FUNCTION_FAILED;"
        "C_GetAttributeValue:fail@41=CKR_FUNCTION_FAILED;"
        "C_GetAttributeValue:fail@77=CKR_FUNCTION_FAILED", &k) == P11N_OK);
    /* Load reads a dozen attributes: the value reads that fail above are
     * DH ones, and CKR_FUNCTION_FAILED keeps the session alive, so only
     * our own C_DestroyObject can remove the derived object. */
    struct p11n_token *tok = p11n_token_of_key(k);
    size_t before = t_token_objects(tok);
    make_points();
    struct worker sum;
    run_workers(k, 1000, &sum);
    CU_ASSERT(sum.failed > 0);
    CU_ASSERT(sum.ok > 0 && sum.ok < 1000);
    CU_ASSERT(sum.same == sum.ok);
    CU_ASSERT(t_token_objects(tok) == before);
    p11n_key_free(k);
}

/* Each error names the URI without the PIN. */
static void check_error(int rc, int want, const char *ckr)
{
    const char *msg = p11n_token_last_error();
    CU_ASSERT(rc == want);
    if (rc != want)
        fprintf(stderr, "got %d (%s), want %d\n", rc, msg, want);
    CU_ASSERT(contains(msg, "pkcs11:"));
    CU_ASSERT(contains(msg, T.label));
    CU_ASSERT(!contains(msg, "pin-value="));
    CU_ASSERT(!contains(msg, T_PIN));
    if (ckr != NULL)
        CU_ASSERT(contains(msg, ckr));
}

static void test_errors(void)
{
    p11n_key *k = NULL;
    char uri[2048];

    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s&pin-value=9999",
        T.label, T.module);
    check_error(p11n_key_load(uri, &k), P11N_ERR_PIN_INCORRECT, "CKR_PIN_INCORRECT");
    CU_ASSERT(k == NULL);
    CU_ASSERT(!contains(p11n_token_last_error(), "9999"));

    check_error(load_faulty("k1", "C_Login:fail=CKR_PIN_LOCKED", &k), P11N_ERR_PIN_LOCKED,
        "CKR_PIN_LOCKED");

    snprintf(uri, sizeof(uri), "pkcs11:token=%s-nope;object=k1?module-path=%s&pin-value=" T_PIN,
        T.label, T.module);
    check_error(p11n_key_load(uri, &k), P11N_ERR_TOKEN_NOT_FOUND, NULL);

    check_error(p11n_key_load(key_uri("missing", 0), &k), P11N_ERR_KEY_NOT_FOUND, NULL);
    check_error(p11n_key_load(key_uri("noderive", 0), &k), P11N_ERR_KEY_NO_DERIVE, NULL);
    check_error(p11n_key_load(key_uri("p256", 0), &k), P11N_ERR_KEY_WRONG_CURVE, NULL);
    check_error(p11n_key_load(key_uri("nopub", 0), &k), P11N_ERR_KEY_NOT_FOUND, NULL);
    CU_ASSERT(contains(p11n_token_last_error(), "public"));
    check_error(load_faulty("k1", "C_GetMechanismInfo:fail=CKR_MECHANISM_INVALID", &k),
        P11N_ERR_NO_ECDH, NULL);
    check_error(load_faulty("k1", "C_OpenSession:fail=CKR_TOKEN_NOT_PRESENT", &k),
        P11N_ERR_TOKEN_REMOVED, "CKR_TOKEN_NOT_PRESENT");

    /* The token reports removal in the middle of a DH: the DH recovers
     * (new sessions, login, key found again) and succeeds. Derivation 1 is
     * load's self-check; DH 1 uses derivations 2 and 3. */
    CU_ASSERT_FATAL(load_faulty("k1", "C_DeriveKey:fail@3=CKR_DEVICE_REMOVED", &k) == P11N_OK);
    uint8_t out[32];
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
    p11n_key_free(k);
    k = NULL;
    /* An error that is not about lost sessions is not retried. */
    CU_ASSERT_FATAL(load_faulty("k1", "C_DeriveKey:fail@3=CKR_FUNCTION_FAILED", &k) == P11N_OK);
    check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_TOKEN,
        "CKR_FUNCTION_FAILED");
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
    p11n_key_free(k);
    k = NULL;

    /* No PIN anywhere. */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s", T.label, T.module);
    check_error(p11n_key_load(uri, &k), P11N_ERR_PIN_REQUIRED, NULL);

    /* A module that does not exist, a URI that does not parse, a scheme
     * we do not know: no PIN in the message either. */
    CU_ASSERT(p11n_key_load("pkcs11:token=x?module-path=/nonexistent/mod.so&pin-value=" T_PIN, &k)
        == P11N_ERR_MODULE);
    CU_ASSERT(!contains(p11n_token_last_error(), T_PIN));
    CU_ASSERT(p11n_key_load("pkcs11:token=%zz?pin-value=" T_PIN, &k) == P11N_ERR_URI);
    CU_ASSERT(!contains(p11n_token_last_error(), T_PIN));
    CU_ASSERT(p11n_key_load("pkcs11:token=x;frobnicate=1?pin-value=" T_PIN, &k) == P11N_ERR_URI);
    /* A mistyped pin-value is an unknown query attribute, which p11-kit
     * would keep and print back with the URI: refused, never quoted. */
    static const char *const typos[] = { "pin_value=", "pinvalue=", "x-pin-value=",
        "pin-value", "module-path=/m.so&pin-valu=" };
    for (size_t i = 0; i < sizeof(typos) / sizeof(typos[0]); i++) {
        snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s&%s" T_PIN,
            T.label, T.module, typos[i]);
        CU_ASSERT(p11n_key_load(uri, &k) == P11N_ERR_URI);
        CU_ASSERT(!contains(p11n_token_last_error(), T_PIN));
        CU_ASSERT(contains(p11n_token_last_error(), "query attribute"));
    }
    snprintf(uri, sizeof(uri), "pkcs11:token=%s?pin_value=" T_PIN, T.label);
    uint8_t pub[P11N_PUBKEY_LEN];
    CU_ASSERT(p11n_token_keygen(uri, "typo", pub) == P11N_ERR_URI);
    CU_ASSERT(!contains(p11n_token_last_error(), T_PIN));
    CU_ASSERT(p11n_key_load("http://example/?pin-value=" T_PIN, &k) == P11N_ERR_URI);
    CU_ASSERT(!contains(p11n_token_last_error(), T_PIN));
    CU_ASSERT(k == NULL);
}

static int cb_calls;

static int pin_cb(const char *token_uri, char *pin, size_t cap, void *arg)
{
    cb_calls++;
    CU_ASSERT(contains(token_uri, T.label) && !contains(token_uri, "pin"));
    const char *give = arg;
    if (give == NULL)
        return -1;
    snprintf(pin, cap, "%s", give);
    return 0;
}

static void test_pin_sources(void)
{
    char uri[2048], path[1024];
    p11n_key *k = NULL;

    /* pin-source: a file holding the PIN and a newline. */
    snprintf(path, sizeof(path), "%s/pin.txt", T.dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(T_PIN "\n", f);
    fclose(f);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s&pin-source=file:%s",
        T.label, T.module, path);
    k = load(uri);
    p11n_key_free(k);
    k = NULL;
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s&pin-source=file:%s.no",
        T.label, T.module, path);
    CU_ASSERT(p11n_key_load(uri, &k) == P11N_ERR_URI);

    /* The application callback, when the URI has no PIN. */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s", T.label, T.module);
    p11n_set_pin_callback(pin_cb, (void *)T_PIN);
    cb_calls = 0;
    k = load(uri);
    CU_ASSERT(cb_calls == 1);
    p11n_key_free(k);
    k = NULL;
    p11n_set_pin_callback(pin_cb, (void *)"0000");
    CU_ASSERT(p11n_key_load(uri, &k) == P11N_ERR_PIN_INCORRECT);
    p11n_set_pin_callback(pin_cb, NULL);
    CU_ASSERT(p11n_key_load(uri, &k) == P11N_ERR_PIN_REQUIRED);
    /* A PIN in the URI wins over the callback. */
    cb_calls = 0;
    k = load(key_uri("k1", 0));
    CU_ASSERT(cb_calls == 0);
    p11n_key_free(k);
    p11n_set_pin_callback(NULL, NULL);
}

/* Without module-path, p11-kit's configured modules are searched (SoftHSM2
 * registers itself); two handles on one token share the login. */
static void test_configured_module_and_two_handles(void)
{
    char uri[2048];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?pin-value=" T_PIN, T.label);
    p11n_key *a = load(uri);
    p11n_key *b = load(key_uri("k1", 0));
    uint8_t x[32], y[32];
    CU_ASSERT(p11n_key_dh(a, p11n_secp256k1_generator, x) == P11N_OK);
    CU_ASSERT(p11n_key_dh(b, p11n_secp256k1_generator, y) == P11N_OK);
    CU_ASSERT(memcmp(x, y, 32) == 0);
    p11n_key_free(a);
    CU_ASSERT(p11n_key_dh(b, p11n_secp256k1_generator, y) == P11N_OK);
    p11n_key_free(b);
    /* module-name picks the configured module by its p11-kit name. */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-name=softhsm2&pin-value=" T_PIN,
        T.label);
    p11n_key_free(load(uri));
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-name=nosuch&pin-value=" T_PIN,
        T.label);
    p11n_key *k = NULL;
    CU_ASSERT(p11n_key_load(uri, &k) == P11N_ERR_MODULE);
}

static void test_file_key(void)
{
    char path[1024], hex[65];
    snprintf(path, sizeof(path), "%s/k1.hex", T.dir);
    p11n_hex_encode(K1_PRIV, 32, hex);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fprintf(f, "%s\n", hex);
    fclose(f);
    char uri[1100];
    snprintf(uri, sizeof(uri), "file:%s", path);
    p11n_key *soft = load(uri), *tok = load(key_uri("k1", 0));
    CU_ASSERT(memcmp(soft->pub, tok->pub, 33) == 0);
    CU_ASSERT(strcmp(soft->ops->kind, "software") == 0);
    p11n_key_free(soft);
    p11n_key_free(tok);
}

/* ---- the key's own attributes ---- */

/* A secp256k1 key from known bytes with the chosen T_ attributes
 * (softhsm.h); CKA_ID and label are `label`. */
static void import_key(const char *label, const uint8_t priv[32], unsigned opts)
{
    struct p11n_token *tok = t_token_open(T.uri);
    t_token_import_key_opts(tok, label, priv, opts);
    p11n_token_close(tok);
}

static const uint8_t K2_PRIV[32] = {
    0x6b, 0x02, 0x9e, 0x41, 0xd3, 0x18, 0x7c, 0xa5, 0x30, 0xee, 0x57, 0x0b, 0x94, 0x2d, 0xc1, 0x66,
    0x1f, 0x83, 0x4a, 0xb9, 0x05, 0x72, 0xdd, 0x38, 0x9c, 0x61, 0x0e, 0xf7, 0x23, 0x58, 0xa0, 0x4d,
};

/* DH with the token key equals software DH with `priv` for a few points. */
static void check_dh(p11n_key *k, const uint8_t priv[32])
{
    uint64_t seed = 5;
    for (int i = 0; i < 8; i++) {
        uint8_t p[32], pub[33], a[32], b[32];
        do
            t_fill(p, 32, &seed);
        while (p11n_dh_secp256k1.pubkey(p, pub) != P11N_OK);
        CU_ASSERT(p11n_key_dh(k, pub, a) == P11N_OK);
        CU_ASSERT(p11n_dh_secp256k1.dh(priv, pub, b) == P11N_OK);
        CU_ASSERT(memcmp(a, b, 32) == 0);
    }
}

/* A private key the token would let out is refused unless the
 * application asks, and then carries a warning. */
static void test_extractable_refused(void)
{
    static const struct {
        const char *label;
        unsigned opts;
        const char *says;
    } rows[] = {
        { "extractable", T_KEY_EXTRACTABLE | T_PUB_PRIVATE | T_PUB_FIXED, "extractable" },
        { "not-sensitive", T_KEY_NOT_SENSITIVE | T_PUB_PRIVATE | T_PUB_FIXED, "not sensitive" },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        import_key(rows[i].label, K2_PRIV, rows[i].opts);
        p11n_key *k = NULL;
        check_error(p11n_key_load(key_uri(rows[i].label, 0), &k), P11N_ERR_KEY_EXTRACTABLE,
            rows[i].says);
        CU_ASSERT(k == NULL);
        CU_ASSERT(contains(p11n_token_last_error(), "P11N_KEY_DEV_ALLOW_EXTRACTABLE"));
        CU_ASSERT(p11n_key_load_ex(key_uri(rows[i].label, 0), 0, &k) == P11N_ERR_KEY_EXTRACTABLE);
        CU_ASSERT_FATAL(p11n_key_load_ex(key_uri(rows[i].label, 0),
            P11N_KEY_DEV_ALLOW_EXTRACTABLE, &k) == P11N_OK);
        const char *w = p11n_key_warning(k);
        CU_ASSERT_FATAL(w != NULL);
        CU_ASSERT(contains(w, "extractable") && contains(w, "development only"));
        CU_ASSERT(!contains(w, "public-key object"));
        check_dh(k, K2_PRIV);
        p11n_key_free(k);
    }
    /* Unknown flags are refused. */
    p11n_key *k = NULL;
    CU_ASSERT(p11n_key_load_ex(key_uri("k1", 0), 0x80, &k) == P11N_ERR_INVALID_ARG);
}

/* K for parity recovery comes from a public-key object that needed the
 * PIN; one anybody could have written is used with a warning, and never
 * over a trusted one. */
static void test_public_key_object_trust(void)
{
    static const struct {
        const char *label;
        unsigned opts;
        const char *warning;    /* NULL: none */
    } rows[] = {
        { "pub-trusted", T_PUB_PRIVATE | T_PUB_FIXED, NULL },
        { "pub-public", 0, "can be changed without the PIN" },
        { "pub-public-fixed", T_PUB_FIXED, "can be changed without the PIN" },
        { "pub-modifiable", T_PUB_PRIVATE, "modifiable" },
        /* -K planted beside the trusted object: the trusted one wins. */
        { "pub-planted", T_PUB_PRIVATE | T_PUB_FIXED | T_PUB_PLANTED_NEG, NULL },
    };
    uint8_t want[33];
    CU_ASSERT_FATAL(p11n_dh_secp256k1.pubkey(K2_PRIV, want) == P11N_OK);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        import_key(rows[i].label, K2_PRIV, rows[i].opts);
        p11n_key *k = load(key_uri(rows[i].label, 0));
        const char *w = p11n_key_warning(k);
        if (rows[i].warning == NULL) {
            CU_ASSERT(w == NULL);
        } else {
            CU_ASSERT(w != NULL && contains(w, rows[i].warning) &&
                      contains(w, "break every handshake") && contains(w, "p11noise keygen"));
        }
        CU_ASSERT(memcmp(k->pub, want, 33) == 0);
        check_dh(k, K2_PRIV);
        p11n_key_free(k);
    }
}

/* What anyone who reaches the token can do without the PIN: a public
 * object of class CKO_PRIVATE_KEY under `label`, holding `priv`. */
static void plant_public_private_key(const char *label, const uint8_t priv[32])
{
    const struct t_plant p = { .id = label, .priv = priv };
    t_token_plant_public(T.uri, &p);
}

/* A private-key object planted without the PIN under the key's label
 * neither makes the real key ambiguous nor stands in for a missing one. */
static void test_planted_private_key_ignored(void)
{
    import_key("k-victim", K2_PRIV, T_PUB_PRIVATE | T_PUB_FIXED);
    plant_public_private_key("k-victim", K1_PRIV);
    p11n_key *k = load(key_uri("k-victim", 0));
    uint8_t want[33];
    CU_ASSERT_FATAL(p11n_dh_secp256k1.pubkey(K2_PRIV, want) == P11N_OK);
    CU_ASSERT(memcmp(k->pub, want, 33) == 0);
    check_dh(k, K2_PRIV);
    p11n_key_free(k);
    plant_public_private_key("k-planted-only", K1_PRIV);
    k = NULL;
    CU_ASSERT(p11n_key_load(key_uri("k-planted-only", 0), &k) == P11N_ERR_KEY_NOT_FOUND);
    CU_ASSERT(k == NULL);
}

/* ---- a token that loses its sessions ---- */

static char counts_path[1100];

/* Calls of `fn` in the fault module's last count file (-1: none). */
static long fault_count(const char *fn)
{
    FILE *f = fopen(counts_path, "r");
    if (f == NULL)
        return -1;
    char name[64];
    long n, found = 0;
    while (fscanf(f, "%63s %ld", name, &n) == 2)
        if (strcmp(name, fn) == 0)
            found = n;
    fclose(f);
    return found;
}

/* Load through the fault module with `faults`, counting calls. */
static p11n_key *load_counted(const char *uri, const char *faults)
{
    snprintf(counts_path, sizeof(counts_path), "%s/counts", T.dir);
    remove(counts_path);
    setenv("P11N_FAULT_COUNTS", counts_path, 1);
    setenv("P11N_FAULT", faults, 1);
    p11n_key *k = NULL;
    int rc = p11n_key_load(uri, &k);
    unsetenv("P11N_FAULT");
    if (rc != P11N_OK)
        fprintf(stderr, "load: %s\n", p11n_token_last_error());
    CU_ASSERT_FATAL(rc == P11N_OK);
    return k;
}

/* Free the key (C_Finalize writes the counts). */
static void free_counted(p11n_key *k)
{
    p11n_key_free(k);
    unsetenv("P11N_FAULT_COUNTS");
}

/* The token is pulled out and put back while 4 threads run 1000 DH: every
 * DH succeeds (the one that hit the removal after recovering, the others
 * on the new sessions), exactly one thread logs in again, and no derived
 * object is left behind. */
static void test_removed_and_back(void)
{
    /* Derivation 1 is load's self-check. */
    p11n_key *k = load_counted(key_uri("k1", 1), "C_DeriveKey:remove@301");
    struct p11n_token *tok = p11n_token_of_key(k);
    size_t before = t_token_objects(tok);
    unsigned gen = tok->gen;
    make_points();
    struct worker sum;
    run_workers(k, 1000, &sum);
    CU_ASSERT(sum.ok == 1000 && sum.same == 1000);
    CU_ASSERT(tok->gen == gen + 1);
    CU_ASSERT(t_token_objects(tok) == before);
    compare_dh(k, 10, 3);
    free_counted(k);
    CU_ASSERT(fault_count("C_Login") == 2);
    CU_ASSERT(fault_count("C_CloseAllSessions") == 0);  /* only the module's own removal */
}

/* A recovery after an error that leaves the sessions alive (a transient
 * CKR_DEVICE_ERROR of a network HSM, a lost login) must still close the
 * sessions that were borrowed while it ran, when they come back: left
 * open, each recovery would leak the sessions in flight until the token
 * refused new ones. */
static void test_recovery_closes_borrowed_sessions(void)
{
    p11n_key *k = load_counted(key_uri("k1", 1), "C_DeriveKey:fail%5=CKR_DEVICE_ERROR");
    struct p11n_token *tok = p11n_token_of_key(k);
    unsigned gen = tok->gen;
    int left_open = 0;
    for (int round = 0; round < 3; round++) {
        struct p11n_token_use held;     /* another worker's session, in flight */
        CU_ASSERT_FATAL(p11n_token_use_begin(tok, &held) == P11N_OK);
        uint8_t out[32];
        for (int i = 0; i < 2; i++)
            CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
        p11n_token_use_end(tok, &held);
        CK_SESSION_INFO si;
        left_open += tok->fn->C_GetSessionInfo(held.s, &si) == CKR_OK;
    }
    fprintf(stderr, "  %u recoveries, %d borrowed sessions left open\n", tok->gen - gen,
        left_open);
    CU_ASSERT(tok->gen != gen);
    CU_ASSERT(left_open == 0);
    free_counted(k);
}

/* A recovery closes the previous generation's pooled sessions even when
 * the token had ended the anchor (the one session never used after
 * login; emulated by closing it). */
static void test_recovery_closes_pool_without_anchor(void)
{
    p11n_key *k = load_counted(key_uri("k1", 1), "C_DeriveKey:fail@6=CKR_DEVICE_ERROR");
    struct p11n_token *tok = p11n_token_of_key(k);
    uint8_t out[32];
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);   /* 2, 3 */
    CK_SESSION_HANDLE pooled[8];
    size_t npooled = tok->nidle < 8 ? tok->nidle : 8;
    memcpy(pooled, tok->idle, npooled * sizeof(*pooled));
    CU_ASSERT_FATAL(npooled > 0);
    CU_ASSERT(tok->fn->C_CloseSession(tok->anchor) == CKR_OK);
    unsigned gen = tok->gen;
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);   /* 4, 5 */
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);   /* 6 fails */
    CU_ASSERT(tok->gen == gen + 1);
    int open = 0;
    for (size_t i = 0; i < npooled; i++) {
        CK_SESSION_INFO si;
        open += tok->fn->C_GetSessionInfo(pooled[i], &si) == CKR_OK;
    }
    fprintf(stderr, "  %d of %zu old pooled sessions left open\n", open, npooled);
    CU_ASSERT(open == 0);
    free_counted(k);
}

/* The token stays out 1.5 s: the DH that hit the removal and every DH
 * while it is away fail at once with TOKEN_UNAVAILABLE, without calling
 * the module; after it is back, DH works again with no reload. */
static void test_token_stays_away(void)
{
    /* Derivation 1 is load's self-check, DH 1 uses 2 and 3, DH 2 4 and 5. */
    p11n_key *k = load_counted(key_uri("k1", 1), "C_DeriveKey:remove@5=1500");
    struct p11n_token *tok = p11n_token_of_key(k);
    uint8_t out[32];
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
    check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_TOKEN_UNAVAILABLE, NULL);
    CU_ASSERT(contains(p11n_token_last_error(), "token unavailable: "));
    CU_ASSERT(contains(p11n_token_last_error(), "next try in"));
    int fast = 0;
    for (int i = 0; i < 500; i++)
        fast += p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_ERR_TOKEN_UNAVAILABLE;
    CU_ASSERT(fast >= 400);     /* the rest may be a due retry */
    /* Poll until it is back; the guard only stops a hung test. */
    int rc = P11N_ERR_TOKEN_UNAVAILABLE, polls = 0;
    for (time_t guard = time(NULL) + 20; rc != P11N_OK && time(NULL) < guard; polls++) {
        struct timespec ts = { 0, 20 * 1000000L };
        nanosleep(&ts, NULL);
        rc = p11n_key_dh(k, p11n_secp256k1_generator, out);
        CU_ASSERT(rc == P11N_OK || rc == P11N_ERR_TOKEN_UNAVAILABLE);
    }
    CU_ASSERT_FATAL(rc == P11N_OK);
    CU_ASSERT(tok->state == P11N_TOKEN_UP && tok->why[0] == '\0');
    compare_dh(k, 10, 4);
    free_counted(k);
    /* Each recovery try opens one session at most; the ~600 DH while away
     * opened none. Derivations: load 1, DH 1 2, DH 2 2 (the second removed),
     * recovery 1, then 2 per DH after it. */
    long opens = fault_count("C_OpenSession");
    CU_ASSERT(opens > 2 && opens < 40);
    CU_ASSERT(fault_count("C_DeriveKey") == 1 + 2 + 2 + 1 + 2 * (1 + 14));
    fprintf(stderr, "  away: %d fast failures, %d polls, %ld C_OpenSession\n", fast, polls, opens);
}

/* Destroy every object labelled `label`. */
static void destroy_labelled(const char *label)
{
    struct p11n_token *tok = t_token_open(T.uri);
    CK_ATTRIBUTE t = { CKA_LABEL, (void *)label, strlen(label) };
    CK_OBJECT_HANDLE *h;
    size_t n;
    CU_ASSERT_FATAL(p11n_token_find(tok, tok->anchor, &t, 1, &h, &n) == P11N_OK);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(tok->fn->C_DestroyObject(tok->anchor, h[i]) == CKR_OK);
    free(h);
    p11n_token_close(tok);
}

/* The key is replaced under the URI while loaded: the next DH finds it
 * again, sees another public key, and refuses it, then and later. */
static void test_key_replaced(void)
{
    import_key("swap", K2_PRIV, T_PUB_PRIVATE | T_PUB_FIXED);
    p11n_key *k = load(key_uri("swap", 0));
    check_dh(k, K2_PRIV);
    destroy_labelled("swap");
    import_key("swap", K1_PRIV, T_PUB_PRIVATE | T_PUB_FIXED);
    uint8_t out[32];
    for (int i = 0; i < 3; i++) {
        check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_TOKEN_UNAVAILABLE,
            NULL);
        CU_ASSERT(contains(p11n_token_last_error(), "another key"));
        /* Past the backoff: tried again, and refused again. */
        struct timespec ts = { 0, 450 * 1000000L };
        nanosleep(&ts, NULL);
    }
    p11n_key_free(k);
    destroy_labelled("swap");
}

/* A wrong PIN at recovery is never tried again, and a token that says
 * one more wrong try locks it is not even tried. */
static void test_pin_never_retried(void)
{
    char path[1024], uri[2048];
    snprintf(path, sizeof(path), "%s/pin-recover.txt", T.dir);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(T_PIN "\n", f);
    fclose(f);
    chmod(path, 0600);
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=k1?module-path=%s&pin-source=file:%s",
        T.label, P11N_FAULT_MODULE, path);
    p11n_key *k = load_counted(uri, "C_DeriveKey:remove@3");
    f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("0000\n", f);
    fclose(f);
    uint8_t out[32];
    check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_PIN_INCORRECT,
        "CKR_PIN_INCORRECT");
    /* Well past any backoff: still refused, and the login not tried. */
    struct timespec ts = { 0, 300 * 1000000L };
    nanosleep(&ts, NULL);
    for (int i = 0; i < 5; i++) {
        check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_PIN_INCORRECT, NULL);
        CU_ASSERT(contains(p11n_token_last_error(), "not tried again"));
    }
    free_counted(k);
    CU_ASSERT(fault_count("C_Login") == 2);

    /* CKF_USER_PIN_FINAL_TRY (SoftHSM2 has no PIN counter: the fault
     * module sets the flag) at load: no login at all. */
    snprintf(counts_path, sizeof(counts_path), "%s/counts", T.dir);
    setenv("P11N_FAULT_COUNTS", counts_path, 1);
    p11n_key *none = NULL;
    check_error(load_faulty("k1", "C_GetTokenInfo:flags=CKF_USER_PIN_FINAL_TRY", &none),
        P11N_ERR_PIN_FINAL_TRY, NULL);
    CU_ASSERT(contains(p11n_token_last_error(), "one more wrong try would lock the token"));
    CU_ASSERT(none == NULL);
    CU_ASSERT(fault_count("C_Login") == 0);
    check_error(load_faulty("k1", "C_GetTokenInfo:flags=CKF_USER_PIN_LOCKED", &none),
        P11N_ERR_PIN_LOCKED, NULL);
    CU_ASSERT(fault_count("C_Login") == 0);
    /* ... and at recovery: load reads the token info three times (both
     * SoftHSM2 slots while finding the token, then before the login). */
    k = load_counted(key_uri("k1", 1),
        "C_DeriveKey:remove@3;C_GetTokenInfo:flags>3=CKF_USER_PIN_FINAL_TRY");
    check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_PIN_FINAL_TRY, NULL);
    nanosleep(&ts, NULL);
    check_error(p11n_key_dh(k, p11n_secp256k1_generator, out), P11N_ERR_PIN_FINAL_TRY, NULL);
    free_counted(k);
    CU_ASSERT(fault_count("C_Login") == 1);
}

/* After fork() the child does not use its parent's sessions (the fault
 * module, like a module talking to a daemon, refuses them in a child until
 * it initializes the module again): its first DH recovers, and the parent
 * goes on as before. */
static void test_fork(void)
{
    p11n_key *k = load(key_uri("k1", 1));
    uint8_t out[32], want[32];
    CU_ASSERT_FATAL(p11n_dh_secp256k1.dh(K1_PRIV, p11n_secp256k1_generator, want) == P11N_OK);
    CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
    fflush(NULL);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int ok = 0;
        for (int i = 0; i < 5; i++) {
            int rc = p11n_key_dh(k, p11n_secp256k1_generator, out);
            if (rc != P11N_OK)
                fprintf(stderr, "child DH: %s: %s\n", p11n_strerror(rc), p11n_token_last_error());
            ok += rc == P11N_OK && memcmp(out, want, 32) == 0;
        }
        /* One recovery, in the child's own generation. */
        int recovered = p11n_token_of_key(k)->gen == 1;
        p11n_key_free(k);
        _exit(ok == 5 && recovered ? 0 : 1);
    }
    int st = 0;
    CU_ASSERT(waitpid(pid, &st, 0) == pid);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT(p11n_key_dh(k, p11n_secp256k1_generator, out) == P11N_OK);
        CU_ASSERT(memcmp(out, want, 32) == 0);
    }
    CU_ASSERT(p11n_token_of_key(k)->gen == 0);
    p11n_key_free(k);
}

/* ---- BOLT #8 vectors with the local static key in the token ---- */


/* One case with the local static key held in the token. */
static void run_bolt8_case(json_t *c, const uint8_t *ck, const uint8_t *initiator_pub)
{
    int initiator = strcmp(json_string_value(json_object_get(c, "role")), "initiator") == 0;
    p11n_key *local = load(key_uri(initiator ? "bolt8-init" : "bolt8-resp", 0));
    t_bolt8_run_case(c, local, ck, initiator_pub);
    p11n_key_free(local);
}

static void test_bolt8_with_token_key(void)
{
    json_error_t jerr;
    json_t *v = json_load_file(t_vector_path("bolt8.json"), 0, &jerr);
    CU_ASSERT_FATAL(v != NULL);
    json_t *msg = NULL, *c;
    size_t i, ran = 0, passed = 0, roles[2] = { 0, 0 };
    json_array_foreach(json_object_get(v, "cases"), i, c)
        if (json_object_get(c, "ck") != NULL)
            msg = c;
    CU_ASSERT_FATAL(msg != NULL);
    uint8_t *ck = t_hex_field(msg, "ck", 32), *ipub = NULL;
    json_array_foreach(json_object_get(v, "cases"), i, c)
        if (ipub == NULL && json_object_get(c, "steps") != NULL &&
            strcmp(json_string_value(json_object_get(c, "role")), "initiator") == 0)
            ipub = t_hex_field(c, "ls_pub", 33);
    CU_ASSERT_FATAL(ipub != NULL);
    json_array_foreach(json_object_get(v, "cases"), i, c) {
        if (json_object_get(c, "steps") == NULL)
            continue;
        unsigned before = CU_get_number_of_failures();
        run_bolt8_case(c, ck, ipub);
        int ok = CU_get_number_of_failures() == before;
        if (!ok)
            fprintf(stderr, "bolt8 case failed: %s\n",
                json_string_value(json_object_get(c, "name")));
        ran++;
        passed += ok;
        roles[strcmp(json_string_value(json_object_get(c, "role")), "initiator") == 0]++;
    }
    CU_ASSERT(ran == 15 && passed == ran);
    CU_ASSERT(roles[0] == 10 && roles[1] == 5);
    free(ck);
    free(ipub);
    json_decref(v);
}

/* Seed the token: the test keys, a key without CKA_DERIVE, a P-256 key, a
 * key without its public half, and the two BOLT #8 static keys. */
/* ---- token derivations per handshake, counted at the PKCS#11 boundary ---- */

/* One whole sans-I/O handshake between two keys. */
static void one_handshake(const char *pattern, p11n_key *ik, p11n_key *rk)
{
    uint8_t ipub[P11N_PUBKEY_LEN], rpub[P11N_PUBKEY_LEN];
    size_t n = 0;
    CU_ASSERT_FATAL(p11n_key_public(ik, ipub, sizeof(ipub), &n) == P11N_OK);
    CU_ASSERT_FATAL(p11n_key_public(rk, rpub, sizeof(rpub), &n) == P11N_OK);
    p11n_handshake_config icfg = { .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .local = ik,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])rpub, .nremote = 1 };
    p11n_handshake_config rcfg = { .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .local = rk,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])ipub, .nremote = 1 };
    p11n_handshake *side[2] = { NULL, NULL };
    CU_ASSERT_FATAL(p11n_handshake_initiate(&icfg, &side[0]) == P11N_OK);
    CU_ASSERT_FATAL(p11n_handshake_respond(&rcfg, &side[1]) == P11N_OK);
    /* Which steps use the token (writer, reader per act): only those go
     * to a worker thread. */
    static const int kk_token[3][2] = { { 1, 1 }, { 0, 1 } };
    static const int xk_token[3][2] = { { 0, 1 }, { 0, 0 }, { 1, 0 } };
    const int (*token)[2] = strcmp(pattern, "KK") == 0 ? kk_token : xk_token;
    for (int act = 0; !p11n_handshake_done(side[0]) || !p11n_handshake_done(side[1]); act++) {
        CU_ASSERT_FATAL(act < 3);
        CU_ASSERT(p11n_handshake_token_step(side[act % 2]) == token[act][0]);
        CU_ASSERT(p11n_handshake_token_step(side[(act + 1) % 2]) == token[act][1]);
        uint8_t buf[128];
        CU_ASSERT_FATAL(p11n_handshake_write(side[act % 2], buf, sizeof(buf), &n) == P11N_OK);
        CU_ASSERT_FATAL(p11n_handshake_read(side[(act + 1) % 2], buf, n) == P11N_OK);
    }
    p11n_handshake_free(side[0]);
    p11n_handshake_free(side[1]);
}

/* C_DeriveKey calls through tests/faultmod.so from loading both keys
 * to freeing them (the module writes its counters at C_Finalize), with
 * `count` handshakes between: the initiator's key is "bolt8-init", the
 * responder's "bolt8-resp", both on the token. */
static unsigned long derives_for(const char *pattern, int count)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/derive-counts", T.dir);
    remove(path);
    setenv("P11N_FAULT_COUNTS", path, 1);
    p11n_key *ik = NULL, *rk = NULL;
    CU_ASSERT_FATAL(p11n_key_load(key_uri("bolt8-init", 1), &ik) == P11N_OK);
    CU_ASSERT_FATAL(p11n_key_load(key_uri("bolt8-resp", 1), &rk) == P11N_OK);
    for (int i = 0; i < count; i++)
        one_handshake(pattern, ik, rk);
    p11n_key_free(ik);
    p11n_key_free(rk);
    unsetenv("P11N_FAULT_COUNTS");
    unsigned long derives = 0, calls;
    char name[64];
    FILE *f = fopen(path, "r");
    CU_ASSERT_FATAL(f != NULL);
    while (fscanf(f, "%63s %lu", name, &calls) == 2)
        if (strcmp(name, "C_DeriveKey") == 0)
            derives = calls;
    fclose(f);
    return derives;
}

/* KK: the initiator's ss costs two derivations the first time (recovering
 * its parity), one afterwards; its se and the responder's es and ss one
 * each (parity by the tag): 5, then 4. XK: the initiator's se two, the
 * responder's es one: 3. Loading costs each key one (its self-check). */
static void test_derivations_per_handshake(void)
{
    unsigned long load = derives_for("KK", 0);
    CU_ASSERT(load == 2);
    CU_ASSERT(derives_for("KK", 1) - load == 5);
    CU_ASSERT(derives_for("KK", 3) - load == 5 + 4 + 4);
    CU_ASSERT(derives_for("XK", 1) - load == 3);
    CU_ASSERT(derives_for("XK", 3) - load == 3 * 3);
}

static void seed_token(void)
{
    static const char *hex11 = "1111111111111111111111111111111111111111111111111111111111111111";
    static const char *hex21 = "2121212121212121212121212121212121212121212121212121212121212121";
    uint8_t other[32];
    uint64_t seed = 7;
    size_t n;
    t_fill(other, 32, &seed);
    struct p11n_token *tok = t_token_open(T.uri);
    t_token_import_key(tok, "k1", K1_PRIV, 1, 1);
    t_token_import_key(tok, "noderive", other, 0, 1);
    t_token_import_key(tok, "nopub", other, 1, 0);
    t_token_p256_key(tok, "p256");
    uint8_t *b = t_unhex(hex11, &n);
    t_token_import_key(tok, "bolt8-init", b, 1, 1);
    free(b);
    b = t_unhex(hex21, &n);
    t_token_import_key(tok, "bolt8-resp", b, 1, 1);
    free(b);
    p11n_token_close(tok);
}

int main(void)
{
    t_token_setup(&T, "p11n-test");
    seed_token();
    static const p11n_test tests[] = {
        { "keygen attributes, duplicate label", test_keygen },
        { "token DH equals software DH (1000 points)", test_dh_equals_software },
        { "token wanting DER points", test_dh_der_form },
        { "10000 DH from 4 threads leave no objects", test_dh_threads_leave_no_objects },
        { "DH failures leave no objects", test_dh_errors_leave_no_objects },
        { "a pair's second derivation taken over by the caller on one CPU",
            test_dh_pair_taken_over },
        { "parity recovery and a KK responder's es and ss on two sessions at once",
          test_dh_two_sessions_at_once },
        { "each error, named with the URI and no PIN", test_errors },
        { "pin-source and PIN callback", test_pin_sources },
        { "configured modules, module-name, two handles", test_configured_module_and_two_handles },
        { "file: keys", test_file_key },
        { "BOLT #8 vectors with the static key in SoftHSM2", test_bolt8_with_token_key },
        { "a recovery closes the sessions borrowed while it ran",
          test_recovery_closes_borrowed_sessions },
        { "a recovery closes the old pool without its anchor",
          test_recovery_closes_pool_without_anchor },
        { "token derivations per handshake: KK 4 (5 the first time), XK 3",
          test_derivations_per_handshake },
        { "extractable or non-sensitive key refused unless allowed", test_extractable_refused },
        { "public-key object: PIN-protected preferred, else a warning",
          test_public_key_object_trust },
        { "a private key planted without the PIN is never used", test_planted_private_key_ignored },
        { "token removed and back under 4 threads: one recovery", test_removed_and_back },
        { "token away: fast TOKEN_UNAVAILABLE, then back", test_token_stays_away },
        { "key replaced under its URI: refused after recovery", test_key_replaced },
        { "wrong PIN and final PIN try never retried", test_pin_never_retried },
        { "fork: the child recovers, the parent goes on", test_fork },
        { NULL, NULL },
    };
    /* P11N_TEST_ONLY=TEXT runs the tests whose name contains TEXT. */
    p11n_test chosen[sizeof(tests) / sizeof(tests[0])];
    const char *only = getenv("P11N_TEST_ONLY");
    size_t n = 0;
    for (const p11n_test *t = tests; t->name != NULL; t++)
        if (only == NULL || strstr(t->name, only) != NULL)
            chosen[n++] = *t;
    chosen[n] = (p11n_test){ NULL, NULL };
    int rc = p11n_test_main("pkcs11", chosen);
    t_token_teardown(&T);
    return rc;
}
