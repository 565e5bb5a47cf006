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

/* The same, and *parity (may be NULL) gets the y parity of A (0 or 1):
 * a secret bit, which a caller may keep for a static peer (the same for
 * every handshake with it) and then need only x1. */
int p11n_secp256k1_dh_from_x_parity(const uint8_t k[33], const uint8_t x1[32],
    const uint8_t x2[32], uint8_t out[32], uint8_t *parity);

/* SHA256(0x02 + parity || x): the Noise DH of the point with x-coordinate
 * x and y parity `parity` (0 or 1), in constant time. Both values are
 * candidates when only x is known (the engine's parity by the tag).
 * Errors: INVALID_ARG, CRYPTO. */
int p11n_secp256k1_dh_of_x(const uint8_t x[32], unsigned parity, uint8_t out[32]);

#endif
