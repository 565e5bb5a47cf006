/*
 * Noise CipherState (section 5.1) and the public p11n_cipher built on it.
 * The key itself is not kept: the AEAD context holds its schedule, which is
 * all encryption, decryption and Rekey need.
 */
#include <stdlib.h>
#include <string.h>

#include "noise.h"
#include "secure.h"

int p11n_cs_init(p11n_cipherstate *cs, const p11n_cipher_alg *alg)
{
    memset(cs, 0, sizeof(*cs));
    int rc = p11n_aead_init(&cs->aead, alg);
    cs->dead = rc != P11N_OK;
    return rc;
}

int p11n_cs_set_key(p11n_cipherstate *cs, const uint8_t k[P11N_KEYLEN])
{
    int rc = p11n_aead_setkey(&cs->aead, k);
    cs->has_key = rc == P11N_OK;
    cs->dead = rc != P11N_OK;
    cs->n = 0;
    return rc;
}

void p11n_cs_set_nonce(p11n_cipherstate *cs, uint64_t n)
{
    cs->n = n;
}

size_t p11n_cs_overhead(const p11n_cipherstate *cs)
{
    return cs->has_key ? P11N_TAG_LEN : 0;
}

typedef int (*aead_op)(p11n_aead *a, uint64_t n, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out);

/* EncryptWithAd and DecryptWithAd differ only in the AEAD call and the
 * shortest input it takes. */
static int with_ad(p11n_cipherstate *cs, aead_op op, size_t minlen, const uint8_t *ad,
    size_t adlen, const uint8_t *in, size_t len, uint8_t *out)
{
    if (cs->dead)
        return P11N_ERR_STATE;
    if (!cs->has_key) {
        if (len > 0 && out != in)
            memmove(out, in, len);
        return P11N_OK;
    }
    /* 2^64-1 is reserved for Rekey: the counter never reaches it. */
    if (cs->n == P11N_NONCE_MAX)
        return P11N_ERR_NONCE_EXHAUSTED;
    if (len < minlen)
        return P11N_ERR_SHORT_MESSAGE;
    int rc = op(&cs->aead, cs->n, ad, adlen, in, len, out);
    if (rc == P11N_OK) {
        cs->n++;
        return rc;
    }
    /* The nonce stays where it was, so a retry after a failed encryption
     * could reuse it with other input: a failure ends the cipher, for
     * encryption as for decryption (a forged message). */
    cs->dead = 1;
    return rc;
}

int p11n_cs_encrypt(p11n_cipherstate *cs, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out)
{
    return with_ad(cs, p11n_aead_seal, 0, ad, adlen, in, len, out);
}

int p11n_cs_decrypt(p11n_cipherstate *cs, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out)
{
    return with_ad(cs, p11n_aead_open, P11N_TAG_LEN, ad, adlen, in, len, out);
}

int p11n_cs_rekey(p11n_cipherstate *cs)
{
    if (cs->dead || !cs->has_key)
        return P11N_ERR_STATE;
    uint8_t block[P11N_KEYLEN + P11N_TAG_LEN];
    memset(block, 0, P11N_KEYLEN);
    int rc = p11n_aead_seal(&cs->aead, P11N_NONCE_MAX, NULL, 0, block, P11N_KEYLEN, block);
    if (rc == P11N_OK)
        rc = p11n_aead_setkey(&cs->aead, block);
    p11n_wipe(block, sizeof(block));
    /* A failed rekey leaves neither the old key nor a plain copy. */
    if (rc != P11N_OK) {
        cs->has_key = 0;
        cs->dead = 1;
    }
    return rc;
}

/* Cleared is dead too: only p11n_cs_init makes it usable again. */
void p11n_cs_clear(p11n_cipherstate *cs)
{
    p11n_aead_clear(&cs->aead);
    cs->has_key = 0;
    cs->dead = 1;
    cs->n = 0;
}

/* ---- public p11n_cipher ---- */

int p11n_cipher_new_keyed(const p11n_cipher_alg *alg, const uint8_t k[P11N_KEYLEN],
    struct p11n_cipher **out)
{
    *out = NULL;
    struct p11n_cipher *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return P11N_ERR_NOMEM;
    int rc = p11n_cs_init(&c->cs, alg);
    if (rc == P11N_OK)
        rc = p11n_cs_set_key(&c->cs, k);
    if (rc != P11N_OK) {
        p11n_cipher_free(c);
        return rc;
    }
    *out = c;
    return P11N_OK;
}

P11N_API int p11n_cipher_encrypt(p11n_cipher *c, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (c == NULL || out == NULL || outlen == NULL || (ad == NULL && adlen > 0) ||
        (in == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    if (c->failed)
        return P11N_ERR_STATE;
    /* A Noise message is at most 65535 bytes, tag included. */
    if (len > P11N_MAX_NOISE_MESSAGE - P11N_TAG_LEN)
        return P11N_ERR_MESSAGE_TOO_LARGE;
    if (cap < len + P11N_TAG_LEN)
        return P11N_ERR_BUFFER_TOO_SMALL;
    int rc = p11n_cs_encrypt(&c->cs, ad, adlen, in, len, out);
    if (rc != P11N_OK) {
        /* no retry: it could reuse the nonce (out is already wiped) */
        c->failed = 1;
        return rc;
    }
    *outlen = len + P11N_TAG_LEN;
    return P11N_OK;
}

P11N_API int p11n_cipher_decrypt(p11n_cipher *c, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (c == NULL || outlen == NULL || (ad == NULL && adlen > 0) || (in == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    if (c->failed)
        return P11N_ERR_STATE;
    if (len < P11N_TAG_LEN) {
        c->failed = 1;
        return P11N_ERR_SHORT_MESSAGE;
    }
    if (len > P11N_MAX_NOISE_MESSAGE) {
        c->failed = 1;
        return P11N_ERR_MESSAGE_TOO_LARGE;
    }
    if (cap < len - P11N_TAG_LEN || (out == NULL && len > P11N_TAG_LEN))
        return P11N_ERR_BUFFER_TOO_SMALL;
    /* aead_open wants somewhere to write even for an empty plaintext */
    uint8_t empty;
    int rc = p11n_cs_decrypt(&c->cs, ad, adlen, in, len, out != NULL ? out : &empty);
    if (rc != P11N_OK) {
        /* forged or corrupted input: stay failed (out is already wiped) */
        c->failed = 1;
        return rc;
    }
    *outlen = len - P11N_TAG_LEN;
    return P11N_OK;
}

P11N_API int p11n_cipher_rekey(p11n_cipher *c)
{
    if (c == NULL)
        return P11N_ERR_INVALID_ARG;
    if (c->failed)
        return P11N_ERR_STATE;
    int rc = p11n_cs_rekey(&c->cs);
    if (rc != P11N_OK)
        c->failed = 1;
    return rc;
}

P11N_API void p11n_cipher_free(p11n_cipher *c)
{
    if (c == NULL)
        return;
    p11n_cs_clear(&c->cs);
    p11n_wipe(c, sizeof(*c));
    free(c);
}
