/*
 * Noise AEAD ciphers over OpenSSL EVP. Each context keeps one cipher
 * context per direction it was made for, keyed once in setkey; a message
 * then costs only the IV setup and the cipher itself, with no allocation.
 */
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <openssl/evp.h>

#include "crypto.h"
#include "secure.h"

/* ChaChaPoly: 32 bits of zeros, then the counter little-endian. */
static void nonce_chachapoly(uint64_t n, uint8_t iv[12])
{
    memset(iv, 0, 4);
    for (int i = 0; i < 8; i++)
        iv[4 + i] = (uint8_t)(n >> (8 * i));
}

/* AESGCM: 32 bits of zeros, then the counter big-endian. */
static void nonce_aesgcm(uint64_t n, uint8_t iv[12])
{
    memset(iv, 0, 4);
    for (int i = 0; i < 8; i++)
        iv[11 - i] = (uint8_t)(n >> (8 * i));
}

const p11n_cipher_alg p11n_cipher_chachapoly = {
    .name = "ChaChaPoly", .evp_name = "ChaCha20-Poly1305", .nonce = nonce_chachapoly,
};
const p11n_cipher_alg p11n_cipher_aesgcm = {
    .name = "AESGCM", .evp_name = "AES-256-GCM", .nonce = nonce_aesgcm,
};

static const p11n_cipher_alg *const ciphers[] = {
    &p11n_cipher_chachapoly, &p11n_cipher_aesgcm,
};
#define NCIPHERS (sizeof(ciphers) / sizeof(ciphers[0]))

static EVP_CIPHER *evp_ciphers[NCIPHERS];
static pthread_once_t ciphers_once = PTHREAD_ONCE_INIT;

static void fetch_ciphers(void)
{
    for (size_t i = 0; i < NCIPHERS; i++)
        evp_ciphers[i] = EVP_CIPHER_fetch(NULL, ciphers[i]->evp_name, NULL);
}

static const EVP_CIPHER *evp_of(const p11n_cipher_alg *alg)
{
    if (pthread_once(&ciphers_once, fetch_ciphers) != 0)
        return NULL;
    for (size_t i = 0; i < NCIPHERS; i++)
        if (ciphers[i] == alg)
            return evp_ciphers[i];
    return NULL;
}

const p11n_cipher_alg *p11n_cipher_by_name(const char *name, size_t len)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < NCIPHERS; i++)
        if (strlen(ciphers[i]->name) == len && memcmp(ciphers[i]->name, name, len) == 0)
            return ciphers[i];
    return NULL;
}

int p11n_aead_init_dir(p11n_aead *a, const p11n_cipher_alg *alg, int dirs)
{
    if (a == NULL || alg == NULL || dirs == 0 || (dirs & ~(P11N_AEAD_SEAL | P11N_AEAD_OPEN)) != 0)
        return P11N_ERR_INVALID_ARG;
    a->alg = NULL;
    a->enc = a->dec = NULL;
    const EVP_CIPHER *c = evp_of(alg);
    if (c == NULL)
        return P11N_ERR_UNSUPPORTED;
    /* Each EVP context holds about 2 KiB: a direction that will only ever
     * seal (or only open) does not pay for the other. */
    EVP_CIPHER_CTX *enc = (dirs & P11N_AEAD_SEAL) ? EVP_CIPHER_CTX_new() : NULL;
    EVP_CIPHER_CTX *dec = (dirs & P11N_AEAD_OPEN) ? EVP_CIPHER_CTX_new() : NULL;
    if (((dirs & P11N_AEAD_SEAL) && enc == NULL) || ((dirs & P11N_AEAD_OPEN) && dec == NULL)) {
        EVP_CIPHER_CTX_free(enc);
        EVP_CIPHER_CTX_free(dec);
        return P11N_ERR_NOMEM;
    }
    /* Bind the cipher now; both ciphers default to a 96-bit IV. */
    if ((enc != NULL && (EVP_EncryptInit_ex2(enc, c, NULL, NULL, NULL) != 1
                            || EVP_CIPHER_CTX_get_iv_length(enc) != 12))
        || (dec != NULL && (EVP_DecryptInit_ex2(dec, c, NULL, NULL, NULL) != 1
                               || EVP_CIPHER_CTX_get_iv_length(dec) != 12))) {
        EVP_CIPHER_CTX_free(enc);
        EVP_CIPHER_CTX_free(dec);
        return P11N_ERR_CRYPTO;
    }
    a->alg = alg;
    a->enc = enc;
    a->dec = dec;
    return P11N_OK;
}

int p11n_aead_init(p11n_aead *a, const p11n_cipher_alg *alg)
{
    return p11n_aead_init_dir(a, alg, P11N_AEAD_SEAL | P11N_AEAD_OPEN);
}

int p11n_aead_setkey(p11n_aead *a, const uint8_t k[P11N_KEYLEN])
{
    if (a == NULL || (a->enc == NULL && a->dec == NULL) || k == NULL)
        return P11N_ERR_INVALID_ARG;
    if ((a->enc != NULL && EVP_EncryptInit_ex2(a->enc, NULL, k, NULL, NULL) != 1)
        || (a->dec != NULL && EVP_DecryptInit_ex2(a->dec, NULL, k, NULL, NULL) != 1))
        return P11N_ERR_CRYPTO;
    return P11N_OK;
}

int p11n_aead_seal_iv(p11n_aead *a, const uint8_t iv[12], const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out)
{
    if (a != NULL && a->alg != NULL && a->enc == NULL)
        return P11N_ERR_STATE;     /* made for opening only */
    if (a == NULL || a->enc == NULL || iv == NULL || out == NULL
        || (ad == NULL && adlen > 0) || (in == NULL && len > 0)
        || adlen > INT_MAX || len > INT_MAX - P11N_TAG_LEN)
        return P11N_ERR_INVALID_ARG;
    EVP_CIPHER_CTX *ctx = a->enc;
    int outl = 0, finl = 0;
    int rc = P11N_ERR_CRYPTO;

    if (EVP_EncryptInit_ex2(ctx, NULL, NULL, iv, NULL) != 1)
        goto out;
    if (adlen > 0 && EVP_EncryptUpdate(ctx, NULL, &outl, ad, (int)adlen) != 1)
        goto out;
    outl = 0;
    if (len > 0 && EVP_EncryptUpdate(ctx, out, &outl, in, (int)len) != 1)
        goto out;
    if (EVP_EncryptFinal_ex(ctx, out + outl, &finl) != 1 || (size_t)outl + (size_t)finl != len)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, P11N_TAG_LEN, out + len) != 1)
        goto out;
    rc = P11N_OK;
out:
    /* No partial ciphertext (keystream under a nonce that may be used
     * again) is left for the caller to send. */
    if (rc != P11N_OK)
        p11n_wipe(out, len + P11N_TAG_LEN);
    return rc;
}

int p11n_aead_open_iv(p11n_aead *a, const uint8_t iv[12], const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out)
{
    if (a != NULL && a->alg != NULL && a->dec == NULL)
        return P11N_ERR_STATE;     /* made for sealing only */
    if (a == NULL || a->dec == NULL || iv == NULL || in == NULL
        || (out == NULL && len > P11N_TAG_LEN) || (ad == NULL && adlen > 0)
        || adlen > INT_MAX || len > INT_MAX)
        return P11N_ERR_INVALID_ARG;
    if (len < P11N_TAG_LEN)
        return P11N_ERR_SHORT_MESSAGE;
    EVP_CIPHER_CTX *ctx = a->dec;
    size_t clen = len - P11N_TAG_LEN;
    /* The expected tag goes to the cipher before any data (GCM requires it
     * before Final); a copy, since the ctrl call takes a mutable pointer.
     * It also serves as Final's (unused) output when out may be NULL. */
    uint8_t tag[P11N_TAG_LEN];
    memcpy(tag, in + clen, P11N_TAG_LEN);
    int outl = 0, finl = 0;
    int rc = P11N_ERR_CRYPTO;

    if (EVP_DecryptInit_ex2(ctx, NULL, NULL, iv, NULL) != 1)
        goto out;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, P11N_TAG_LEN, tag) != 1)
        goto out;
    if (adlen > 0 && EVP_DecryptUpdate(ctx, NULL, &outl, ad, (int)adlen) != 1)
        goto out;
    outl = 0;
    if (clen > 0 && EVP_DecryptUpdate(ctx, out, &outl, in, (int)clen) != 1)
        goto out;
    /* Final is where the tag is checked; the plaintext already written is
     * unverified until it succeeds. */
    if (EVP_DecryptFinal_ex(ctx, clen > 0 ? out + outl : tag, &finl) != 1) {
        rc = P11N_ERR_BAD_TAG;
        goto out;
    }
    if ((size_t)outl + (size_t)finl != clen)
        goto out;
    /* Authenticated plaintext is the sender's data, not a function of our
     * keys: the constant-time test (lib/secure.h) stops tracking it here. */
    if (clen > 0)
        p11n_declassify(out, clen);
    rc = P11N_OK;
out:
    if (rc != P11N_OK && clen > 0)
        p11n_wipe(out, clen);
    return rc;
}

int p11n_aead_seal(p11n_aead *a, uint64_t n, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out)
{
    if (a == NULL || a->alg == NULL)
        return P11N_ERR_INVALID_ARG;
    uint8_t iv[12];
    a->alg->nonce(n, iv);
    return p11n_aead_seal_iv(a, iv, ad, adlen, in, len, out);
}

int p11n_aead_open(p11n_aead *a, uint64_t n, const uint8_t *ad, size_t adlen,
    const uint8_t *in, size_t len, uint8_t *out)
{
    if (a == NULL || a->alg == NULL)
        return P11N_ERR_INVALID_ARG;
    uint8_t iv[12];
    a->alg->nonce(n, iv);
    return p11n_aead_open_iv(a, iv, ad, adlen, in, len, out);
}

void p11n_aead_clear(p11n_aead *a)
{
    if (a == NULL)
        return;
    EVP_CIPHER_CTX_free(a->enc);
    EVP_CIPHER_CTX_free(a->dec);
    a->enc = a->dec = NULL;
    a->alg = NULL;
}
