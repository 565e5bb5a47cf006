/* A token's x-only ECDH output, computed with libsecp256k1. */
#include <string.h>
#include <secp256k1.h>
#include <secp256k1_ecdh.h>

#include "tokenx.h"

/* libsecp256k1's ECDH hands its hash function the shared point; keeping
 * only x is exactly what CKD_NULL gives. */
static int copy_x(unsigned char *out, const unsigned char *x32, const unsigned char *y32,
    void *data)
{
    (void)y32;
    (void)data;
    memcpy(out, x32, 32);
    return 1;
}

int t_token_x(const uint8_t k[32], const uint8_t q[33], uint8_t x[32])
{
    secp256k1_context *c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    secp256k1_pubkey pq;
    int ok = c != NULL && secp256k1_ec_pubkey_parse(c, &pq, q, 33)
        && secp256k1_ecdh(c, x, &pq, k, copy_x, NULL);
    secp256k1_context_destroy(c);
    return ok ? 0 : -1;
}
