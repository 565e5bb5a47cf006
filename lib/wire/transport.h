/*
 * Transport internals shared with the handshake (lib/handshake.c).
 * The public face is p11n_transport_* in p11noise.h.
 */
#ifndef P11N_TRANSPORT_H
#define P11N_TRANSPORT_H

#include "crypto.h"

/* Bytes of the encrypted length field that opens every frame. */
#define P11N_LENGTH_FIELD 2
#define P11N_HEADER_LEN (P11N_LENGTH_FIELD + P11N_TAG_LEN)

/* A key is rotated when its nonce reaches this value (BOLT #8). */
#define P11N_ROTATE_AT 1000

/* Make a transport for an explicit hash and cipher. `ck` holds
 * hash->hashlen bytes; both directions start from it. The caller keeps
 * (and wipes) its copies of the keys. Errors: INVALID_ARG, NOMEM, CRYPTO. */
int p11n_transport_create(const p11n_hash_alg *hash, const p11n_cipher_alg *cipher,
    const uint8_t *ck, const uint8_t sk[P11N_KEYLEN], const uint8_t rk[P11N_KEYLEN],
    p11n_transport **out);

/* Release the receive buffer unless it holds part of a frame body that
 * arrived split across feeds (a partial header is kept elsewhere and
 * survives). The buffer also holds the plaintext of the last message
 * p11n_transport_feed returned: a trim wipes it and invalidates that
 * pointer, so call this only between feeds, once the message is used.
 * The next feed that needs a buffer allocates one again, and may then
 * fail with the retryable P11N_ERR_NOMEM. Returns 1 if a buffer was
 * freed, 0 if there was none or it is in use. */
int p11n_transport_trim(p11n_transport *t);

#endif
