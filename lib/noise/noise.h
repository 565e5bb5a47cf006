/*
 * Noise engine internals (owned by the engine: lib/pattern.c,
 * lib/cipherstate.c, lib/symmetric.c, lib/handshake_state.c).
 * The public face is p11n_noise_* / p11n_cipher_* in p11noise.h.
 * Other internal users (lib/handshake.c, lib/transport.c) rely only on the
 * declarations marked CONTRACT below.
 *
 * Everything follows the Noise Protocol Framework, revision 34.
 */
#ifndef P11N_NOISE_H
#define P11N_NOISE_H

#include "crypto.h"
#include "key.h"

/* ---- patterns (lib/pattern.c) ---- */

/* Message tokens; 0 ends a token list. */
enum p11n_token {
    P11N_TOK_END = 0,
    P11N_TOK_E,
    P11N_TOK_S,
    P11N_TOK_EE,
    P11N_TOK_ES,
    P11N_TOK_SE,
    P11N_TOK_SS,
    P11N_TOK_PSK
};

/* Pre-message contents, as a bit set. */
#define P11N_PRE_E 1u
#define P11N_PRE_S 2u

#define P11N_MAX_MESSAGES 4     /* the longest patterns (deferred) have 4 */
/* Tokens per message including the terminator: the longest message (IX's
 * second, 5 tokens) plus the psk tokens modifiers may add. */
#define P11N_MAX_TOKENS 8
#define P11N_MAX_PROTOCOL_NAME 127
#define P11N_PSKLEN 32
#define P11N_MAX_NOISE_MESSAGE 65535

/* A handshake pattern. Message i is sent by the initiator when i is even. */
typedef struct p11n_pattern {
    const char *name;       /* "XK", "X1K1", ... */
    uint8_t pre[2];         /* P11N_PRE_* of the initiator, the responder */
    uint8_t nmsg;
    uint8_t msg[P11N_MAX_MESSAGES][P11N_MAX_TOKENS];
} p11n_pattern;

/* Look up a base pattern by exact name; NULL if unknown. */
const p11n_pattern *p11n_pattern_by_name(const char *name, size_t len);
/* Every pattern table, NULL-terminated (tests walk it). */
extern const p11n_pattern *const p11n_patterns[];

/* CONTRACT: a parsed protocol name. The engine may add fields. */
typedef struct p11n_protocol {
    const p11n_dh_alg *dh;
    const p11n_cipher_alg *cipher;
    const p11n_hash_alg *hash;
    /* ... pattern data, owned by the engine ... */
    const p11n_pattern *pattern;  /* base pattern, before modifiers */
    uint8_t pre[2];
    uint8_t nmsg;
    /* message tokens with the psk modifiers applied */
    uint8_t msg[P11N_MAX_MESSAGES][P11N_MAX_TOKENS];
    uint8_t npsk;                 /* psk tokens: a PSK handshake if > 0 */
    size_t namelen;
    char name[P11N_MAX_PROTOCOL_NAME + 1];
} p11n_protocol;

/* CONTRACT: parse "Noise_<pattern>_<dh>_<cipher>_<hash>".
 * P11N_ERR_UNSUPPORTED for anything unknown. */
int p11n_protocol_parse(const char *name, p11n_protocol *out);

/* ---- CipherState (lib/cipherstate.c) ---- */

typedef struct p11n_cipherstate {
    p11n_aead aead;         /* holds the key schedule of k */
    int has_key;
    /* A key was meant to be set (set_key or rekey) and failed. Without
     * this, has_key == 0 would turn encryption into a plain copy. */
    int dead;
    uint64_t n;
} p11n_cipherstate;

int p11n_cs_init(p11n_cipherstate *cs, const p11n_cipher_alg *alg);
/* InitializeKey(k): n = 0. If it fails the CipherState is dead: encrypt,
 * decrypt and rekey return STATE from then on (never a plain copy). */
int p11n_cs_set_key(p11n_cipherstate *cs, const uint8_t k[P11N_KEYLEN]);
void p11n_cs_set_nonce(p11n_cipherstate *cs, uint64_t n);
/* EncryptWithAd: out gets len + 16 bytes (len without a key; a plain copy).
 * NONCE_EXHAUSTED once n reached 2^64-1; STATE when dead. out may equal
 * in. */
int p11n_cs_encrypt(p11n_cipherstate *cs, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);
/* DecryptWithAd: out gets len - 16 bytes (len without a key). SHORT_MESSAGE
 * if len < 16, BAD_TAG (out wiped, n unchanged), NONCE_EXHAUSTED, STATE
 * when dead. */
int p11n_cs_decrypt(p11n_cipherstate *cs, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);
/* Rekey(): k = first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros). STATE
 * without a key; a failure kills the CipherState. */
int p11n_cs_rekey(p11n_cipherstate *cs);
/* Bytes EncryptWithAd adds now: 16 with a key, else 0. */
size_t p11n_cs_overhead(const p11n_cipherstate *cs);
/* Frees the key schedule; the CipherState is then dead until cs_init. */
void p11n_cs_clear(p11n_cipherstate *cs);

/* The public transport CipherState (p11n_cipher in p11noise.h). */
struct p11n_cipher {
    p11n_cipherstate cs;
    int failed;             /* a failed decryption kills it */
};
/* Make a p11n_cipher keyed with k (NOMEM, CRYPTO). */
int p11n_cipher_new_keyed(const p11n_cipher_alg *alg, const uint8_t k[P11N_KEYLEN],
    struct p11n_cipher **out);

/* ---- SymmetricState (lib/symmetric.c) ---- */

typedef struct p11n_symmetric {
    const p11n_hash_alg *hash;
    p11n_cipherstate cs;
    uint8_t ck[P11N_MAXHASHLEN];
    uint8_t h[P11N_MAXHASHLEN];
} p11n_symmetric;

/* InitializeSymmetric(protocol_name). */
int p11n_ss_init(p11n_symmetric *ss, const p11n_protocol *p);
int p11n_ss_mix_key(p11n_symmetric *ss, const uint8_t *ikm, size_t len);
int p11n_ss_mix_hash(p11n_symmetric *ss, const uint8_t *data, size_t len);
int p11n_ss_mix_key_and_hash(p11n_symmetric *ss, const uint8_t *ikm, size_t len);
/* out gets len + p11n_cs_overhead() bytes; out must not overlap in. */
int p11n_ss_encrypt_and_hash(p11n_symmetric *ss, const uint8_t *in, size_t len,
    uint8_t *out);
/* out gets len - overhead bytes; out may equal in. BAD_TAG (out wiped),
 * SHORT_MESSAGE. */
int p11n_ss_decrypt_and_hash(p11n_symmetric *ss, const uint8_t *in, size_t len,
    uint8_t *out);
/* Split(): the two cipher keys (truncated to 32 bytes). */
int p11n_ss_split(p11n_symmetric *ss, uint8_t k1[P11N_KEYLEN], uint8_t k2[P11N_KEYLEN]);
void p11n_ss_clear(p11n_symmetric *ss);

/* The rest of a message read after a token DH that gave x only (the
 * parity by the tag): each step mixes one value into the state, and
 * P11N_STEP_X stands for two candidates, SHA256(0x02||x) or
 * SHA256(0x03||x). Every combination is replayed from the state as it
 * is, each decrypts the payload; exactly one must verify. */
enum p11n_step_kind {
    P11N_STEP_DH,       /* MixKey(ikm), ikm: ikmlen bytes */
    P11N_STEP_X,        /* MixKey(candidate), ikm: 32-byte x */
    P11N_STEP_PSK       /* MixKeyAndHash(ikm), ikm: P11N_PSKLEN bytes */
};
typedef struct p11n_step {
    uint8_t kind;
    const uint8_t *ikm;
    size_t ikmlen;
} p11n_step;
/* At most this many P11N_STEP_X in one message (4 combinations). */
#define P11N_MAX_X_STEPS 2

/* Runs the steps and DecryptAndHash(in, len) into out (len - 16 bytes)
 * for every combination of candidates, in constant time: no early exit,
 * no branch or memory index on which combination verified; the state and
 * out take the one that verified by masked copies. Errors: BAD_TAG (none
 * or more than one verified: out wiped, the state unusable), SHORT_MESSAGE,
 * INVALID_ARG (too many X steps), CRYPTO, NOMEM. */
int p11n_ss_read_candidates(p11n_symmetric *ss, const p11n_step *steps, size_t nsteps,
    const uint8_t *in, size_t len, uint8_t *out);

/* ---- HandshakeState (lib/handshake_state.c) ---- */

/* CONTRACT: after the last handshake message, instead of p11n_noise_split:
 * the final chaining key (hash->hashlen bytes) and the two Split() keys
 * (k1 = initiator->responder, k2 = responder->initiator, 32 bytes each).
 * The handshake may then only be freed. */
int p11n_noise_split_keys(p11n_noise *hs, uint8_t *ck, uint8_t k1[P11N_KEYLEN],
    uint8_t k2[P11N_KEYLEN]);
/* CONTRACT: the parsed protocol of a handshake. */
const p11n_protocol *p11n_noise_protocol(const p11n_noise *hs);
/* CONTRACT: 1 if the next message (ours to write or to read) has a DH
 * with our static key. */
int p11n_noise_next_uses_static(const p11n_noise *hs);
/* CONTRACT: the DHs with our static key in the next message (at most
 * `cap`), each one's peer key in peers[]: the remote static key (a DH
 * the key may make cheaper, dh_static), or NULL when the peer is an
 * ephemeral key or not yet known. Returns how many. */
size_t p11n_noise_next_static_peers(const p11n_noise *hs, const uint8_t **peers, size_t cap);
/* CONTRACT: 1 if this side is the initiator. */
int p11n_noise_is_initiator(const p11n_noise *hs);

#endif
