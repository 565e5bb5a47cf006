/*
 * The constant-time parity recovery of a token's x-only ECDH
 * (lib/secp256k1_x.c) against software ECDH: the same 32 bytes for every
 * key and both parities, the P = -G and P = G corners, and refusal of
 * outputs that do not fit the key's public point.
 */
#include <string.h>

#include "testutil.h"
#include "crypto.h"
#include "secp256k1_x.h"
#include "tokenx.h"

static const p11n_dh_alg *const dh = &p11n_dh_secp256k1;

/* What pkcs11/ecdh.c asks of the token for peer P and key k with public
 * point K: x(k·P) and x(k·(P + G)) with K, or for P = -G x(k·(P - G))
 * with -K; then the recovery. */
static int recover(const uint8_t k[32], const uint8_t K[33], const uint8_t peer[33],
    uint8_t out[32])
{
    uint8_t q[33], kadj[33], x1[32], x2[32];
    if (p11n_secp256k1_add(peer, p11n_secp256k1_generator, q) == P11N_OK) {
        memcpy(kadj, K, 33);
    } else {
        uint8_t neg_g[33];
        CU_ASSERT_FATAL(p11n_secp256k1_negate(p11n_secp256k1_generator, neg_g) == P11N_OK);
        CU_ASSERT_FATAL(p11n_secp256k1_add(peer, neg_g, q) == P11N_OK);
        CU_ASSERT_FATAL(p11n_secp256k1_negate(K, kadj) == P11N_OK);
    }
    CU_ASSERT_FATAL(t_token_x(k, peer, x1) == 0);
    CU_ASSERT_FATAL(t_token_x(k, q, x2) == 0);
    return p11n_secp256k1_dh_from_x(kadj, x1, x2, out);
}

/* Many keys, so that both y parities of k·P occur (each 1/2 per key);
 * the test counts them to be sure. */
static void test_matches_software_dh(void)
{
    int parity_seen[2] = { 0, 0 };
    for (int i = 0; i < 64; i++) {
        uint8_t k[32], K[33], e[32], peer[33], want[32], got[32];
        CU_ASSERT_FATAL(dh->generate(k, K) == P11N_OK);
        CU_ASSERT_FATAL(dh->generate(e, peer) == P11N_OK);
        CU_ASSERT_FATAL(dh->dh(k, peer, want) == P11N_OK);
        CU_ASSERT_FATAL(recover(k, K, peer, got) == P11N_OK);
        CU_ASSERT(memcmp(got, want, 32) == 0);
        /* the parity of k·P: k·P = e·(k·G), so DH(e, K) names the point too */
        uint8_t x[32], cand[33];
        CU_ASSERT_FATAL(t_token_x(k, peer, x) == 0);
        for (int p = 0; p < 2; p++) {
            cand[0] = (uint8_t)(0x02 | p);
            memcpy(cand + 1, x, 32);
            p11n_iov iov = { cand, 33 };
            uint8_t h[32];
            CU_ASSERT_FATAL(p11n_hash(&p11n_hash_sha256, &iov, 1, h) == P11N_OK);
            parity_seen[p] |= memcmp(h, want, 32) == 0;
        }
    }
    CU_ASSERT(parity_seen[0] && parity_seen[1]);
}

/* P = -G takes the P - G branch; P = G makes k·P = K itself (x1 = xK). */
static void test_generator_corners(void)
{
    uint8_t k[32], K[33], peer[33], want[32], got[32];
    CU_ASSERT_FATAL(dh->generate(k, K) == P11N_OK);
    CU_ASSERT_FATAL(p11n_secp256k1_negate(p11n_secp256k1_generator, peer) == P11N_OK);
    CU_ASSERT_FATAL(dh->dh(k, peer, want) == P11N_OK);
    CU_ASSERT_FATAL(recover(k, K, peer, got) == P11N_OK);
    CU_ASSERT(memcmp(got, want, 32) == 0);

    memcpy(peer, p11n_secp256k1_generator, 33);
    CU_ASSERT_FATAL(dh->dh(k, peer, want) == P11N_OK);
    CU_ASSERT_FATAL(recover(k, K, peer, got) == P11N_OK);
    CU_ASSERT(memcmp(got, want, 32) == 0);
}

/* Outputs that fit no point: a key object that is not the key's public
 * half, a second output equal to the first, or not below the field
 * prime. (Swapped outputs do fit a point, -(A + K): not a misfit.) */
static void test_refuses_misfits(void)
{
    uint8_t k[32], K[33], other[32], otherK[33], e[32], peer[33], q[33], out[32];
    uint8_t x1[32], x2[32], ff[32];
    CU_ASSERT_FATAL(dh->generate(k, K) == P11N_OK);
    CU_ASSERT_FATAL(dh->generate(other, otherK) == P11N_OK);
    CU_ASSERT_FATAL(dh->generate(e, peer) == P11N_OK);
    CU_ASSERT(recover(k, otherK, peer, out) == P11N_ERR_BAD_PUBKEY);

    CU_ASSERT_FATAL(p11n_secp256k1_add(peer, p11n_secp256k1_generator, q) == P11N_OK);
    CU_ASSERT_FATAL(t_token_x(k, peer, x1) == 0);
    CU_ASSERT_FATAL(t_token_x(k, q, x2) == 0);
    CU_ASSERT(p11n_secp256k1_dh_from_x(K, x1, x2, out) == P11N_OK);
    /* x(A + K) = x(A) would need K = -2A */
    CU_ASSERT(p11n_secp256k1_dh_from_x(K, x1, x1, out) == P11N_ERR_BAD_PUBKEY);
    memset(ff, 0xff, sizeof(ff));
    CU_ASSERT(p11n_secp256k1_dh_from_x(K, ff, x2, out) == P11N_ERR_BAD_PUBKEY);
    CU_ASSERT(p11n_secp256k1_dh_from_x(K, x1, ff, out) == P11N_ERR_BAD_PUBKEY);
    /* K itself must be a point */
    uint8_t bad[33];
    memcpy(bad, K, 33);
    bad[0] = 0x05;
    CU_ASSERT(p11n_secp256k1_dh_from_x(bad, x1, x2, out) == P11N_ERR_BAD_PUBKEY);
    CU_ASSERT(p11n_secp256k1_dh_from_x(NULL, x1, x2, out) == P11N_ERR_INVALID_ARG);
}

static const p11n_test tests[] = {
    { "recovery matches software ECDH, both parities", test_matches_software_dh },
    { "P = -G and P = G", test_generator_corners },
    { "outputs that fit no point are refused", test_refuses_misfits },
    { NULL, NULL },
};

int main(void)
{
    return p11n_test_main("secp256k1_x", tests);
}
