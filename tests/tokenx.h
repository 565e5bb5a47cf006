/* What a PKCS#11 token returns for CKM_ECDH1_DERIVE with CKD_NULL, computed
 * in software: for testing the parity recovery without a token. */
#ifndef P11N_TOKENX_H
#define P11N_TOKENX_H

#include <stdint.h>

/* x = x(k·Q), Q a 33-byte compressed point. Returns 0, or -1 if Q is not a
 * point or k not a valid scalar. */
int t_token_x(const uint8_t k[32], const uint8_t q[33], uint8_t x[32]);

#endif
