/*
 * Hashes, HMAC and the Noise HKDF over OpenSSL EVP digests.
 *
 * HMAC is built here from the digest (RFC 2104, with the table's block
 * length) rather than through EVP_MAC: the digest objects are fetched once
 * per process, whereas an EVP_MAC context resolves its digest by name on
 * every initialization.
 */
#include <pthread.h>
#include <string.h>
#include <openssl/evp.h>

#include "crypto.h"
#include "secure.h"

const p11n_hash_alg p11n_hash_sha256 = {
    .name = "SHA256", .evp_name = "SHA256", .hashlen = 32, .blocklen = 64,
};
const p11n_hash_alg p11n_hash_sha512 = {
    .name = "SHA512", .evp_name = "SHA512", .hashlen = 64, .blocklen = 128,
};
const p11n_hash_alg p11n_hash_blake2s = {
    .name = "BLAKE2s", .evp_name = "BLAKE2S-256", .hashlen = 32, .blocklen = 64,
};
const p11n_hash_alg p11n_hash_blake2b = {
    .name = "BLAKE2b", .evp_name = "BLAKE2B-512", .hashlen = 64, .blocklen = 128,
};

static const p11n_hash_alg *const hashes[] = {
    &p11n_hash_sha256, &p11n_hash_sha512, &p11n_hash_blake2s, &p11n_hash_blake2b,
};
#define NHASHES (sizeof(hashes) / sizeof(hashes[0]))

/* Fetched once: EVP_MD_fetch takes a lock and searches the provider store. */
static EVP_MD *mds[NHASHES];
static pthread_once_t mds_once = PTHREAD_ONCE_INIT;

static void fetch_mds(void)
{
    for (size_t i = 0; i < NHASHES; i++)
        mds[i] = EVP_MD_fetch(NULL, hashes[i]->evp_name, NULL);
}

/* The fetched digest for a table entry; NULL if the entry is not ours or
 * the provider lacks it. */
static const EVP_MD *md_of(const p11n_hash_alg *h)
{
    if (pthread_once(&mds_once, fetch_mds) != 0)
        return NULL;
    for (size_t i = 0; i < NHASHES; i++)
        if (hashes[i] == h)
            return mds[i];
    return NULL;
}

const p11n_hash_alg *p11n_hash_by_name(const char *name, size_t len)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < NHASHES; i++)
        if (strlen(hashes[i]->name) == len && memcmp(hashes[i]->name, name, len) == 0)
            return hashes[i];
    return NULL;
}

/* Feed a prefix block (may be NULL) and then the parts into a fresh digest. */
static int digest(EVP_MD_CTX *ctx, const EVP_MD *md, const uint8_t *prefix, size_t plen,
    const p11n_iov *parts, size_t n, uint8_t *out)
{
    if (EVP_DigestInit_ex2(ctx, md, NULL) != 1)
        return P11N_ERR_CRYPTO;
    if (prefix != NULL && EVP_DigestUpdate(ctx, prefix, plen) != 1)
        return P11N_ERR_CRYPTO;
    for (size_t i = 0; i < n; i++)
        if (parts[i].len > 0 && EVP_DigestUpdate(ctx, parts[i].p, parts[i].len) != 1)
            return P11N_ERR_CRYPTO;
    if (EVP_DigestFinal_ex(ctx, out, NULL) != 1)
        return P11N_ERR_CRYPTO;
    return P11N_OK;
}

/* The digest of a table entry and a fresh context for it (freed with
 * EVP_MD_CTX_free, which wipes the state). */
static int begin(const p11n_hash_alg *h, const EVP_MD **md, EVP_MD_CTX **ctx)
{
    *md = md_of(h);
    if (*md == NULL)
        return P11N_ERR_UNSUPPORTED;
    *ctx = EVP_MD_CTX_new();
    return *ctx != NULL ? P11N_OK : P11N_ERR_NOMEM;
}

int p11n_hash(const p11n_hash_alg *h, const p11n_iov *parts, size_t n, uint8_t *out)
{
    if (h == NULL || out == NULL || (parts == NULL && n > 0))
        return P11N_ERR_INVALID_ARG;
    const EVP_MD *md;
    EVP_MD_CTX *ctx;
    int rc = begin(h, &md, &ctx);
    if (rc != P11N_OK)
        return rc;
    rc = digest(ctx, md, NULL, 0, parts, n, out);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* HMAC-HASH(key, parts) (RFC 2104) in a caller-provided digest context,
 * so HKDF's three or four HMACs share one allocation. */
static int hmac_with(EVP_MD_CTX *ctx, const EVP_MD *md, const p11n_hash_alg *h,
    const uint8_t *key, size_t keylen, const p11n_iov *parts, size_t n, uint8_t *out)
{
    uint8_t pad[P11N_MAXBLOCKLEN] = { 0 };
    uint8_t inner[P11N_MAXHASHLEN];
    int rc = P11N_OK;

    /* K0: the key, hashed first if longer than a block, zero-padded. */
    if (keylen > h->blocklen) {
        p11n_iov k = { key, keylen };
        rc = digest(ctx, md, NULL, 0, &k, 1, pad);
    } else if (keylen > 0) {
        memcpy(pad, key, keylen);
    }
    if (rc == P11N_OK) {
        for (size_t i = 0; i < h->blocklen; i++)
            pad[i] ^= 0x36;
        rc = digest(ctx, md, pad, h->blocklen, parts, n, inner);
    }
    if (rc == P11N_OK) {
        /* 0x36 ^ 0x5c turns the inner pad into the outer pad. */
        for (size_t i = 0; i < h->blocklen; i++)
            pad[i] ^= 0x36 ^ 0x5c;
        p11n_iov in = { inner, h->hashlen };
        rc = digest(ctx, md, pad, h->blocklen, &in, 1, out);
    }
    p11n_wipe(pad, sizeof(pad));
    p11n_wipe(inner, sizeof(inner));
    return rc;
}

int p11n_hmac(const p11n_hash_alg *h, const uint8_t *key, size_t keylen,
    const p11n_iov *parts, size_t n, uint8_t *out)
{
    if (h == NULL || out == NULL || (key == NULL && keylen > 0) || (parts == NULL && n > 0))
        return P11N_ERR_INVALID_ARG;
    const EVP_MD *md;
    EVP_MD_CTX *ctx;
    int rc = begin(h, &md, &ctx);
    if (rc != P11N_OK)
        return rc;
    rc = hmac_with(ctx, md, h, key, keylen, parts, n, out);
    /* Freeing wipes the digest state, which held the keyed pad. */
    EVP_MD_CTX_free(ctx);
    return rc;
}

int p11n_hkdf(const p11n_hash_alg *h, const uint8_t *ck, const uint8_t *ikm,
    size_t ikmlen, int nout, uint8_t *out1, uint8_t *out2, uint8_t *out3)
{
    if (h == NULL || ck == NULL || (ikm == NULL && ikmlen > 0) || nout < 2 || nout > 3
        || out1 == NULL || out2 == NULL || (nout == 3 && out3 == NULL))
        return P11N_ERR_INVALID_ARG;

    const EVP_MD *md;
    EVP_MD_CTX *ctx;
    int rc = begin(h, &md, &ctx);
    if (rc != P11N_OK)
        return rc;

    uint8_t temp[P11N_MAXHASHLEN];
    uint8_t o1[P11N_MAXHASHLEN], o2[P11N_MAXHASHLEN], o3[P11N_MAXHASHLEN];
    static const uint8_t one = 0x01, two = 0x02, three = 0x03;
    size_t hl = h->hashlen;

    /* Outputs go to locals first: the caller may pass out1 == ck (as
     * MixKey does), and a failure must leave no partial key behind. */
    p11n_iov in = { ikm, ikmlen };
    rc = hmac_with(ctx, md, h, ck, hl, &in, 1, temp);
    if (rc == P11N_OK) {
        p11n_iov p1 = { &one, 1 };
        rc = hmac_with(ctx, md, h, temp, hl, &p1, 1, o1);
    }
    if (rc == P11N_OK) {
        p11n_iov p2[2] = { { o1, hl }, { &two, 1 } };
        rc = hmac_with(ctx, md, h, temp, hl, p2, 2, o2);
    }
    if (rc == P11N_OK && nout == 3) {
        p11n_iov p3[2] = { { o2, hl }, { &three, 1 } };
        rc = hmac_with(ctx, md, h, temp, hl, p3, 2, o3);
    }
    if (rc == P11N_OK) {
        memcpy(out1, o1, hl);
        memcpy(out2, o2, hl);
        if (nout == 3)
            memcpy(out3, o3, hl);
    }
    EVP_MD_CTX_free(ctx);
    p11n_wipe(temp, sizeof(temp));
    p11n_wipe(o1, sizeof(o1));
    p11n_wipe(o2, sizeof(o2));
    p11n_wipe(o3, sizeof(o3));
    return rc;
}
