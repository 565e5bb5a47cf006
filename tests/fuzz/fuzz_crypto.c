/* Fuzz the crypto layer's input parsers: hex text, key file text,
 * secp256k1 point encodings, and AEAD opening of arbitrary ciphertext.
 *
 * Input: one selector byte, then the bytes for that parser.
 *
 * Besides memory safety, the harness checks the contract: hex that decodes
 * re-encodes to the same digits; a key file parses exactly when its text
 * without trailing whitespace is well-formed hex of the right length; a
 * 33-byte point passes check_pub exactly when compress() accepts it, and
 * then survives uncompress/compress unchanged; an opened forgery leaves an
 * all-zero output. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "key.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void fuzz_hex(const uint8_t *d, size_t n)
{
    uint8_t out[256];
    char text[2 * sizeof(out) + 1];
    size_t outlen = n / 2 < sizeof(out) ? n / 2 : sizeof(out);
    memset(out, 0xaa, sizeof(out));
    int rc = p11n_hex_decode((const char *)d, n, out, outlen);
    CHECK(rc == P11N_OK || rc == P11N_ERR_PARSE);
    if (rc == P11N_OK) {
        CHECK(n == 2 * outlen);
        p11n_hex_encode(out, outlen, text);
        for (size_t i = 0; i < n; i++)
            CHECK(text[i] == lower(d[i]));
    } else {
        for (size_t i = 0; i < outlen; i++)
            CHECK(out[i] == 0);
    }
}

static void fuzz_keytext(const uint8_t *d, size_t n)
{
    static const p11n_dh_alg *const algs[] = { &p11n_dh_secp256k1, &p11n_dh_25519, &p11n_dh_448 };
    if (n == 0)
        return;
    const p11n_dh_alg *alg = algs[d[0] % 3];
    const char *text = (const char *)d + 1;
    n--;
    struct p11n_key *k = NULL;
    int rc = p11n_key_parse_text(text, n, alg, &k);
    CHECK(rc == P11N_OK || rc == P11N_ERR_PARSE || rc == P11N_ERR_BAD_PRIVKEY);
    CHECK((rc == P11N_OK) == (k != NULL));
    size_t len = n;
    while (len > 0 && is_space(text[len - 1]))
        len--;
    if (len != 2 * alg->privlen)
        CHECK(rc == P11N_ERR_PARSE);
    if (rc == P11N_OK) {
        uint8_t pub[P11N_MAXPUBLEN];
        CHECK(alg->check_pub(k->pub) == P11N_OK);
        uint8_t priv[P11N_MAXPRIVLEN];
        CHECK(p11n_hex_decode(text, len, priv, alg->privlen) == P11N_OK);
        CHECK(alg->pubkey(priv, pub) == P11N_OK);
        CHECK(memcmp(pub, k->pub, alg->publen) == 0);
    }
    p11n_key_free(k);
}

static void fuzz_point(const uint8_t *d, size_t n)
{
    uint8_t c[33], u[65], again[33];
    int rc = p11n_secp256k1_compress(d, n, c);
    CHECK(rc == P11N_OK || rc == P11N_ERR_BAD_PUBKEY);
    if (n == 33)
        CHECK((p11n_dh_secp256k1.check_pub(d) == P11N_OK) == (rc == P11N_OK));
    if (rc == P11N_OK) {
        CHECK(p11n_dh_secp256k1.check_pub(c) == P11N_OK);
        CHECK(p11n_secp256k1_uncompress(c, u) == P11N_OK);
        CHECK(p11n_secp256k1_compress(u, 65, again) == P11N_OK);
        CHECK(memcmp(c, again, 33) == 0);
        if (n == 33)
            CHECK(memcmp(c, d, 33) == 0);
        /* The point and its negation cancel; adding G and -G does not move it. */
        uint8_t neg[33], sum[33];
        CHECK(p11n_secp256k1_negate(c, neg) == P11N_OK);
        CHECK(p11n_secp256k1_add(c, neg, sum) == P11N_ERR_BAD_PUBKEY);
    }
}

static void fuzz_open(const uint8_t *d, size_t n)
{
    static const uint8_t key[P11N_KEYLEN] = { 1, 2, 3 };
    if (n == 0)
        return;
    const p11n_cipher_alg *alg = (d[0] & 1) ? &p11n_cipher_aesgcm : &p11n_cipher_chachapoly;
    d++;
    n--;
    p11n_aead a;
    CHECK(p11n_aead_init(&a, alg) == P11N_OK);
    CHECK(p11n_aead_setkey(&a, key) == P11N_OK);
    uint8_t *out = malloc(n > 0 ? n : 1);
    CHECK(out != NULL);
    memset(out, 0xaa, n);
    int rc = p11n_aead_open(&a, 0, NULL, 0, d, n, out);
    if (n < P11N_TAG_LEN) {
        CHECK(rc == P11N_ERR_SHORT_MESSAGE);
    } else {
        /* A forgery is all but impossible here: a success would be news. */
        CHECK(rc == P11N_ERR_BAD_TAG);
        for (size_t i = 0; i < n - P11N_TAG_LEN; i++)
            CHECK(out[i] == 0);
    }
    free(out);
    p11n_aead_clear(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 4) {
    case 0:
        fuzz_hex(data + 1, size - 1);
        break;
    case 1:
        fuzz_keytext(data + 1, size - 1);
        break;
    case 2:
        fuzz_point(data + 1, size - 1);
        break;
    default:
        fuzz_open(data + 1, size - 1);
        break;
    }
    return 0;
}
