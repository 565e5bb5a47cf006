/*
 * Static-key DH through the token. CKM_ECDH1_DERIVE with CKD_NULL yields
 * only x(k·P); the Noise DH is SHA256(compressed(k·P)), which needs the y
 * parity too. A second derivation on P + G gives x(k·P + K), K = k·G being
 * the key's public point: of the two points with x-coordinate x(k·P),
 * exactly one plus K has that x-coordinate.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ckr.h"
#include "crypto.h"
#include "secp256k1_x.h"
#include "secure.h"
#include "token.h"

/* Errors a token may give for a point encoding it does not take. */
static int form_rejected(CK_RV rv)
{
    switch (rv) {
    case CKR_ARGUMENTS_BAD:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_DOMAIN_PARAMS_INVALID:
    case CKR_DATA_INVALID:
    case CKR_DATA_LEN_RANGE:
    case CKR_FUNCTION_FAILED:
    case CKR_GENERAL_ERROR:
        return 1;
    default:
        return 0;
    }
}

/* Note a failed call on the session: the first failure decides whether
 * the token lost the session. */
static int failed(struct p11n_token *tok, struct p11n_token_use *u, const char *call, CK_RV rv)
{
    if (u->rv == CKR_OK)
        u->rv = rv;
    u->dead |= p11n_ckr_session_dead(rv);
    return p11n_token_fail(tok, call, rv);
}

/* One derivation into a session-only secret, read and destroyed. */
static int derive_once(struct p11n_token *tok, struct p11n_token_use *u,
    const uint8_t *pt, size_t ptlen, uint8_t x[32], CK_RV *rv_out)
{
    CK_ECDH1_DERIVE_PARAMS params = {
        .kdf = CKD_NULL,
        .ulSharedDataLen = 0,
        .pSharedData = NULL,
        .ulPublicDataLen = (CK_ULONG)ptlen,
        .pPublicData = (CK_BYTE_PTR)pt,
    };
    CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &params, sizeof(params) };
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_GENERIC_SECRET;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ULONG vlen = 32;
    /* A session object, readable: the value must come out to be hashed,
     * and the object vanishes with the session at worst. Not private:
     * session objects are this application's alone anyway, and SoftHSM
     * would encrypt a private one's value for nothing. */
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &no, sizeof(no) },
        { CKA_PRIVATE, &no, sizeof(no) },
        { CKA_SENSITIVE, &no, sizeof(no) },
        { CKA_EXTRACTABLE, &yes, sizeof(yes) },
        { CKA_VALUE_LEN, &vlen, sizeof(vlen) },
    };
    CK_OBJECT_HANDLE obj = CK_INVALID_HANDLE;
    CK_RV rv = tok->fn->C_DeriveKey(u->s, &mech, u->key, tmpl, sizeof(tmpl) / sizeof(tmpl[0]),
        &obj);
    *rv_out = rv;
    if (rv != CKR_OK)
        return failed(tok, u, "C_DeriveKey", rv);
    uint8_t v[32];
    CK_ATTRIBUTE a = { CKA_VALUE, v, sizeof(v) };
    rv = tok->fn->C_GetAttributeValue(u->s, obj, &a, 1);
    CK_RV drv = tok->fn->C_DestroyObject(u->s, obj);
    int err = P11N_OK;
    if (rv != CKR_OK) {
        err = failed(tok, u, "C_GetAttributeValue", rv);
    } else if (a.ulValueLen != sizeof(v)) {
        err = p11n_token_errorf(P11N_ERR_TOKEN, tok->uri,
            "C_DeriveKey gave a %lu-byte secret, expected 32", (unsigned long)a.ulValueLen);
    }
    if (drv != CKR_OK) {
        /* Closing the session destroys what it could not. */
        if (err == P11N_OK)
            err = failed(tok, u, "C_DestroyObject", drv);
        u->dead = 1;
    }
    if (err == P11N_OK)
        memcpy(x, v, sizeof(v));
    p11n_wipe(v, sizeof(v));
    return err;
}

static int derive_on(struct p11n_token *tok, struct p11n_token_use *u,
    const uint8_t peer[P11N_PUBKEY_LEN], uint8_t x[32])
{
    uint8_t der[P11N_EC_POINT_DER_LEN];
    if (p11n_ec_point_der(peer, der) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    const uint8_t *raw = der + 2;
    CK_RV rv;
    switch (atomic_load(&tok->point_form)) {
    case P11N_FORM_RAW:
        return derive_once(tok, u, raw, 65, x, &rv);
    case P11N_FORM_DER:
        return derive_once(tok, u, der, sizeof(der), x, &rv);
    default:
        break;
    }
    /* First derivation on this token: PKCS#11 v2.40 asks tokens to take
     * the raw point, older ones want the DER form. Try raw, then DER. */
    int err = derive_once(tok, u, raw, 65, x, &rv);
    if (err == P11N_OK) {
        atomic_store(&tok->point_form, P11N_FORM_RAW);
        return P11N_OK;
    }
    if (!form_rejected(rv))
        return err;
    u->rv = CKR_OK;     /* the first form's refusal says nothing of the session */
    err = derive_once(tok, u, der, sizeof(der), x, &rv);
    if (err == P11N_OK) {
        atomic_store(&tok->point_form, P11N_FORM_DER);
        p11n_token_error_clear();
    }
    return err;
}

int p11n_token_derive_x(struct p11n_token *tok, CK_OBJECT_HANDLE key,
    const uint8_t peer[P11N_PUBKEY_LEN], uint8_t x[32])
{
    if (p11n_dh_secp256k1.check_pub(peer) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    struct p11n_token_use u;
    int err = p11n_token_session_get(tok, &u);
    if (err != P11N_OK)
        return err;
    u.key = key;
    err = derive_on(tok, &u, peer, x);
    p11n_token_session_put(tok, &u);
    return err;
}

/* SHA256(compressed(k·P)) from x1 = x(k·P) and x2 = x(k·P + kadj), in
 * constant time: x1 and x2 are the DH secret (lib/secp256k1_x.c). */
static int pick_parity(const struct p11n_token *tok, const uint8_t kadj[P11N_PUBKEY_LEN],
    const uint8_t x1[32], const uint8_t x2[32], uint8_t out[32], uint8_t *parity)
{
    int err = p11n_secp256k1_dh_from_x_parity(kadj, x1, x2, out, parity);
    if (err == P11N_ERR_BAD_PUBKEY)
        /* Only possible when K is not k·G. */
        err = p11n_token_errorf(P11N_ERR_TOKEN, tok->uri,
            "the key's public key object does not match its private key");
    return err;
}

/* The second derivation of a pair, on its own session and thread. The
 * caller and the thread each hold a reference: a thread that started too
 * late may outlive the caller's interest in it. */
enum { SIDE_WAITING, SIDE_RUNNING, SIDE_TAKEN };

struct side_job {
    struct p11n_token *tok;
    struct p11n_token_use u;
    const uint8_t *q;
    uint8_t *x;
    int err;
    atomic_int state;   /* SIDE_*: who runs the derivation */
    atomic_int refs;
};

static void side_unref(struct side_job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1)
        free(j);
}

static void *side_run(void *arg)
{
    struct side_job *j = arg;
    int waiting = SIDE_WAITING;
    if (atomic_compare_exchange_strong(&j->state, &waiting, SIDE_RUNNING))
        j->err = derive_on(j->tok, &j->u, j->q, j->x);
    side_unref(j);
    return NULL;
}

/* x2 = x(k·Q) while the caller derives x1: on a second session, from a
 * second thread, so a token that works on sessions in parallel takes
 * one derivation's time for both. NULL if not started (the caller then
 * derives both itself). */
static struct side_job *side_start(struct p11n_token *tok, pthread_t *th, const uint8_t *q,
    uint8_t *x2)
{
    struct side_job *j = malloc(sizeof(*j));
    if (j == NULL)
        return NULL;
    j->tok = tok;
    j->u = (struct p11n_token_use){ .s = CK_INVALID_HANDLE, .rv = CKR_OK };
    j->q = q;
    j->x = x2;
    j->err = P11N_OK;
    atomic_init(&j->state, SIDE_WAITING);
    atomic_init(&j->refs, 2);
    if (p11n_token_use_begin(tok, &j->u) != P11N_OK) {
        p11n_token_error_clear();
        free(j);
        return NULL;
    }
    if (pthread_create(th, NULL, side_run, j) != 0) {
        p11n_token_use_end(tok, &j->u);
        free(j);
        return NULL;
    }
    return j;
}

/* The side derivation's outcome folded into the caller's (err), once the
 * caller's own derivation is done. A thread that has not started yet
 * (no CPU was free for it: a token that computes on the host's CPUs, on
 * a busy machine) is not waited for: the caller runs the derivation
 * itself, on the side's session, as a token without parallel sessions
 * would have it anyway. Token errors are per thread: the thread's is
 * recorded again on this one. */
static int side_finish(struct p11n_token *tok, struct side_job *j, pthread_t th,
    struct p11n_token_use *u, int err)
{
    int waiting = SIDE_WAITING;
    if (atomic_compare_exchange_strong(&j->state, &waiting, SIDE_TAKEN)) {
        pthread_detach(th);
        if (err == P11N_OK)
            j->err = derive_on(tok, &j->u, j->q, j->x);
    } else {
        pthread_join(th, NULL);
    }
    if (err == P11N_OK && j->err != P11N_OK) {
        err = j->u.rv != CKR_OK ? p11n_token_fail(tok, "C_DeriveKey", j->u.rv) : j->err;
        u->rv = j->u.rv;
    }
    p11n_token_use_end(tok, &j->u);
    side_unref(j);
    return err;
}

/* x1 = x(k·P) and, unless q is NULL, x2 = x(k·Q) (on a second session at
 * the same time when one can be had), in the current generation. */
static int derive_pair(struct p11n_token *tok, const uint8_t peer[P11N_PUBKEY_LEN],
    const uint8_t *q, uint8_t x1[32], uint8_t x2[32], unsigned *gen, int *lost)
{
    struct p11n_token_use u = { .s = CK_INVALID_HANDLE, .rv = CKR_OK };
    *lost = 0;
    int err = p11n_token_use_begin(tok, &u);
    if (err != P11N_OK) {
        /* Opening a session can be the first call to notice. */
        *lost = p11n_ckr_lost(u.rv);
        *gen = u.gen;
        return err;
    }
    pthread_t th;
    struct side_job *side = q != NULL ? side_start(tok, &th, q, x2) : NULL;
    err = derive_on(tok, &u, peer, x1);
    if (side != NULL)
        err = side_finish(tok, side, th, &u, err);
    else if (err == P11N_OK && q != NULL)
        err = derive_on(tok, &u, q, x2);
    *lost = err != P11N_OK && p11n_ckr_lost(u.rv);
    *gen = u.gen;
    p11n_token_use_end(tok, &u);
    return err;
}

/* derive_pair, and once more after recovering when the token lost our
 * sessions. */
static int derive_recovering(struct p11n_token *tok, const uint8_t peer[P11N_PUBKEY_LEN],
    const uint8_t *q, uint8_t x1[32], uint8_t x2[32])
{
    unsigned gen;
    int lost;
    int err = derive_pair(tok, peer, q, x1, x2, &gen, &lost);
    if (lost) {
        err = p11n_token_recover(tok, gen);
        if (err == P11N_OK)
            err = derive_pair(tok, peer, q, x1, x2, &gen, &lost);
    }
    return err;
}

int p11n_token_ecdh_x(struct p11n_token *tok, const uint8_t peer[P11N_PUBKEY_LEN],
    uint8_t x[32])
{
    /* An off-curve point makes tokens fail in unhelpful ways (SoftHSM:
     * CKR_GENERAL_ERROR): refuse it here. */
    if (p11n_dh_secp256k1.check_pub(peer) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    return derive_recovering(tok, peer, NULL, x, NULL);
}

int p11n_token_ecdh_x2(struct p11n_token *tok, const uint8_t p1[P11N_PUBKEY_LEN],
    const uint8_t p2[P11N_PUBKEY_LEN], uint8_t x1[32], uint8_t x2[32])
{
    if (p11n_dh_secp256k1.check_pub(p1) != P11N_OK || p11n_dh_secp256k1.check_pub(p2) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    return derive_recovering(tok, p1, p2, x1, x2);
}

int p11n_token_ecdh(struct p11n_token *tok, const uint8_t K[P11N_PUBKEY_LEN],
    const uint8_t peer[P11N_PUBKEY_LEN], uint8_t out[32], uint8_t *parity)
{
    if (p11n_dh_secp256k1.check_pub(peer) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    uint8_t q[P11N_PUBKEY_LEN], kadj[P11N_PUBKEY_LEN];
    if (p11n_secp256k1_add(peer, p11n_secp256k1_generator, q) == P11N_OK) {
        memcpy(kadj, K, sizeof(kadj));
    } else {
        /* P = -G: use P - G, so k·(P - G) = k·P - K. */
        uint8_t neg_g[P11N_PUBKEY_LEN];
        if (p11n_secp256k1_negate(p11n_secp256k1_generator, neg_g) != P11N_OK ||
            p11n_secp256k1_add(peer, neg_g, q) != P11N_OK ||
            p11n_secp256k1_negate(K, kadj) != P11N_OK)
            return P11N_ERR_CRYPTO;
    }

    uint8_t x1[32], x2[32];
    int err = derive_recovering(tok, peer, q, x1, x2);
    if (err == P11N_OK)
        err = pick_parity(tok, kadj, x1, x2, out, parity);
    p11n_wipe(x1, sizeof(x1));
    p11n_wipe(x2, sizeof(x2));
    return err;
}
