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

/* Keep the handshake hash h that ended the handshake (channel binding;
 * not secret, but bound to this session only). len <= P11N_MAXHASHLEN. */
void p11n_transport_set_hash(p11n_transport *t, const uint8_t *h, size_t len);

/* The hash kept by p11n_transport_set_hash, copied into out (cap bytes).
 * Errors: STATE (none kept), BUFFER_TOO_SMALL (*len says how much). */
int p11n_transport_hash(const p11n_transport *t, uint8_t *out, size_t cap, size_t *len);

/* Key rotations so far, per direction, and the wall-clock time of the
 * last one in either direction (ms since 1970 UTC; 0: none yet). */
struct p11n_rotations {
    uint64_t sent, received;
    uint64_t last_unix_ms;
};
void p11n_transport_rotations(const p11n_transport *t, struct p11n_rotations *out);

#endif
