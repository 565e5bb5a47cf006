/*
 * Noise engine internals (owned by the engine: lib/pattern.c,
 * lib/cipherstate.c, lib/symmetric.c, lib/handshake_state.c).
 * The public face is p11n_noise_* / p11n_cipher_* in p11noise.h.
 * Other internal users (lib/handshake.c, lib/transport.c) rely only on the
 * declarations marked CONTRACT below.
 */
#ifndef P11N_NOISE_H
#define P11N_NOISE_H

#include "crypto.h"
#include "key.h"

/* CONTRACT: a parsed protocol name. The engine may add fields. */
typedef struct p11n_protocol {
    const p11n_dh_alg *dh;
    const p11n_cipher_alg *cipher;
    const p11n_hash_alg *hash;
    /* ... pattern data, owned by the engine ... */
} p11n_protocol;

/* CONTRACT: parse "Noise_<pattern>_<dh>_<cipher>_<hash>".
 * P11N_ERR_UNSUPPORTED for anything unknown. */
int p11n_protocol_parse(const char *name, p11n_protocol *out);

/* CONTRACT: after the last handshake message, instead of p11n_noise_split:
 * the final chaining key (hash->hashlen bytes) and the two Split() keys
 * (k1 = initiator->responder, k2 = responder->initiator, 32 bytes each).
 * The handshake may then only be freed. */
int p11n_noise_split_keys(p11n_noise *hs, uint8_t *ck, uint8_t k1[P11N_KEYLEN],
    uint8_t k2[P11N_KEYLEN]);
/* CONTRACT: the parsed protocol of a handshake. */
const p11n_protocol *p11n_noise_protocol(const p11n_noise *hs);
/* CONTRACT: 1 if this side is the initiator. */
int p11n_noise_is_initiator(const p11n_noise *hs);

#endif
