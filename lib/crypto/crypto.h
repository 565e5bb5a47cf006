/*
 * Software crypto layer: the hash, cipher and DH tables the Noise engine
 * walks. Every algorithm is a const table entry; the engine has no
 * per-algorithm branches.
 */
#ifndef P11N_CRYPTO_H
#define P11N_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include "p11noise.h"

#define P11N_MAXHASHLEN 64
#define P11N_MAXBLOCKLEN 128
#define P11N_KEYLEN 32          /* Noise cipher key */
#define P11N_MAXDHLEN 56        /* X448 */
#define P11N_MAXPUBLEN 56
#define P11N_MAXPRIVLEN 56
#define P11N_NONCE_MAX UINT64_MAX /* reserved by the Noise spec */

/* A contiguous input piece, so hashes of concatenations need no copy. */
typedef struct p11n_iov {
    const void *p;
    size_t len;
} p11n_iov;

/* ---- hashes (OpenSSL EVP) ---- */
typedef struct p11n_hash_alg {
    const char *name;      /* Noise name: "SHA256", "SHA512", "BLAKE2s", "BLAKE2b" */
    const char *evp_name;  /* OpenSSL fetch name */
    size_t hashlen;
    size_t blocklen;
} p11n_hash_alg;

extern const p11n_hash_alg p11n_hash_sha256, p11n_hash_sha512,
    p11n_hash_blake2s, p11n_hash_blake2b;

/* Look up by Noise name (exact, `len` bytes); NULL if unknown. */
const p11n_hash_alg *p11n_hash_by_name(const char *name, size_t len);

/* out = HASH(parts[0] || ... || parts[n-1]); out holds hashlen bytes. */
int p11n_hash(const p11n_hash_alg *h, const p11n_iov *parts, size_t n, uint8_t *out);
/* out = HMAC-HASH(key, parts...). */
int p11n_hmac(const p11n_hash_alg *h, const uint8_t *key, size_t keylen,
    const p11n_iov *parts, size_t n, uint8_t *out);
/* Noise HKDF(ck, ikm, nout): nout in 2..3; each out is hashlen bytes (out3
 * may be NULL when nout == 2). Intermediates are wiped. */
int p11n_hkdf(const p11n_hash_alg *h, const uint8_t *ck, const uint8_t *ikm,
    size_t ikmlen, int nout, uint8_t *out1, uint8_t *out2, uint8_t *out3);

/* ---- AEAD ciphers (OpenSSL EVP) ---- */
typedef struct p11n_cipher_alg {
    const char *name;      /* "ChaChaPoly", "AESGCM" */
    const char *evp_name;  /* "ChaCha20-Poly1305", "AES-256-GCM" */
    /* Noise nonce layout: 96-bit IV from the 64-bit counter. */
    void (*nonce)(uint64_t n, uint8_t iv[12]);
} p11n_cipher_alg;

extern const p11n_cipher_alg p11n_cipher_chachapoly, p11n_cipher_aesgcm;
const p11n_cipher_alg *p11n_cipher_by_name(const char *name, size_t len);

/* A keyed AEAD context: the key schedule is done once in setkey, so each
 * message costs only the IV setup and the cipher itself. */
typedef struct p11n_aead {
    const p11n_cipher_alg *alg;
    void *enc;             /* EVP_CIPHER_CTX *, keyed for encryption; NULL if not made */
    void *dec;             /* EVP_CIPHER_CTX *, keyed for decryption; NULL if not made */
} p11n_aead;

/* Directions for p11n_aead_init_dir: a context made for one direction
 * holds one EVP context instead of two, and the other operation returns
 * P11N_ERR_STATE. */
#define P11N_AEAD_SEAL 1
#define P11N_AEAD_OPEN 2
int p11n_aead_init_dir(p11n_aead *a, const p11n_cipher_alg *alg, int dirs);
/* Both directions (a Noise CipherState seals and opens during handshake). */
int p11n_aead_init(p11n_aead *a, const p11n_cipher_alg *alg);
int p11n_aead_setkey(p11n_aead *a, const uint8_t k[P11N_KEYLEN]);
/* out = ciphertext || tag (len + 16 bytes); out may equal in. */
int p11n_aead_seal(p11n_aead *a, uint64_t n, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);
/* in = ciphertext || tag (len >= 16); out gets len - 16 bytes, or is wiped
 * and P11N_ERR_BAD_TAG returned. out may equal in. */
int p11n_aead_open(p11n_aead *a, uint64_t n, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);
/* seal/open with an explicit 96-bit IV instead of a Noise counter: for
 * known-answer tests whose nonces do not follow the Noise layout. */
int p11n_aead_seal_iv(p11n_aead *a, const uint8_t iv[12], const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);
int p11n_aead_open_iv(p11n_aead *a, const uint8_t iv[12], const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);
/* Frees contexts (which hold the key schedule: OpenSSL wipes them). */
void p11n_aead_clear(p11n_aead *a);

/* ---- DH functions ---- */
typedef struct p11n_dh_alg {
    const char *name;      /* "secp256k1", "25519", "448" */
    size_t privlen;        /* 32, 32, 56 */
    size_t publen;         /* 33 (compressed), 32, 56 */
    size_t dhlen;          /* 32, 32, 56 */
    int (*generate)(uint8_t *priv, uint8_t *pub);
    /* derive pub from priv; P11N_ERR_BAD_PRIVKEY if priv is not a scalar */
    int (*pubkey)(const uint8_t *priv, uint8_t *pub);
    /* P11N_ERR_BAD_PUBKEY for invalid points (secp256k1: only compressed
     * points on the curve; 25519/448: all-zero output rejected) */
    int (*dh)(const uint8_t *priv, const uint8_t *pub, uint8_t *out);
    /* P11N_OK if pub parses as a valid public key */
    int (*check_pub)(const uint8_t *pub);
} p11n_dh_alg;

extern const p11n_dh_alg p11n_dh_secp256k1, p11n_dh_25519, p11n_dh_448;
const p11n_dh_alg *p11n_dh_by_name(const char *name, size_t len);

/* secp256k1 helpers for token parity recovery (pkcs11/). All points are
 * 33-byte compressed; uncompressed output is 65 bytes. */
int p11n_secp256k1_add(const uint8_t a[33], const uint8_t b[33], uint8_t out[33]);
int p11n_secp256k1_negate(const uint8_t a[33], uint8_t out[33]);
int p11n_secp256k1_uncompress(const uint8_t a[33], uint8_t out[65]);
int p11n_secp256k1_compress(const uint8_t *in, size_t len, uint8_t out[33]);
extern const uint8_t p11n_secp256k1_generator[33];

/* Cryptographically secure random bytes. */
int p11n_random(uint8_t *out, size_t len);

/* Hex: lower-case encode (out has 2*len+1 bytes, NUL-terminated); decode
 * exactly `outlen` bytes from a string of 2*outlen hex digits (either case),
 * else P11N_ERR_PARSE with `out` zeroed. Decoding has no data-dependent
 * branches (safe for private keys). */
void p11n_hex_encode(const uint8_t *in, size_t len, char *out);
int p11n_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t outlen);

#endif
