/* Secret handling in one place: wiping, constant-time comparison, and the
 * marks that tell valgrind's constant-time test where a value derived from
 * secrets becomes public. */
#ifndef P11N_SECURE_H
#define P11N_SECURE_H

#include <stddef.h>
#include <openssl/crypto.h>
#ifdef P11N_CTIME_CHECKS
#include <valgrind/memcheck.h>
#endif

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

/* Declare `len` bytes at `p`, computed from secrets, public from here on,
 * because the protocol reveals them anyway: a public key, whether a tag
 * verified, whether a key or point was valid. tests/test_ctime.c runs the
 * library under valgrind with every secret marked undefined; a branch or a
 * memory index on an undefined value is reported, so each call of this is
 * a claim that the value is no secret, and says why beside it. Outside
 * valgrind (or without P11N_CTIME_CHECKS) it does nothing. */
static inline void p11n_declassify(const void *p, size_t len)
{
#ifdef P11N_CTIME_CHECKS
    (void)VALGRIND_MAKE_MEM_DEFINED(p, len);
#else
    (void)p;
    (void)len;
#endif
}

#endif
