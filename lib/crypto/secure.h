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

/* 1 if b == c, else 0, with no branch on either. */
static inline unsigned p11n_ct_byte_is(unsigned char b, unsigned char c)
{
    /* b ^ c is 0..255; minus 1 wraps to the top bit only for 0. */
    return ((unsigned)(b ^ c) - 1u) >> 31;
}

/* Length of the NUL-terminated string in s[0..cap) (cap if there is no
 * NUL): all cap bytes are read, none steers a branch. For PINs, whose
 * length is public but whose bytes are not. */
static inline size_t p11n_ct_strnlen(const char *s, size_t cap)
{
    size_t n = 0, ended = 0;   /* ended: all ones from the first NUL on */
    for (size_t i = 0; i < cap; i++) {
        ended |= (size_t)0 - (size_t)p11n_ct_byte_is((unsigned char)s[i], 0);
        n += ~ended & 1;
    }
    return n;
}

/* len less the CR and LF bytes that end s[0..len) (a PIN file's line
 * end), with no branch on the bytes. */
static inline size_t p11n_ct_trim_eol(const char *s, size_t len)
{
    size_t cut = 0, stop = 0;  /* stop: all ones from the last non-EOL byte back */
    for (size_t i = len; i > 0; i--) {
        unsigned char c = (unsigned char)s[i - 1];
        size_t eol = p11n_ct_byte_is(c, '\n') | p11n_ct_byte_is(c, '\r');
        stop |= (size_t)0 - (eol ^ 1);
        cut += ~stop & 1;
    }
    return len - cut;
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
