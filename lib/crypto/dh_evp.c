/*
 * X25519 and X448 through OpenSSL EVP. Keys are raw byte strings; OpenSSL
 * applies the RFC 7748 clamping itself.
 */
#include <string.h>
#include <openssl/evp.h>

#include "crypto.h"
#include "secure.h"

static int evp_pubkey(const char *type, size_t privlen, size_t publen,
    const uint8_t *priv, uint8_t *pub)
{
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key_ex(NULL, type, NULL, priv, privlen);
    if (k == NULL)
        return P11N_ERR_CRYPTO;
    size_t len = publen;
    int ok = EVP_PKEY_get_raw_public_key(k, pub, &len) == 1 && len == publen;
    EVP_PKEY_free(k);
    /* A public key is public. */
    p11n_declassify(pub, publen);
    return ok ? P11N_OK : P11N_ERR_CRYPTO;
}

/* The derivation alone, in a function of its own: tests/ctime.supp names
 * it as the one caller under which OpenSSL may branch on its own all-zero
 * check of the X25519/X448 result (a public fact: see evp_dh). */
__attribute__((noinline)) static int derive_shared(EVP_PKEY_CTX *pctx, uint8_t *out,
    size_t *len)
{
    int rc = EVP_PKEY_derive(pctx, out, len);
    /* Keeps the call a real call (no tail jump), so the frame exists. */
    __asm__ volatile("" ::: "memory");
    return rc;
}

static int evp_dh(const char *type, size_t privlen, size_t publen, size_t dhlen,
    const uint8_t *priv, const uint8_t *pub, uint8_t *out)
{
    int rc = P11N_ERR_CRYPTO;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *peer = NULL;
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key_ex(NULL, type, NULL, priv, privlen);
    if (k == NULL)
        goto out;
    peer = EVP_PKEY_new_raw_public_key_ex(NULL, type, NULL, pub, publen);
    if (peer == NULL)
        goto out;
    pctx = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
    if (pctx == NULL || EVP_PKEY_derive_init(pctx) != 1)
        goto out;
    /* Every byte string is the encoding of some u-coordinate, so there is
     * nothing to validate up front (and validating costs an allocation). A
     * failure here or in derive means the peer's point is unusable: OpenSSL
     * refuses the all-zero result of a small-order point. */
    if (EVP_PKEY_derive_set_peer_ex(pctx, peer, 0) != 1) {
        rc = P11N_ERR_BAD_PUBKEY;
        goto out;
    }
    size_t len = dhlen;
    if (derive_shared(pctx, out, &len) != 1 || len != dhlen) {
        rc = P11N_ERR_BAD_PUBKEY;
        goto out;
    }
    /* Checked here too, so the rule does not rest on the backend alone. */
    uint8_t acc = 0;
    for (size_t i = 0; i < dhlen; i++)
        acc |= out[i];
    /* Whether the result is all zero is public: the handshake aborts on
     * it. Only that bit is declassified, not the result. */
    int zero = acc == 0;
    p11n_declassify(&zero, sizeof(zero));
    rc = zero ? P11N_ERR_BAD_PUBKEY : P11N_OK;
out:
    if (rc != P11N_OK)
        p11n_wipe(out, dhlen);
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(k);
    return rc;
}

/* Any byte string is a valid X25519/X448 public key (Noise relies on the
 * all-zero DH check instead). */
static int evp_check_pub(const uint8_t *pub)
{
    return pub != NULL ? P11N_OK : P11N_ERR_BAD_PUBKEY;
}

/* Every byte string is a private key (OpenSSL clamps it). */
static int evp_generate(const char *type, size_t len, uint8_t *priv, uint8_t *pub)
{
    int rc = p11n_random(priv, len);
    if (rc == P11N_OK)
        rc = evp_pubkey(type, len, len, priv, pub);
    if (rc != P11N_OK)
        p11n_wipe(priv, len);
    return rc;
}

/* The ops table has no room for the curve, so each curve gets its own
 * one-line wrappers around the functions above, and its table, from here. */
#define EVP_CURVE(fn, label, type, len)                                        \
    static int fn##_pubkey(const uint8_t *priv, uint8_t *pub)                  \
    {                                                                          \
        return evp_pubkey(type, len, len, priv, pub);                          \
    }                                                                          \
    static int fn##_generate(uint8_t *priv, uint8_t *pub)                      \
    {                                                                          \
        return evp_generate(type, len, priv, pub);                             \
    }                                                                          \
    static int fn##_dh(const uint8_t *priv, const uint8_t *pub, uint8_t *out)  \
    {                                                                          \
        return evp_dh(type, len, len, len, priv, pub, out);                    \
    }                                                                          \
    const p11n_dh_alg p11n_dh_##label = {                                      \
        .name = #label, .privlen = len, .publen = len, .dhlen = len,           \
        .generate = fn##_generate, .pubkey = fn##_pubkey, .dh = fn##_dh,       \
        .check_pub = evp_check_pub,                                            \
    }

EVP_CURVE(x25519, 25519, "X25519", 32);
EVP_CURVE(x448, 448, "X448", 56);
