/*
 * The y parity a token's x-only ECDH loses, recovered in constant time.
 *
 * A token gives x1 = x(k·P) and x2 = x(k·P + K) for a point K we know
 * (design: "Token DH"). Both are secrets. libsecp256k1 has no public
 * constant-time point addition (its public-key functions are variable
 * time, which is right for public keys), so the parity is found by
 * algebra instead, with no square root: for A = (x1, y) and
 * K = (xk, yk), x(A + K) = λ² - x1 - xk with λ = (yk - y)/(xk - x1), hence
 *     (yk - y)² = (x2 + x1 + xk)·(xk - x1)²,
 * and since y² = x1³ + 7 the square terms are known, leaving one linear
 * equation:
 *     y = (yk² + x1³ + 7 - (x2 + x1 + xk)·(xk - x1)²) / (2·yk).
 * yk is never 0 on secp256k1 (no point of order 2). The result is
 * checked: y² = x1³ + 7 holds only if the token's two outputs fit K;
 * otherwise K is not k·G. For x1 = xk (k·P = K) the formula gives y = yk.
 *
 * The field arithmetic below is written for this one use: fixed
 * sequences of operations on four 64-bit limbs, no branch and no memory
 * index depending on a value (tests/test_ctime.c checks it under
 * valgrind). Values are kept below 2^256, fully reduced only where a
 * result is compared or read.
 */
#include <string.h>

#include "crypto.h"
#include "secp256k1_x.h"
#include "secure.h"

typedef unsigned __int128 u128;

/* p = 2^256 - R; 2^256 ≡ R (mod p). */
#define R 0x1000003D1ull

static const uint64_t P[4] = {
    0xFFFFFFFEFFFFFC2Full, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull,
};

typedef struct fe {
    uint64_t v[4];   /* little-endian limbs, value < 2^256 */
} fe;

static void fe_from_bytes(fe *r, const uint8_t b[32])
{
    for (int i = 0; i < 4; i++) {
        uint64_t w = 0;
        for (int j = 0; j < 8; j++)
            w = w << 8 | b[(3 - i) * 8 + j];
        r->v[i] = w;
    }
}

/* All ones if a < p, else 0 (bytes as read from a token may not be). */
static uint64_t below_p(const fe *a)
{
    uint64_t borrow = 0;
    for (int i = 0; i < 4; i++) {
        u128 d = (u128)a->v[i] - P[i] - borrow;
        borrow = (uint64_t)(d >> 64) & 1;
    }
    return 0 - borrow;
}

/* r = t[0..3] + t[4]·2^256 reduced below 2^256, for t[4] < 2^40. */
static void fold(fe *r, const uint64_t t[5])
{
    u128 acc = (u128)t[4] * R;
    uint64_t w[4];
    for (int i = 0; i < 4; i++) {
        acc += t[i];
        w[i] = (uint64_t)acc;
        acc >>= 64;
    }
    /* The carry is 0 or 1; adding carry·R cannot carry again, as the low
     * limbs are then below 2^72. */
    acc = (u128)(uint64_t)acc * R;
    for (int i = 0; i < 4; i++) {
        acc += w[i];
        r->v[i] = (uint64_t)acc;
        acc >>= 64;
    }
}

static void fe_add(fe *r, const fe *a, const fe *b)
{
    uint64_t t[5];
    u128 acc = 0;
    for (int i = 0; i < 4; i++) {
        acc += (u128)a->v[i] + b->v[i];
        t[i] = (uint64_t)acc;
        acc >>= 64;
    }
    t[4] = (uint64_t)acc;
    fold(r, t);
}

/* r = a - b as a + (2p - b): 2p > 2^256 > b, so nothing goes negative. */
static void fe_sub(fe *r, const fe *a, const fe *b)
{
    uint64_t t[5];
    u128 acc = 0;
    uint64_t borrow = 0;
    uint64_t nb[5];
    /* 2p = 2^257 - 2R: limbs of 2p, then minus b. */
    static const uint64_t P2[5] = {
        0xFFFFFFFDFFFFF85Eull, 0xFFFFFFFFFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull,
        0xFFFFFFFFFFFFFFFFull, 1,
    };
    for (int i = 0; i < 5; i++) {
        u128 d = (u128)P2[i] - (i < 4 ? b->v[i] : 0) - borrow;
        nb[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1;
    }
    for (int i = 0; i < 4; i++) {
        acc += (u128)a->v[i] + nb[i];
        t[i] = (uint64_t)acc;
        acc >>= 64;
    }
    t[4] = (uint64_t)acc + nb[4];
    fold(r, t);
}

static void fe_mul(fe *r, const fe *a, const fe *b)
{
    uint64_t t[8] = { 0 };
    for (int i = 0; i < 4; i++) {
        u128 carry = 0;
        for (int j = 0; j < 4; j++) {
            carry += (u128)a->v[i] * b->v[j] + t[i + j];
            t[i + j] = (uint64_t)carry;
            carry >>= 64;
        }
        t[i + 4] = (uint64_t)carry;
    }
    /* t = lo + hi·2^256 ≡ lo + hi·R. */
    uint64_t s[5];
    u128 acc = 0;
    for (int i = 0; i < 4; i++) {
        acc += (u128)t[i] + (u128)t[i + 4] * R;
        s[i] = (uint64_t)acc;
        acc >>= 64;
    }
    s[4] = (uint64_t)acc;
    fold(r, s);
    p11n_wipe(t, sizeof(t));
    p11n_wipe(s, sizeof(s));
}

/* The unique representative below p. */
static void fe_normalize(fe *r)
{
    uint64_t s[4], borrow = 0;
    for (int i = 0; i < 4; i++) {
        u128 d = (u128)r->v[i] - P[i] - borrow;
        s[i] = (uint64_t)d;
        borrow = (uint64_t)(d >> 64) & 1;
    }
    /* borrow: r < p, keep r; else r - p. */
    uint64_t keep = 0 - borrow;
    for (int i = 0; i < 4; i++)
        r->v[i] = (r->v[i] & keep) | (s[i] & ~keep);
}

/* a^(p-2) = 1/a. The exponent is public, so its bits may steer. */
static void fe_inv(fe *r, const fe *a)
{
    fe x = { { 1, 0, 0, 0 } };
    for (int i = 255; i >= 0; i--) {
        fe_mul(&x, &x, &x);
        uint64_t e = P[i / 64] - (i / 64 == 0 ? 2 : 0);
        if ((e >> (i % 64)) & 1)
            fe_mul(&x, &x, a);
    }
    *r = x;
    p11n_wipe(&x, sizeof(x));
}

/* All ones if a == b (both normalized), else 0. */
static uint64_t fe_eq_mask(const fe *a, const fe *b)
{
    uint64_t d = 0;
    for (int i = 0; i < 4; i++)
        d |= a->v[i] ^ b->v[i];
    /* d == 0 iff equal: (d | -d) has the top bit set iff d != 0. */
    return ((d | (0 - d)) >> 63) - 1;
}

/* The point K as two field elements (public: K is a public key). */
static int point_xy(const uint8_t k[33], fe *xk, fe *yk)
{
    uint8_t full[65];
    int rc = p11n_secp256k1_uncompress(k, full);
    if (rc != P11N_OK)
        return rc;
    fe_from_bytes(xk, full + 1);
    fe_from_bytes(yk, full + 33);
    return P11N_OK;
}

/* y for x1 as explained at the top; *ok all ones if it checks out. */
static void solve_y(const fe *xk, const fe *yk, const fe *x1, const fe *x2, fe *y,
    uint64_t *ok)
{
    static const fe seven = { { 7, 0, 0, 0 } };
    fe s, t, u, num, den;
    fe_mul(&s, x1, x1);
    fe_mul(&s, &s, x1);
    fe_add(&s, &s, &seven);            /* s = x1³ + 7 = y² */
    fe_sub(&u, xk, x1);
    fe_mul(&u, &u, &u);                /* (xk - x1)² */
    fe_add(&t, x2, x1);
    fe_add(&t, &t, xk);
    fe_mul(&t, &t, &u);                /* T */
    fe_mul(&num, yk, yk);
    fe_add(&num, &num, &s);
    fe_sub(&num, &num, &t);
    fe_add(&den, yk, yk);
    fe_inv(&den, &den);
    fe_mul(y, &num, &den);
    fe_mul(&u, y, y);                  /* check: y² == s */
    fe_normalize(&u);
    fe_normalize(&s);
    fe_normalize(y);
    *ok = fe_eq_mask(&u, &s) & below_p(x1) & below_p(x2);
    p11n_wipe(&s, sizeof(s));
    p11n_wipe(&t, sizeof(t));
    p11n_wipe(&u, sizeof(u));
    p11n_wipe(&num, sizeof(num));
}

int p11n_secp256k1_dh_of_x(const uint8_t x[32], unsigned parity, uint8_t out[32])
{
    if (x == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    uint8_t point[33];
    /* arithmetic, not a branch: the parity is secret */
    point[0] = (uint8_t)(0x02 | (parity & 1));
    memcpy(point + 1, x, 32);
    p11n_iov iov = { point, sizeof(point) };
    int rc = p11n_hash(&p11n_hash_sha256, &iov, 1, out) == P11N_OK ? P11N_OK : P11N_ERR_CRYPTO;
    p11n_wipe(point, sizeof(point));
    return rc;
}

int p11n_secp256k1_dh_from_x_parity(const uint8_t k[33], const uint8_t x1[32],
    const uint8_t x2[32], uint8_t out[32], uint8_t *parity)
{
    if (k == NULL || x1 == NULL || x2 == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    fe xk, yk, a, b, y;
    int rc = point_xy(k, &xk, &yk);
    if (rc != P11N_OK)
        return rc;
    fe_from_bytes(&a, x1);
    fe_from_bytes(&b, x2);
    uint64_t ok;
    solve_y(&xk, &yk, &a, &b, &y, &ok);
    /* Whether the token's outputs fit K is public: a mismatch fails the
     * handshake with an error. The parity itself stays secret. */
    p11n_declassify(&ok, sizeof(ok));
    unsigned bit = (unsigned)(y.v[0] & 1);
    if (ok == 0)
        rc = P11N_ERR_BAD_PUBKEY;
    else
        rc = p11n_secp256k1_dh_of_x(x1, bit, out);
    if (rc == P11N_OK && parity != NULL)
        *parity = (uint8_t)bit;
    bit = 0;
    p11n_wipe(&a, sizeof(a));
    p11n_wipe(&b, sizeof(b));
    p11n_wipe(&y, sizeof(y));
    return rc;
}

int p11n_secp256k1_dh_from_x(const uint8_t k[33], const uint8_t x1[32],
    const uint8_t x2[32], uint8_t out[32])
{
    return p11n_secp256k1_dh_from_x_parity(k, x1, x2, out, NULL);
}
