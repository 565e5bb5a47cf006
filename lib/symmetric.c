/*
 * Noise SymmetricState (section 5.2): the chaining key ck, the handshake
 * hash h and the CipherState keyed from ck.
 */
#include <string.h>

#include "noise.h"
#include "secure.h"

int p11n_ss_init(p11n_symmetric *ss, const p11n_protocol *p)
{
    memset(ss, 0, sizeof(*ss));
    ss->hash = p->hash;
    size_t hashlen = p->hash->hashlen;
    /* h = name zero-padded to HASHLEN if it fits, else HASH(name). */
    if (p->namelen <= hashlen) {
        memcpy(ss->h, p->name, p->namelen);
    } else {
        p11n_iov part = { p->name, p->namelen };
        int rc = p11n_hash(p->hash, &part, 1, ss->h);
        if (rc != P11N_OK)
            return rc;
    }
    memcpy(ss->ck, ss->h, hashlen);
    return p11n_cs_init(&ss->cs, p->cipher);
}

int p11n_ss_mix_hash(p11n_symmetric *ss, const uint8_t *data, size_t len)
{
    p11n_iov parts[2] = { { ss->h, ss->hash->hashlen }, { data, len } };
    return p11n_hash(ss->hash, parts, 2, ss->h);
}

/* Keys the CipherState with the first 32 bytes of an HKDF output: with a
 * 64-byte hash the rest is dropped (section 5.2). */
static int set_truncated_key(p11n_symmetric *ss, const uint8_t *temp_k)
{
    return p11n_cs_set_key(&ss->cs, temp_k);
}

int p11n_ss_mix_key(p11n_symmetric *ss, const uint8_t *ikm, size_t len)
{
    uint8_t ck[P11N_MAXHASHLEN], temp_k[P11N_MAXHASHLEN];
    int rc = p11n_hkdf(ss->hash, ss->ck, ikm, len, 2, ck, temp_k, NULL);
    if (rc == P11N_OK) {
        memcpy(ss->ck, ck, ss->hash->hashlen);
        rc = set_truncated_key(ss, temp_k);
    }
    p11n_wipe(ck, sizeof(ck));
    p11n_wipe(temp_k, sizeof(temp_k));
    return rc;
}

int p11n_ss_mix_key_and_hash(p11n_symmetric *ss, const uint8_t *ikm, size_t len)
{
    uint8_t ck[P11N_MAXHASHLEN], temp_h[P11N_MAXHASHLEN], temp_k[P11N_MAXHASHLEN];
    int rc = p11n_hkdf(ss->hash, ss->ck, ikm, len, 3, ck, temp_h, temp_k);
    if (rc == P11N_OK) {
        memcpy(ss->ck, ck, ss->hash->hashlen);
        rc = p11n_ss_mix_hash(ss, temp_h, ss->hash->hashlen);
    }
    if (rc == P11N_OK)
        rc = set_truncated_key(ss, temp_k);
    p11n_wipe(ck, sizeof(ck));
    p11n_wipe(temp_h, sizeof(temp_h));
    p11n_wipe(temp_k, sizeof(temp_k));
    return rc;
}

int p11n_ss_encrypt_and_hash(p11n_symmetric *ss, const uint8_t *in, size_t len,
    uint8_t *out)
{
    int rc = p11n_cs_encrypt(&ss->cs, ss->h, ss->hash->hashlen, in, len, out);
    if (rc != P11N_OK)
        return rc;
    return p11n_ss_mix_hash(ss, out, len + p11n_cs_overhead(&ss->cs));
}

int p11n_ss_decrypt_and_hash(p11n_symmetric *ss, const uint8_t *in, size_t len,
    uint8_t *out)
{
    /* h is updated with the ciphertext, which out may overwrite: hash it
     * first, commit only if the tag verifies. */
    uint8_t next_h[P11N_MAXHASHLEN];
    p11n_iov parts[2] = { { ss->h, ss->hash->hashlen }, { in, len } };
    int rc = p11n_hash(ss->hash, parts, 2, next_h);
    if (rc != P11N_OK)
        return rc;
    rc = p11n_cs_decrypt(&ss->cs, ss->h, ss->hash->hashlen, in, len, out);
    if (rc != P11N_OK)
        return rc;
    memcpy(ss->h, next_h, ss->hash->hashlen);
    return P11N_OK;
}

int p11n_ss_split(p11n_symmetric *ss, uint8_t k1[P11N_KEYLEN], uint8_t k2[P11N_KEYLEN])
{
    uint8_t t1[P11N_MAXHASHLEN], t2[P11N_MAXHASHLEN];
    int rc = p11n_hkdf(ss->hash, ss->ck, NULL, 0, 2, t1, t2, NULL);
    if (rc == P11N_OK) {
        memcpy(k1, t1, P11N_KEYLEN);
        memcpy(k2, t2, P11N_KEYLEN);
    }
    p11n_wipe(t1, sizeof(t1));
    p11n_wipe(t2, sizeof(t2));
    return rc;
}

void p11n_ss_clear(p11n_symmetric *ss)
{
    p11n_cs_clear(&ss->cs);
    p11n_wipe(ss->ck, sizeof(ss->ck));
    p11n_wipe(ss->h, sizeof(ss->h));
}
