/* Secret handling in one place: wiping and constant-time comparison. */
#ifndef P11N_SECURE_H
#define P11N_SECURE_H

#include <stddef.h>
#include <openssl/crypto.h>

/* Wipe memory that held secrets; the compiler may not elide it. */
static inline void p11n_wipe(void *p, size_t len)
{
    if (p != NULL && len > 0)
        OPENSSL_cleanse(p, len);
}

/* 1 if equal, 0 otherwise; time depends only on len. */
static inline int p11n_ct_eq(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

#endif
