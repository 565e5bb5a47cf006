/* Token ECDH support: the y parity of an x-only result, in constant time
 * (lib/secp256k1_x.c). */
#ifndef P11N_SECP256K1_X_H
#define P11N_SECP256K1_X_H

#include <stdint.h>

/* The Noise DH SHA256(compressed(A)) of the point A whose x-coordinate is
 * x1 and for which x(A + K) = x2: what a token's two x-only derivations,
 * on P and on P + G with K = k·G (or on P - G with K = -k·G), determine.
 * x1, x2 and the result are secrets and handled in constant time; K is
 * public (33-byte compressed). Errors: BAD_PUBKEY when K is not a point or
 * x1 and x2 fit no such A (K is not the key's public point, or the token
 * is wrong), CRYPTO, INVALID_ARG. */
int p11n_secp256k1_dh_from_x(const uint8_t k[33], const uint8_t x1[32],
    const uint8_t x2[32], uint8_t out[32]);

#endif
