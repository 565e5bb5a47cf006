/* Random bytes and hex text, both used for key material; reading a
 * structure that can grow (sized.h). */
#include <limits.h>
#include <string.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "secure.h"
#include "sized.h"

int p11n_random(uint8_t *out, size_t len)
{
    if (out == NULL && len > 0)
        return P11N_ERR_INVALID_ARG;
    /* RAND_bytes takes an int length. */
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(out, chunk) != 1)
            return P11N_ERR_CRYPTO;
        out += chunk;
        len -= (size_t)chunk;
    }
    return P11N_OK;
}

void p11n_hex_encode(const uint8_t *in, size_t len, char *out)
{
    /* Arithmetic instead of a table lookup: no secret-indexed memory
     * access when encoding keys. */
    for (size_t i = 0; i < len; i++) {
        unsigned hi = in[i] >> 4, lo = in[i] & 0x0f;
        /* 'a' - '0' - 10 == 39, added only for nibbles above 9 */
        out[2 * i] = (char)('0' + hi + (((9u - hi) >> 8) & 39u));
        out[2 * i + 1] = (char)('0' + lo + (((9u - lo) >> 8) & 39u));
    }
    out[2 * len] = '\0';
}

/* Value of hex digit c in the low 4 bits, and all of bits 8..15 set when c
 * is not a hex digit; no branch depends on c. */
static unsigned hex_nibble(unsigned char c)
{
    unsigned num = c ^ 0x30u;                      /* '0'..'9' -> 0..9 */
    unsigned num_ok = ((num - 10u) >> 8) & 0xffu;  /* 0xff iff num < 10 */
    unsigned alpha = (c & ~0x20u) - 55u;           /* 'A'..'F', 'a'..'f' -> 10..15 */
    unsigned alpha_ok = (((alpha - 10u) ^ (alpha - 16u)) >> 8) & 0xffu;
    unsigned ok = num_ok | alpha_ok;
    return (num & num_ok) | (alpha & alpha_ok) | ((~ok & 0xffu) << 8);
}

int p11n_hex_decode(const char *hex, size_t hexlen, uint8_t *out, size_t outlen)
{
    if (hex == NULL || (out == NULL && outlen > 0))
        return P11N_ERR_INVALID_ARG;
    if (outlen > SIZE_MAX / 2 || hexlen != 2 * outlen) {
        p11n_wipe(out, outlen);
        return P11N_ERR_PARSE;
    }
    unsigned bad = 0;
    for (size_t i = 0; i < outlen; i++) {
        unsigned hi = hex_nibble((unsigned char)hex[2 * i]);
        unsigned lo = hex_nibble((unsigned char)hex[2 * i + 1]);
        bad |= (hi | lo) & 0xff00u;
        out[i] = (uint8_t)((hi << 4) | (lo & 0x0fu));
    }
    /* Whether the text was a well-formed key is public (the caller
     * reports it); which digit was wrong is not looked at. */
    p11n_declassify(&bad, sizeof(bad));
    if (bad != 0) {
        /* Half-decoded key bytes must not stay behind; on every error the
         * output is all zero. */
        p11n_wipe(out, outlen);
        return P11N_ERR_PARSE;
    }
    return P11N_OK;
}

int p11n_options_copy(void *dst, size_t known, const void *src)
{
    size_t size;
    memcpy(&size, src, sizeof(size));
    if (size < sizeof(size_t))
        return P11N_ERR_INVALID_ARG;  /* 0: not made with the _INIT macro */
    /* A newer caller: what this library does not know must be unused. */
    const unsigned char *extra = (const unsigned char *)src;
    for (size_t i = known; i < size; i++)
        if (extra[i] != 0)
            return P11N_ERR_INVALID_ARG;
    memset(dst, 0, known);
    memcpy(dst, src, size < known ? size : known);
    memcpy(dst, &known, sizeof(known));
    return P11N_OK;
}
