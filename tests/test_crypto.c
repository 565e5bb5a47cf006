/*
 * Software crypto layer: known-answer tests for every table entry, and the
 * rules around them (invalid points, tag failures wiping output, hex).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "testutil.h"
#include "crypto.h"
#include "key.h"

/* ---- helpers ---- */

/* Compare bytes against expected hex, reporting both on mismatch. */
static int eq_hex(const uint8_t *got, size_t len, const char *want)
{
    size_t wl;
    uint8_t *w = t_unhex(want, &wl);
    int ok = wl == len && memcmp(got, w, len) == 0;
    if (!ok) {
        fprintf(stderr, "\n  want %s\n  got  ", want);
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, "%02x", got[i]);
        fprintf(stderr, "\n");
    }
    free(w);
    return ok;
}
#define CHECK_HEX(got, len, want) CU_ASSERT(eq_hex((got), (len), (want)))

static int all_zero(const uint8_t *p, size_t len)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < len; i++)
        acc |= p[i];
    return acc == 0;
}

/* Copy a hex string into a fixed buffer (vectors are short). */
static void unhex_into(const char *hex, uint8_t *out, size_t len)
{
    size_t n;
    uint8_t *b = t_unhex(hex, &n);
    CU_ASSERT_FATAL(n == len);
    memcpy(out, b, len);
    free(b);
}

/* A string field of the first BOLT #8 case with the given role. */
static char *bolt8_field(const char *role, const char *field)
{
    json_error_t err;
    json_t *root = json_load_file(t_vector_path("bolt8.json"), 0, &err);
    CU_ASSERT_FATAL(root != NULL);
    char *res = NULL;
    json_t *cases = json_object_get(root, "cases");
    for (size_t i = 0; i < json_array_size(cases) && res == NULL; i++) {
        json_t *c = json_array_get(cases, i);
        const char *r = json_string_value(json_object_get(c, "role"));
        const char *v = json_string_value(json_object_get(c, field));
        if (r != NULL && v != NULL && strcmp(r, role) == 0)
            res = strdup(v);
    }
    json_decref(root);
    CU_ASSERT_FATAL(res != NULL);
    return res;
}

static const p11n_hash_alg *const all_hashes[] = {
    &p11n_hash_sha256, &p11n_hash_sha512, &p11n_hash_blake2s, &p11n_hash_blake2b,
};
static const p11n_cipher_alg *const all_ciphers[] = {
    &p11n_cipher_chachapoly, &p11n_cipher_aesgcm,
};

/* Whether testutil's OpenSSL allocator hooks (count and fail allocations)
 * are in: installed first thing in main. */
static int alloc_hooked;

/* ---- lazy initialization ---- */

/* Each thread's results, checked after join. */
struct first_use {
    uint8_t hash[32], k1pub[33], x25519pub[32], sealed[16 + 16];
    int rc;
};

static void *first_use_thread(void *arg)
{
    struct first_use *r = arg;
    uint8_t priv[32], key[32] = { 0 }, zero[16] = { 0 };
    p11n_iov abc = { "abc", 3 };
    memset(priv, 0x11, 32);
    p11n_aead a;
    r->rc = p11n_hash(&p11n_hash_sha256, &abc, 1, r->hash);
    r->rc |= p11n_dh_secp256k1.pubkey(priv, r->k1pub);
    r->rc |= p11n_dh_25519.pubkey(priv, r->x25519pub);
    r->rc |= p11n_aead_init(&a, &p11n_cipher_aesgcm);
    r->rc |= p11n_aead_setkey(&a, key);
    r->rc |= p11n_aead_seal(&a, 0, NULL, 0, zero, 16, r->sealed);
    p11n_aead_clear(&a);
    return NULL;
}

/* The fetched digests and ciphers and the secp256k1 context are created on
 * first use; this runs first so that the threads race to create them. */
static void test_concurrent_first_use(void)
{
    enum { NTHREADS = 4 };
    pthread_t th[NTHREADS];
    struct first_use r[NTHREADS];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < NTHREADS; i++)
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, first_use_thread, &r[i]) == 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < NTHREADS; i++) {
        CU_ASSERT_EQUAL(r[i].rc, P11N_OK);
        CHECK_HEX(r[i].hash, 32,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        CHECK_HEX(r[i].k1pub, 33,
            "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa");
        CU_ASSERT(memcmp(r[i].x25519pub, r[0].x25519pub, 32) == 0);
        CHECK_HEX(r[i].sealed, 32,
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919");
    }
}

/* ---- hashes ---- */

static void test_hash_kat(void)
{
    static const struct {
        const p11n_hash_alg *h;
        const char *abc;
    } v[] = {
        { &p11n_hash_sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
        { &p11n_hash_sha512, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                             "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f" },
        { &p11n_hash_blake2s, "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982" },
        { &p11n_hash_blake2b, "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
                              "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923" },
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t out[P11N_MAXHASHLEN];
        /* Split input, with an empty piece: the iov must concatenate. */
        p11n_iov parts[3] = { { "a", 1 }, { NULL, 0 }, { "bc", 2 } };
        CU_ASSERT_EQUAL(p11n_hash(v[i].h, parts, 3, out), P11N_OK);
        CHECK_HEX(out, v[i].h->hashlen, v[i].abc);
    }
}

static void test_hash_by_name(void)
{
    CU_ASSERT_PTR_EQUAL(p11n_hash_by_name("SHA256", 6), &p11n_hash_sha256);
    CU_ASSERT_PTR_EQUAL(p11n_hash_by_name("SHA512", 6), &p11n_hash_sha512);
    CU_ASSERT_PTR_EQUAL(p11n_hash_by_name("BLAKE2s", 7), &p11n_hash_blake2s);
    CU_ASSERT_PTR_EQUAL(p11n_hash_by_name("BLAKE2b", 7), &p11n_hash_blake2b);
    /* Exactly `len` bytes: a name inside a protocol string. */
    CU_ASSERT_PTR_EQUAL(p11n_hash_by_name("SHA256_rest", 6), &p11n_hash_sha256);
    CU_ASSERT_PTR_NULL(p11n_hash_by_name("SHA25", 5));
    CU_ASSERT_PTR_NULL(p11n_hash_by_name("sha256", 6));
    CU_ASSERT_PTR_NULL(p11n_hash_by_name("SHA256", 7));
    CU_ASSERT_PTR_EQUAL(p11n_cipher_by_name("ChaChaPoly", 10), &p11n_cipher_chachapoly);
    CU_ASSERT_PTR_EQUAL(p11n_cipher_by_name("AESGCM", 6), &p11n_cipher_aesgcm);
    CU_ASSERT_PTR_NULL(p11n_cipher_by_name("AESGCMX", 7));
    CU_ASSERT_PTR_EQUAL(p11n_dh_by_name("secp256k1", 9), &p11n_dh_secp256k1);
    CU_ASSERT_PTR_EQUAL(p11n_dh_by_name("25519", 5), &p11n_dh_25519);
    CU_ASSERT_PTR_EQUAL(p11n_dh_by_name("448", 3), &p11n_dh_448);
    CU_ASSERT_PTR_NULL(p11n_dh_by_name("2551", 4));
    CU_ASSERT_PTR_NULL(p11n_dh_by_name(NULL, 0));
}

/* RFC 4231 test cases 1, 2 (SHA-512) and 6 (key longer than a block). */
static void test_hmac_rfc4231(void)
{
    uint8_t out[P11N_MAXHASHLEN], key[131];

    memset(key, 0x0b, 20);
    p11n_iov d1 = { "Hi There", 8 };
    CU_ASSERT_EQUAL(p11n_hmac(&p11n_hash_sha256, key, 20, &d1, 1, out), P11N_OK);
    CHECK_HEX(out, 32, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

    p11n_iov d2[2] = { { "what do ya want ", 16 }, { "for nothing?", 12 } };
    CU_ASSERT_EQUAL(p11n_hmac(&p11n_hash_sha512, (const uint8_t *)"Jefe", 4, d2, 2, out),
        P11N_OK);
    CHECK_HEX(out, 64, "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                       "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737");

    memset(key, 0xaa, 131);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    p11n_iov d6 = { m6, strlen(m6) };
    CU_ASSERT_EQUAL(p11n_hmac(&p11n_hash_sha256, key, 131, &d6, 1, out), P11N_OK);
    CHECK_HEX(out, 32, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* OpenSSL's own HMAC, as the independent reference. */
static void ref_hmac(const p11n_hash_alg *h, const uint8_t *key, size_t keylen,
    const uint8_t *data, size_t len, uint8_t *out)
{
    size_t outlen = 0;
    CU_ASSERT_FATAL(EVP_Q_mac(NULL, "HMAC", NULL, h->evp_name, NULL, key, keylen, data, len,
        out, P11N_MAXHASHLEN, &outlen) != NULL);
    CU_ASSERT_FATAL(outlen == h->hashlen);
}

/* Key lengths around the block size exercise padding and pre-hashing. */
static void test_hmac_vs_reference(void)
{
    static const size_t keylens[] = { 0, 1, 32, 63, 64, 65, 127, 128, 129, 200 };
    uint64_t seed = 7;
    uint8_t key[200], data[300], got[P11N_MAXHASHLEN], want[P11N_MAXHASHLEN];
    for (size_t hi = 0; hi < 4; hi++) {
        const p11n_hash_alg *h = all_hashes[hi];
        for (size_t k = 0; k < sizeof(keylens) / sizeof(keylens[0]); k++) {
            size_t dlen = t_rand(&seed) % sizeof(data);
            t_fill(key, keylens[k], &seed);
            t_fill(data, dlen, &seed);
            p11n_iov d = { data, dlen };
            CU_ASSERT_EQUAL(p11n_hmac(h, key, keylens[k], &d, 1, got), P11N_OK);
            ref_hmac(h, key, keylens[k], data, dlen, want);
            CU_ASSERT(memcmp(got, want, h->hashlen) == 0);
        }
    }
}

/* Noise HKDF against its definition, spelled out with the reference HMAC. */
static void test_hkdf_noise(void)
{
    static const size_t ikmlens[] = { 0, 32, 56, 100 };
    uint64_t seed = 11;
    for (size_t hi = 0; hi < 4; hi++) {
        const p11n_hash_alg *h = all_hashes[hi];
        size_t hl = h->hashlen;
        for (size_t k = 0; k < sizeof(ikmlens) / sizeof(ikmlens[0]); k++) {
            uint8_t ck[P11N_MAXHASHLEN], ikm[100], temp[P11N_MAXHASHLEN];
            uint8_t w1[P11N_MAXHASHLEN], w2[P11N_MAXHASHLEN], w3[P11N_MAXHASHLEN];
            uint8_t buf[P11N_MAXHASHLEN + 1];
            t_fill(ck, hl, &seed);
            t_fill(ikm, ikmlens[k], &seed);
            ref_hmac(h, ck, hl, ikm, ikmlens[k], temp);
            buf[0] = 0x01;
            ref_hmac(h, temp, hl, buf, 1, w1);
            memcpy(buf, w1, hl);
            buf[hl] = 0x02;
            ref_hmac(h, temp, hl, buf, hl + 1, w2);
            memcpy(buf, w2, hl);
            buf[hl] = 0x03;
            ref_hmac(h, temp, hl, buf, hl + 1, w3);

            uint8_t o1[P11N_MAXHASHLEN], o2[P11N_MAXHASHLEN], o3[P11N_MAXHASHLEN];
            CU_ASSERT_EQUAL(p11n_hkdf(h, ck, ikm, ikmlens[k], 3, o1, o2, o3), P11N_OK);
            CU_ASSERT(memcmp(o1, w1, hl) == 0);
            CU_ASSERT(memcmp(o2, w2, hl) == 0);
            CU_ASSERT(memcmp(o3, w3, hl) == 0);

            /* Two outputs, written over the chaining key as MixKey does. */
            uint8_t ck2[P11N_MAXHASHLEN];
            memcpy(ck2, ck, hl);
            CU_ASSERT_EQUAL(p11n_hkdf(h, ck2, ikm, ikmlens[k], 2, ck2, o2, NULL), P11N_OK);
            CU_ASSERT(memcmp(ck2, w1, hl) == 0);
            CU_ASSERT(memcmp(o2, w2, hl) == 0);
        }
    }
    uint8_t ck[32] = { 0 }, o[32];
    CU_ASSERT_EQUAL(p11n_hkdf(&p11n_hash_sha256, ck, NULL, 0, 1, o, o, NULL),
        P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_hkdf(&p11n_hash_sha256, ck, NULL, 0, 3, o, o, NULL),
        P11N_ERR_INVALID_ARG);
}

/* ---- AEAD ---- */

static const char rfc8439_pt[] = "Ladies and Gentlemen of the class of '99: If I could offer "
                                 "you only one tip for the future, sunscreen would be it.";

/* RFC 8439 section 2.8.2: its nonce is not in the Noise layout, so the
 * explicit-IV entry points carry it. */
static void test_chachapoly_rfc8439(void)
{
    uint8_t key[32], iv[12], ad[12], out[200], back[200];
    unhex_into("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f", key, 32);
    unhex_into("070000004041424344454647", iv, 12);
    unhex_into("50515253c0c1c2c3c4c5c6c7", ad, 12);
    size_t len = strlen(rfc8439_pt);
    CU_ASSERT_FATAL(len == 114);

    p11n_aead a;
    CU_ASSERT_FATAL(p11n_aead_init(&a, &p11n_cipher_chachapoly) == P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_seal_iv(&a, iv, ad, 12, (const uint8_t *)rfc8439_pt, len, out),
        P11N_OK);
    CHECK_HEX(out, len + 16,
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
        "1ae10b594f09e26a7e902ecbd0600691");
    CU_ASSERT_EQUAL(p11n_aead_open_iv(&a, iv, ad, 12, out, len + 16, back), P11N_OK);
    CU_ASSERT(memcmp(back, rfc8439_pt, len) == 0);
    p11n_aead_clear(&a);
}

/* A context made for one direction does that direction exactly as a
 * two-way context does, and refuses the other. */
static void test_aead_one_direction(void)
{
    uint8_t key[32], pt[40], ct[56], back[40];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < sizeof(pt); i++)
        pt[i] = (uint8_t)i;
    p11n_aead both, s, o;
    CU_ASSERT_FATAL(p11n_aead_init(&both, &p11n_cipher_chachapoly) == P11N_OK);
    CU_ASSERT_FATAL(p11n_aead_init_dir(&s, &p11n_cipher_chachapoly, P11N_AEAD_SEAL) == P11N_OK);
    CU_ASSERT_FATAL(p11n_aead_init_dir(&o, &p11n_cipher_chachapoly, P11N_AEAD_OPEN) == P11N_OK);
    CU_ASSERT(s.dec == NULL && s.enc != NULL);
    CU_ASSERT(o.enc == NULL && o.dec != NULL);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&both, key), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&s, key), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&o, key), P11N_OK);

    uint8_t ref[56];
    CU_ASSERT_EQUAL(p11n_aead_seal(&both, 5, NULL, 0, pt, sizeof(pt), ref), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_seal(&s, 5, NULL, 0, pt, sizeof(pt), ct), P11N_OK);
    CU_ASSERT(memcmp(ct, ref, sizeof(ct)) == 0);
    CU_ASSERT_EQUAL(p11n_aead_open(&o, 5, NULL, 0, ct, sizeof(ct), back), P11N_OK);
    CU_ASSERT(memcmp(back, pt, sizeof(pt)) == 0);

    CU_ASSERT_EQUAL(p11n_aead_open(&s, 5, NULL, 0, ct, sizeof(ct), back), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_aead_seal(&o, 6, NULL, 0, pt, sizeof(pt), ct), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_aead_init_dir(&s, &p11n_cipher_chachapoly, 0), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_aead_init_dir(&s, &p11n_cipher_chachapoly, 4), P11N_ERR_INVALID_ARG);
    p11n_aead_clear(&both);
    p11n_aead_clear(&s);
    p11n_aead_clear(&o);
}

/* GCM specification test cases 13, 14 (zero key, zero IV: counter 0 in the
 * Noise layout) and 16 (AES-256 with associated data). */
static void test_aesgcm_vectors(void)
{
    uint8_t key[32] = { 0 }, zero[16] = { 0 }, out[100], back[100];
    p11n_aead a;
    CU_ASSERT_FATAL(p11n_aead_init(&a, &p11n_cipher_aesgcm) == P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_seal(&a, 0, NULL, 0, NULL, 0, out), P11N_OK);
    CHECK_HEX(out, 16, "530f8afbc74536b9a963b4f1c4cb738b");
    CU_ASSERT_EQUAL(p11n_aead_seal(&a, 0, NULL, 0, zero, 16, out), P11N_OK);
    CHECK_HEX(out, 32, "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919");
    CU_ASSERT_EQUAL(p11n_aead_open(&a, 0, NULL, 0, out, 32, back), P11N_OK);
    CU_ASSERT(all_zero(back, 16));

    uint8_t iv[12], ad[20], pt[60];
    unhex_into("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, 32);
    unhex_into("cafebabefacedbaddecaf888", iv, 12);
    unhex_into("feedfacedeadbeeffeedfacedeadbeefabaddad2", ad, 20);
    unhex_into("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
               "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39", pt, 60);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_seal_iv(&a, iv, ad, 20, pt, 60, out), P11N_OK);
    CHECK_HEX(out, 76,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b");
    CU_ASSERT_EQUAL(p11n_aead_open_iv(&a, iv, ad, 20, out, 76, back), P11N_OK);
    CU_ASSERT(memcmp(back, pt, 60) == 0);
    p11n_aead_clear(&a);
}

/* The counter layouts, and that seal(n) is seal_iv(layout(n)). */
static void test_nonce_layout(void)
{
    uint8_t iv[12];
    p11n_cipher_chachapoly.nonce(0x0102030405060708ULL, iv);
    CHECK_HEX(iv, 12, "000000000807060504030201");
    p11n_cipher_aesgcm.nonce(0x0102030405060708ULL, iv);
    CHECK_HEX(iv, 12, "000000000102030405060708");

    uint8_t key[32], msg[40], a1[56], a2[56];
    uint64_t seed = 3;
    t_fill(key, 32, &seed);
    t_fill(msg, 40, &seed);
    for (size_t c = 0; c < 2; c++) {
        p11n_aead a;
        CU_ASSERT_FATAL(p11n_aead_init(&a, all_ciphers[c]) == P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
        all_ciphers[c]->nonce(0x0102030405060708ULL, iv);
        CU_ASSERT_EQUAL(p11n_aead_seal(&a, 0x0102030405060708ULL, NULL, 0, msg, 40, a1),
            P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_seal_iv(&a, iv, NULL, 0, msg, 40, a2), P11N_OK);
        CU_ASSERT(memcmp(a1, a2, 56) == 0);
        /* A different counter gives a different ciphertext. */
        CU_ASSERT_EQUAL(p11n_aead_seal(&a, 0x0102030405060709ULL, NULL, 0, msg, 40, a2),
            P11N_OK);
        CU_ASSERT(memcmp(a1, a2, 56) != 0);
        p11n_aead_clear(&a);
    }
}

/* Every kind of tampering is BAD_TAG and leaves no plaintext behind. */
static void test_aead_bad_tag_wipes(void)
{
    uint8_t key[32], ad[10], msg[100], ct[116], mod[116], out[100];
    uint64_t seed = 5;
    t_fill(key, 32, &seed);
    t_fill(ad, 10, &seed);
    t_fill(msg, 100, &seed);
    for (size_t c = 0; c < 2; c++) {
        p11n_aead a;
        CU_ASSERT_FATAL(p11n_aead_init(&a, all_ciphers[c]) == P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_seal(&a, 9, ad, 10, msg, 100, ct), P11N_OK);

        /* Flip a ciphertext bit, a tag bit. */
        static const size_t flips[] = { 0, 50, 99, 100, 115 };
        for (size_t f = 0; f < sizeof(flips) / sizeof(flips[0]); f++) {
            memcpy(mod, ct, 116);
            mod[flips[f]] ^= 0x01;
            memset(out, 0xaa, sizeof(out));
            CU_ASSERT_EQUAL(p11n_aead_open(&a, 9, ad, 10, mod, 116, out), P11N_ERR_BAD_TAG);
            CU_ASSERT(all_zero(out, 100));
        }
        /* Wrong nonce, wrong associated data, missing associated data. */
        memset(out, 0xaa, sizeof(out));
        CU_ASSERT_EQUAL(p11n_aead_open(&a, 10, ad, 10, ct, 116, out), P11N_ERR_BAD_TAG);
        CU_ASSERT(all_zero(out, 100));
        memset(out, 0xaa, sizeof(out));
        CU_ASSERT_EQUAL(p11n_aead_open(&a, 9, ad, 9, ct, 116, out), P11N_ERR_BAD_TAG);
        CU_ASSERT(all_zero(out, 100));
        memset(out, 0xaa, sizeof(out));
        CU_ASSERT_EQUAL(p11n_aead_open(&a, 9, NULL, 0, ct, 116, out), P11N_ERR_BAD_TAG);
        CU_ASSERT(all_zero(out, 100));

        /* In place: the caller's buffer must not keep unverified plaintext. */
        memcpy(mod, ct, 116);
        mod[115] ^= 0x80;
        CU_ASSERT_EQUAL(p11n_aead_open(&a, 9, ad, 10, mod, 116, mod), P11N_ERR_BAD_TAG);
        CU_ASSERT(all_zero(mod, 100));

        /* The context still works after failures. */
        CU_ASSERT_EQUAL(p11n_aead_open(&a, 9, ad, 10, ct, 116, out), P11N_OK);
        CU_ASSERT(memcmp(out, msg, 100) == 0);

        /* Shorter than a tag. */
        CU_ASSERT_EQUAL(p11n_aead_open(&a, 9, NULL, 0, ct, 15, out), P11N_ERR_SHORT_MESSAGE);
        p11n_aead_clear(&a);
    }
}

static void test_aead_inplace(void)
{
    static const size_t lens[] = { 0, 1, 15, 16, 64, 1000, 65535 };
    uint8_t key[32];
    uint64_t seed = 17;
    t_fill(key, 32, &seed);
    uint8_t *msg = malloc(65535 + 16), *sep = malloc(65535 + 16), *buf = malloc(65535 + 16);
    CU_ASSERT_FATAL(msg != NULL && sep != NULL && buf != NULL);
    for (size_t c = 0; c < 2; c++) {
        p11n_aead a;
        CU_ASSERT_FATAL(p11n_aead_init(&a, all_ciphers[c]) == P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            size_t len = lens[i];
            t_fill(msg, len, &seed);
            CU_ASSERT_EQUAL(p11n_aead_seal(&a, i, (const uint8_t *)"ad", 2, msg, len, sep),
                P11N_OK);
            memcpy(buf, msg, len);
            CU_ASSERT_EQUAL(p11n_aead_seal(&a, i, (const uint8_t *)"ad", 2, buf, len, buf),
                P11N_OK);
            CU_ASSERT(memcmp(buf, sep, len + 16) == 0);
            CU_ASSERT_EQUAL(p11n_aead_open(&a, i, (const uint8_t *)"ad", 2, buf, len + 16,
                buf), P11N_OK);
            CU_ASSERT(memcmp(buf, msg, len) == 0);
        }
        /* The reserved nonce 2^64-1 is still usable: Noise REKEY encrypts
         * with it. */
        CU_ASSERT_EQUAL(p11n_aead_seal(&a, UINT64_MAX, NULL, 0, msg, 32, sep), P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_open(&a, UINT64_MAX, NULL, 0, sep, 48, buf), P11N_OK);
        CU_ASSERT(memcmp(buf, msg, 32) == 0);

        /* Rekeying the same context: the old key's ciphertext now fails. */
        uint8_t key2[32];
        t_fill(key2, 32, &seed);
        CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key2), P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_open(&a, UINT64_MAX, NULL, 0, sep, 48, buf),
            P11N_ERR_BAD_TAG);
        p11n_aead_clear(&a);
        p11n_aead_clear(&a); /* idempotent */
    }
    free(msg);
    free(sep);
    free(buf);
}

/* The transport's hot path: once keyed, sealing and opening allocate
 * nothing. */
static void test_aead_no_alloc(void)
{
    CU_ASSERT_FATAL(alloc_hooked);
    uint8_t key[32], msg[1024], ct[1024 + 16], pt[1024];
    uint64_t seed = 23;
    t_fill(key, 32, &seed);
    t_fill(msg, sizeof(msg), &seed);
    for (size_t c = 0; c < 2; c++) {
        p11n_aead a;
        CU_ASSERT_FATAL(p11n_aead_init(&a, all_ciphers[c]) == P11N_OK);
        CU_ASSERT_EQUAL(p11n_aead_setkey(&a, key), P11N_OK);
        unsigned long before = t_ossl_allocs;
        int ok = 1;
        for (uint64_t n = 0; n < 200; n++) {
            size_t len = (size_t)(n * 37 % sizeof(msg));
            ok &= p11n_aead_seal(&a, n, key, 2, msg, len, ct) == P11N_OK;
            ok &= p11n_aead_open(&a, n, key, 2, ct, len + 16, pt) == P11N_OK;
            ok &= memcmp(pt, msg, len) == 0;
        }
        CU_ASSERT(ok);
        CU_ASSERT_EQUAL(t_ossl_allocs, before);
        /* The counter does see allocations: making a context does. */
        p11n_aead b;
        CU_ASSERT_FATAL(p11n_aead_init(&b, all_ciphers[c]) == P11N_OK);
        CU_ASSERT(t_ossl_allocs > before);
        p11n_aead_clear(&b);
        p11n_aead_clear(&a);
    }
}

/* ---- X25519 / X448 (RFC 7748 sections 6.1 and 6.2) ---- */

static void check_dh_pair(const p11n_dh_alg *dh, const char *apriv, const char *apub,
    const char *bpriv, const char *bpub, const char *shared)
{
    uint8_t a[P11N_MAXPRIVLEN], b[P11N_MAXPRIVLEN], pa[P11N_MAXPUBLEN], pb[P11N_MAXPUBLEN];
    uint8_t s1[P11N_MAXDHLEN], s2[P11N_MAXDHLEN];
    unhex_into(apriv, a, dh->privlen);
    unhex_into(bpriv, b, dh->privlen);
    CU_ASSERT_EQUAL(dh->pubkey(a, pa), P11N_OK);
    CU_ASSERT_EQUAL(dh->pubkey(b, pb), P11N_OK);
    CHECK_HEX(pa, dh->publen, apub);
    CHECK_HEX(pb, dh->publen, bpub);
    CU_ASSERT_EQUAL(dh->check_pub(pb), P11N_OK);
    CU_ASSERT_EQUAL(dh->dh(a, pb, s1), P11N_OK);
    CU_ASSERT_EQUAL(dh->dh(b, pa, s2), P11N_OK);
    CHECK_HEX(s1, dh->dhlen, shared);
    CHECK_HEX(s2, dh->dhlen, shared);

    /* Small-order points (u = 0, u = 1) give an all-zero secret: refused,
     * and the output holds nothing. */
    uint8_t bad[P11N_MAXPUBLEN] = { 0 };
    memset(s1, 0xaa, sizeof(s1));
    CU_ASSERT_EQUAL(dh->dh(a, bad, s1), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT(all_zero(s1, dh->dhlen));
    bad[0] = 1;
    CU_ASSERT_EQUAL(dh->dh(a, bad, s1), P11N_ERR_BAD_PUBKEY);
}

static void test_x25519_rfc7748(void)
{
    check_dh_pair(&p11n_dh_25519,
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
}

static void test_x448_rfc7748(void)
{
    check_dh_pair(&p11n_dh_448,
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf5"
        "74a9419744897391006382a6f127ab1d9ac2d8c0a598726b",
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bb"
        "c836647241d953d40c5b12da88120d53177f80e532c41fa0",
        "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120"
        "bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d",
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972"
        "fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609",
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56"
        "fd2464c335543936521c24403085d59a449a5037514a879d");
}

/* ---- secp256k1 ---- */

/* BOLT #8 appendix: act one's es = ECDH(e.priv, rs.pub). */
static const char bolt8_es[] =
    "1e2fb3c8fe8fb9f262f649f64d26ecf0f2c0a805a767cf02dc2d77a6ef1fdcc3";

static void test_secp256k1_bolt8(void)
{
    const p11n_dh_alg *dh = &p11n_dh_secp256k1;
    char *ls_priv = bolt8_field("initiator", "ls_priv");
    char *ls_pub = bolt8_field("initiator", "ls_pub");
    char *e_priv = bolt8_field("initiator", "e_priv");
    char *e_pub = bolt8_field("initiator", "e_pub");
    char *rs_pub = bolt8_field("initiator", "rs_pub");
    char *r_priv = bolt8_field("responder", "ls_priv");
    uint8_t priv[32], pub[33], peer[33], rpub[33], out[32];

    unhex_into(ls_priv, priv, 32);
    CU_ASSERT_EQUAL(dh->pubkey(priv, pub), P11N_OK);
    CHECK_HEX(pub, 33, ls_pub);

    unhex_into(e_priv, priv, 32);
    CU_ASSERT_EQUAL(dh->pubkey(priv, pub), P11N_OK);
    CHECK_HEX(pub, 33, e_pub);
    unhex_into(rs_pub, peer, 33);
    CU_ASSERT_EQUAL(dh->check_pub(peer), P11N_OK);
    CU_ASSERT_EQUAL(dh->dh(priv, peer, out), P11N_OK);
    CHECK_HEX(out, 32, bolt8_es);

    /* The responder computes the same value from its side. */
    unhex_into(r_priv, priv, 32);
    CU_ASSERT_EQUAL(dh->pubkey(priv, rpub), P11N_OK);
    CU_ASSERT(memcmp(rpub, peer, 33) == 0);
    CU_ASSERT_EQUAL(dh->dh(priv, pub, out), P11N_OK);
    CHECK_HEX(out, 32, bolt8_es);

    free(ls_priv);
    free(ls_pub);
    free(e_priv);
    free(e_pub);
    free(rs_pub);
    free(r_priv);
}

/* Parsed points are remembered per thread: DH against more points than
 * are remembered, twice round, gives the same outputs each time, and a
 * point that differs from a remembered one in its last byte is judged on
 * its own. */
static void test_secp256k1_parsed_points(void)
{
    const p11n_dh_alg *dh = &p11n_dh_secp256k1;
    enum { NPTS = 7 };
    uint8_t priv[32], pub[33], peers[NPTS][33], first[NPTS][32], again[32];
    CU_ASSERT_FATAL(dh->generate(priv, pub) == P11N_OK);
    for (int i = 0; i < NPTS; i++) {
        uint8_t p[32];
        CU_ASSERT_FATAL(dh->generate(p, peers[i]) == P11N_OK);
        CU_ASSERT_EQUAL(dh->check_pub(peers[i]), P11N_OK);
        CU_ASSERT_EQUAL(dh->dh(priv, peers[i], first[i]), P11N_OK);
        /* the peer's view of the same DH agrees */
        CU_ASSERT_EQUAL(dh->dh(p, pub, again), P11N_OK);
        CU_ASSERT(memcmp(again, first[i], 32) == 0);
    }
    for (int round = 0; round < 2; round++)
        for (int i = NPTS - 1; i >= 0; i--) {
            CU_ASSERT_EQUAL(dh->dh(priv, peers[i], again), P11N_OK);
            CU_ASSERT(memcmp(again, first[i], 32) == 0);
        }
    /* x = p (the field prime) is never a valid x coordinate */
    uint8_t bad[33];
    unhex_into("02fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f", bad, 33);
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    memcpy(bad, peers[0], 33);
    bad[0] ^= 0x01;   /* the other parity: valid, but a different point */
    CU_ASSERT_EQUAL(dh->check_pub(peers[0]), P11N_OK);
    CU_ASSERT_EQUAL(dh->dh(priv, bad, again), P11N_OK);
    CU_ASSERT(memcmp(again, first[0], 32) != 0);
    bad[0] = 0x04;    /* not a compressed prefix */
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT_EQUAL(dh->dh(priv, bad, again), P11N_ERR_BAD_PUBKEY);
    OPENSSL_cleanse(priv, sizeof(priv));
}

static void test_secp256k1_invalid_points(void)
{
    const p11n_dh_alg *dh = &p11n_dh_secp256k1;
    uint8_t good[33], bad[65], priv[32], out[32];
    unhex_into("028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7", good, 33);
    memset(priv, 0x12, 32);

    /* Wrong prefix on a valid x. */
    static const uint8_t prefixes[] = { 0x00, 0x01, 0x04, 0x05, 0x06, 0x07, 0xff };
    for (size_t i = 0; i < sizeof(prefixes); i++) {
        memcpy(bad, good, 33);
        bad[0] = prefixes[i];
        CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
        memset(out, 0xaa, 32);
        CU_ASSERT_EQUAL(dh->dh(priv, bad, out), P11N_ERR_BAD_PUBKEY);
    }
    /* A 65-byte uncompressed encoding of a valid point. */
    CU_ASSERT_EQUAL(p11n_secp256k1_uncompress(good, bad), P11N_OK);
    CU_ASSERT_EQUAL(bad[0], 0x04);
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT_EQUAL(dh->dh(priv, bad, out), P11N_ERR_BAD_PUBKEY);
    /* x = 5: 5^3 + 7 is not a square mod p, so no point has it. */
    memset(bad, 0, 33);
    bad[0] = 0x02;
    bad[32] = 5;
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT_EQUAL(dh->dh(priv, bad, out), P11N_ERR_BAD_PUBKEY);
    bad[0] = 0x03;
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    /* x = 4 is on the curve, proving the x = 5 rejection is about x. */
    bad[32] = 4;
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_OK);
    /* x >= p. */
    memset(bad + 1, 0xff, 32);
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    /* All zero. */
    memset(bad, 0, 33);
    CU_ASSERT_EQUAL(dh->check_pub(bad), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT_EQUAL(dh->dh(priv, bad, out), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT_EQUAL(p11n_secp256k1_negate(bad, good), P11N_ERR_BAD_PUBKEY);
}

static void test_secp256k1_bad_scalar(void)
{
    const p11n_dh_alg *dh = &p11n_dh_secp256k1;
    uint8_t zero[32] = { 0 }, order[32], pub[33], out[32];
    unhex_into("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", order, 32);
    CU_ASSERT_EQUAL(dh->pubkey(zero, pub), P11N_ERR_BAD_PRIVKEY);
    CU_ASSERT_EQUAL(dh->pubkey(order, pub), P11N_ERR_BAD_PRIVKEY);
    memset(out, 0xaa, 32);
    CU_ASSERT_EQUAL(dh->dh(zero, p11n_secp256k1_generator, out), P11N_ERR_BAD_PRIVKEY);
    CU_ASSERT(all_zero(out, 32));
    /* n - 1 is the largest valid scalar. */
    order[31] = 0x40;
    CU_ASSERT_EQUAL(dh->pubkey(order, pub), P11N_OK);
}

/* The helpers the token layer uses for y-parity recovery. */
static void test_secp256k1_helpers(void)
{
    const p11n_dh_alg *dh = &p11n_dh_secp256k1;
    const uint8_t *G = p11n_secp256k1_generator;
    uint8_t one[32] = { 0 }, two[32] = { 0 }, p[33], q[33], r[33], neg[33], u[65];

    /* G is 1·G, and G + G is 2·G. */
    one[31] = 1;
    two[31] = 2;
    CU_ASSERT_EQUAL(dh->pubkey(one, q), P11N_OK);
    CU_ASSERT(memcmp(q, G, 33) == 0);
    CU_ASSERT_EQUAL(p11n_secp256k1_add(G, G, r), P11N_OK);
    CU_ASSERT_EQUAL(dh->pubkey(two, q), P11N_OK);
    CU_ASSERT(memcmp(q, r, 33) == 0);

    unhex_into("034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa", p, 33);
    /* -P differs only in the parity byte. */
    CU_ASSERT_EQUAL(p11n_secp256k1_negate(p, neg), P11N_OK);
    CU_ASSERT_EQUAL(neg[0], 0x02);
    CU_ASSERT(memcmp(neg + 1, p + 1, 32) == 0);
    CU_ASSERT_EQUAL(p11n_secp256k1_negate(neg, q), P11N_OK);
    CU_ASSERT(memcmp(q, p, 33) == 0);
    /* P + (-P) is infinity, which has no encoding. */
    CU_ASSERT_EQUAL(p11n_secp256k1_add(p, neg, r), P11N_ERR_BAD_PUBKEY);
    /* P + G - G == P, and P + G is a different point. */
    uint8_t negG[33];
    CU_ASSERT_EQUAL(p11n_secp256k1_add(p, G, q), P11N_OK);
    CU_ASSERT(memcmp(q, p, 33) != 0);
    CU_ASSERT_EQUAL(p11n_secp256k1_negate(G, negG), P11N_OK);
    CU_ASSERT_EQUAL(p11n_secp256k1_add(q, negG, r), P11N_OK);
    CU_ASSERT(memcmp(r, p, 33) == 0);

    /* uncompress / compress round trip, from both lengths. */
    CU_ASSERT_EQUAL(p11n_secp256k1_uncompress(p, u), P11N_OK);
    CU_ASSERT_EQUAL(u[0], 0x04);
    CU_ASSERT(memcmp(u + 1, p + 1, 32) == 0);
    CU_ASSERT_EQUAL(u[64] & 1, 1); /* 0x03 prefix: odd y */
    memset(q, 0, 33);
    CU_ASSERT_EQUAL(p11n_secp256k1_compress(u, 65, q), P11N_OK);
    CU_ASSERT(memcmp(q, p, 33) == 0);
    memset(q, 0, 33);
    CU_ASSERT_EQUAL(p11n_secp256k1_compress(p, 33, q), P11N_OK);
    CU_ASSERT(memcmp(q, p, 33) == 0);
    /* Hybrid encoding and other lengths are refused. */
    u[0] = 0x07;
    CU_ASSERT_EQUAL(p11n_secp256k1_compress(u, 65, q), P11N_ERR_BAD_PUBKEY);
    u[0] = 0x04;
    CU_ASSERT_EQUAL(p11n_secp256k1_compress(u, 64, q), P11N_ERR_BAD_PUBKEY);
    u[64] ^= 1; /* y no longer matches x */
    CU_ASSERT_EQUAL(p11n_secp256k1_compress(u, 65, q), P11N_ERR_BAD_PUBKEY);
    CU_ASSERT_EQUAL(p11n_secp256k1_compress(u, 33, q), P11N_ERR_BAD_PUBKEY);
}

/* Fresh keys are valid, distinct, and agree with a peer. */
static void test_dh_generate(void)
{
    static const p11n_dh_alg *const dhs[] = { &p11n_dh_secp256k1, &p11n_dh_25519, &p11n_dh_448 };
    for (size_t i = 0; i < 3; i++) {
        const p11n_dh_alg *dh = dhs[i];
        uint8_t a[P11N_MAXPRIVLEN], b[P11N_MAXPRIVLEN], pa[P11N_MAXPUBLEN],
            pb[P11N_MAXPUBLEN], pc[P11N_MAXPUBLEN];
        uint8_t s1[P11N_MAXDHLEN], s2[P11N_MAXDHLEN];
        CU_ASSERT_EQUAL(dh->generate(a, pa), P11N_OK);
        CU_ASSERT_EQUAL(dh->generate(b, pb), P11N_OK);
        CU_ASSERT(memcmp(a, b, dh->privlen) != 0);
        CU_ASSERT_EQUAL(dh->check_pub(pa), P11N_OK);
        CU_ASSERT_EQUAL(dh->pubkey(a, pc), P11N_OK);
        CU_ASSERT(memcmp(pa, pc, dh->publen) == 0);
        CU_ASSERT_EQUAL(dh->dh(a, pb, s1), P11N_OK);
        CU_ASSERT_EQUAL(dh->dh(b, pa, s2), P11N_OK);
        CU_ASSERT(memcmp(s1, s2, dh->dhlen) == 0);
        CU_ASSERT(!all_zero(s1, dh->dhlen));
    }
}

/* ---- random and hex ---- */

static void test_random(void)
{
    uint8_t a[64] = { 0 }, b[64] = { 0 };
    CU_ASSERT_EQUAL(p11n_random(a, sizeof(a)), P11N_OK);
    CU_ASSERT_EQUAL(p11n_random(b, sizeof(b)), P11N_OK);
    CU_ASSERT(memcmp(a, b, sizeof(a)) != 0);
    CU_ASSERT(!all_zero(a, sizeof(a)));
    CU_ASSERT_EQUAL(p11n_random(NULL, 0), P11N_OK);
}

static void test_hex(void)
{
    uint8_t all[256], back[256];
    char text[513], upper[513];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    p11n_hex_encode(all, 256, text);
    CU_ASSERT_EQUAL(strlen(text), 512);
    CU_ASSERT_NSTRING_EQUAL(text, "000102030405060708090a0b0c0d0e0f10", 34);
    CU_ASSERT_STRING_EQUAL(text + 500, "fafbfcfdfeff");
    CU_ASSERT_EQUAL(p11n_hex_decode(text, 512, back, 256), P11N_OK);
    CU_ASSERT(memcmp(all, back, 256) == 0);
    for (int i = 0; i <= 512; i++)
        upper[i] = (text[i] >= 'a' && text[i] <= 'f') ? (char)(text[i] - 32) : text[i];
    memset(back, 0, sizeof(back));
    CU_ASSERT_EQUAL(p11n_hex_decode(upper, 512, back, 256), P11N_OK);
    CU_ASSERT(memcmp(all, back, 256) == 0);

    /* Every byte value that is not a hex digit is refused, in either
     * position, and the output is wiped. */
    int refused = 0, accepted = 0;
    for (int c = 0; c < 256; c++) {
        int digit = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        char s[4] = { 'a', 'b', 'c', 'd' };
        s[c % 4] = (char)c;
        uint8_t o[2] = { 0x55, 0x55 };
        int rc = p11n_hex_decode(s, 4, o, 2);
        if (digit) {
            accepted += rc == P11N_OK;
        } else {
            refused += rc == P11N_ERR_PARSE && o[0] == 0 && o[1] == 0;
        }
    }
    CU_ASSERT_EQUAL(accepted, 22);
    CU_ASSERT_EQUAL(refused, 256 - 22);

    uint8_t o[2] = { 0x55, 0x55 };
    CU_ASSERT_EQUAL(p11n_hex_decode("abc", 3, o, 2), P11N_ERR_PARSE);   /* short */
    CU_ASSERT(all_zero(o, 2));
    CU_ASSERT_EQUAL(p11n_hex_decode("abcdef", 6, o, 2), P11N_ERR_PARSE);/* long */
    CU_ASSERT_EQUAL(p11n_hex_decode("ab c", 4, o, 2), P11N_ERR_PARSE);
    CU_ASSERT_EQUAL(p11n_hex_decode("0x12", 4, o, 2), P11N_ERR_PARSE);
    CU_ASSERT_EQUAL(p11n_hex_decode("", 0, o, 0), P11N_OK);
}

/* ---- allocation failures ---- */

/* One operation under test: returns its error code. */
typedef int (*alloc_op)(void);

static int op_hmac(void)
{
    uint8_t out[64];
    p11n_iov d = { "data", 4 };
    return p11n_hmac(&p11n_hash_blake2b, (const uint8_t *)"key", 3, &d, 1, out);
}

static int op_hkdf(void)
{
    uint8_t ck[32] = { 1 }, o1[32], o2[32], o3[32];
    memset(o1, 0x55, sizeof(o1));
    int rc = p11n_hkdf(&p11n_hash_sha256, ck, ck, 32, 3, o1, o2, o3);
    /* On failure nothing was written: the outputs are copied last. */
    if (rc != P11N_OK && o1[0] != 0x55)
        return 1;
    return rc;
}

static int op_aead(void)
{
    uint8_t key[32] = { 2 }, msg[40] = { 3 }, ct[56], pt[40];
    p11n_aead a;
    int rc = p11n_aead_init(&a, &p11n_cipher_chachapoly);
    if (rc != P11N_OK)
        return rc;
    rc = p11n_aead_setkey(&a, key);
    if (rc == P11N_OK)
        rc = p11n_aead_seal(&a, 1, NULL, 0, msg, 40, ct);
    if (rc == P11N_OK)
        rc = p11n_aead_open(&a, 1, NULL, 0, ct, 56, pt);
    p11n_aead_clear(&a);
    return rc;
}

static int op_x25519(void)
{
    uint8_t a[32] = { 4 }, b[32] = { 5 }, pb[32], s[32];
    int rc = p11n_dh_25519.pubkey(b, pb);
    if (rc == P11N_OK)
        rc = p11n_dh_25519.dh(a, pb, s);
    return rc;
}

static int op_x448_key(void)
{
    p11n_key *k = NULL;
    int rc = p11n_key_generate("448", &k);
    p11n_key_free(k);
    return rc;
}

/* Fail each OpenSSL allocation of each operation in turn: every failure
 * must be reported as NOMEM, CRYPTO or (for X25519/X448, whose backend
 * cannot say why a derivation failed) BAD_PUBKEY, and leak nothing (the
 * leak checker runs at exit). */
static void test_alloc_failures(void)
{
    static const struct {
        const char *name;
        alloc_op op;
        int dh;
    } ops[] = {
        { "hmac", op_hmac, 0 }, { "hkdf", op_hkdf, 0 }, { "aead", op_aead, 0 },
        { "x25519", op_x25519, 1 }, { "x448 key", op_x448_key, 1 },
    };
    CU_ASSERT_FATAL(alloc_hooked);
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        CU_ASSERT_EQUAL(ops[i].op(), P11N_OK); /* warm up lazy state */
        unsigned long step, failed = 0;
        for (step = 1; step < 1000; step++) {
            t_ossl_fail_countdown = step;
            int rc = ops[i].op();
            int reached = t_ossl_fail_countdown == 0;
            t_ossl_fail_countdown = 0;
            if (!reached) {
                /* The operation made fewer than `step` allocations. */
                CU_ASSERT_EQUAL(rc, P11N_OK);
                break;
            }
            failed++;
            int ok = rc == P11N_ERR_NOMEM || rc == P11N_ERR_CRYPTO
                || (ops[i].dh && rc == P11N_ERR_BAD_PUBKEY) || rc == P11N_OK;
            if (!ok)
                fprintf(stderr, "\n  %s: allocation %lu failed -> %d\n", ops[i].name, step, rc);
            CU_ASSERT(ok);
        }
        CU_ASSERT(step < 1000);
        CU_ASSERT(failed > 0); /* the operation does allocate */
        CU_ASSERT_EQUAL(ops[i].op(), P11N_OK);
    }
}

/* ---- software keys ---- */

static void test_key_software(void)
{
    p11n_key *k = NULL, *peer = NULL;
    uint8_t priv[32], pub[33], out[32];
    size_t len = 0;

    unhex_into("1212121212121212121212121212121212121212121212121212121212121212", priv, 32);
    CU_ASSERT_FATAL(p11n_key_from_private("secp256k1", priv, 32, &k) == P11N_OK);
    CU_ASSERT_STRING_EQUAL(p11n_key_dh_name(k), "secp256k1");
    CU_ASSERT_STRING_EQUAL(k->ops->kind, "software");
    CU_ASSERT_EQUAL(p11n_key_is_slow(k), 0);
    CU_ASSERT_EQUAL(p11n_key_public(k, pub, 32, &len), P11N_ERR_BUFFER_TOO_SMALL);
    CU_ASSERT_EQUAL(p11n_key_public(k, pub, 33, &len), P11N_OK);
    CU_ASSERT_EQUAL(len, 33);
    CHECK_HEX(pub, 33, "036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7");
    unhex_into("028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7", pub, 33);
    CU_ASSERT_EQUAL(p11n_key_dh(k, pub, out), P11N_OK);
    CHECK_HEX(out, 32, bolt8_es);
    p11n_key_free(k);

    /* Errors leave *out NULL. */
    k = (p11n_key *)&k;
    CU_ASSERT_EQUAL(p11n_key_from_private("curve9", priv, 32, &k), P11N_ERR_UNSUPPORTED);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_EQUAL(p11n_key_from_private("secp256k1", priv, 31, &k), P11N_ERR_INVALID_ARG);
    memset(priv, 0, 32);
    CU_ASSERT_EQUAL(p11n_key_from_private("secp256k1", priv, 32, &k), P11N_ERR_BAD_PRIVKEY);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT_EQUAL(p11n_key_generate("nope", &k), P11N_ERR_UNSUPPORTED);
    CU_ASSERT_EQUAL(p11n_key_generate(NULL, &k), P11N_ERR_INVALID_ARG);

    /* Generated keys of every kind agree with each other. */
    static const char *const names[] = { "secp256k1", "25519", "448" };
    for (size_t i = 0; i < 3; i++) {
        uint8_t pa[P11N_MAXPUBLEN], pb[P11N_MAXPUBLEN], s1[P11N_MAXDHLEN], s2[P11N_MAXDHLEN];
        size_t la, lb;
        CU_ASSERT_FATAL(p11n_key_generate(names[i], &k) == P11N_OK);
        CU_ASSERT_FATAL(p11n_key_generate(names[i], &peer) == P11N_OK);
        CU_ASSERT_STRING_EQUAL(p11n_key_dh_name(k), names[i]);
        CU_ASSERT_EQUAL(p11n_key_public(k, pa, sizeof(pa), &la), P11N_OK);
        CU_ASSERT_EQUAL(p11n_key_public(peer, pb, sizeof(pb), &lb), P11N_OK);
        CU_ASSERT_EQUAL(la, k->alg->publen);
        CU_ASSERT_EQUAL(p11n_key_dh(k, pb, s1), P11N_OK);
        CU_ASSERT_EQUAL(p11n_key_dh(peer, pa, s2), P11N_OK);
        CU_ASSERT(memcmp(s1, s2, k->alg->dhlen) == 0);
        p11n_key_free(k);
        p11n_key_free(peer);
    }
    p11n_key_free(NULL);
}

/* Write `text` to a fresh temporary file; returns its path (static). */
static const char *keyfile(const char *text, size_t len)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/p11n-test-key-XXXXXX");
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, len) == (ssize_t)len);
    close(fd);
    return path;
}

static int load_text(const char *text, const p11n_dh_alg *alg, p11n_key **k)
{
    const char *path = keyfile(text, strlen(text));
    int rc = p11n_key_load_file(path, alg, k);
    unlink(path);
    return rc;
}

#define K1 "1111111111111111111111111111111111111111111111111111111111111111"
#define K1_PUB "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"

static void test_key_load_file(void)
{
    const p11n_dh_alg *k1 = &p11n_dh_secp256k1;
    p11n_key *k = NULL;
    static const char *const good[] = { K1, K1 "\n", K1 "\r\n", K1 " \t \n\n" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CU_ASSERT_EQUAL(load_text(good[i], k1, &k), P11N_OK);
        if (k != NULL)
            CHECK_HEX(k->pub, 33, K1_PUB);
        p11n_key_free(k);
        k = NULL;
    }
    static const char *const bad[] = {
        "", "\n", " " K1, K1 "\n" K1 "\n", K1 "\nx", K1 "00", "11" K1,
        "111111111111111111111111111111111111111111111111111111111111111",  /* 63 */
        "111111111111111111111111111111111111111111111111111111111111111g",
        "0x" K1, "11111111111111111111111111111111 11111111111111111111111111111111",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        k = (p11n_key *)&k;
        CU_ASSERT_EQUAL(load_text(bad[i], k1, &k), P11N_ERR_PARSE);
        CU_ASSERT_PTR_NULL(k);
    }
    /* Valid hex, invalid scalar. */
    CU_ASSERT_EQUAL(load_text("0000000000000000000000000000000000000000000000000000000000000000\n",
        k1, &k), P11N_ERR_BAD_PRIVKEY);
    /* A long run of whitespace: over the size limit. */
    char big[1200];
    memcpy(big, K1, 64);
    memset(big + 64, ' ', sizeof(big) - 65);
    big[sizeof(big) - 1] = '\0';
    CU_ASSERT_EQUAL(load_text(big, k1, &k), P11N_ERR_PARSE);
    /* The algorithm sets the expected length: an X448 key. */
    CU_ASSERT_EQUAL(load_text("9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf5"
                              "74a9419744897391006382a6f127ab1d9ac2d8c0a598726b\n",
        &p11n_dh_448, &k), P11N_OK);
    if (k != NULL)
        CHECK_HEX(k->pub, 56, "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bb"
                              "c836647241d953d40c5b12da88120d53177f80e532c41fa0");
    p11n_key_free(k);
    CU_ASSERT_EQUAL(load_text(K1 "\n", &p11n_dh_448, &k), P11N_ERR_PARSE);

    CU_ASSERT_EQUAL(p11n_key_load_file("/nonexistent/p11n-key", k1, &k),
        P11N_ERR_KEY_NOT_FOUND);
    CU_ASSERT_EQUAL(p11n_key_load_file("/", k1, &k), P11N_ERR_IO);
}

static const p11n_test tests[] = {
    { "concurrent first use", test_concurrent_first_use },
    { "hash known answers (SHA256, SHA512, BLAKE2s, BLAKE2b)", test_hash_kat },
    { "lookups by Noise name", test_hash_by_name },
    { "HMAC RFC 4231", test_hmac_rfc4231 },
    { "HMAC against OpenSSL's HMAC, keys around the block size", test_hmac_vs_reference },
    { "Noise HKDF against its definition", test_hkdf_noise },
    { "ChaCha20-Poly1305 RFC 8439 2.8.2", test_chachapoly_rfc8439 },
    { "AES-256-GCM spec test cases 13, 14, 16", test_aesgcm_vectors },
    { "one-direction AEAD contexts", test_aead_one_direction },
    { "Noise nonce layouts", test_nonce_layout },
    { "bad tag wipes the output", test_aead_bad_tag_wipes },
    { "in-place seal and open, max nonce, rekey", test_aead_inplace },
    { "seal and open allocate nothing", test_aead_no_alloc },
    { "X25519 RFC 7748", test_x25519_rfc7748 },
    { "X448 RFC 7748", test_x448_rfc7748 },
    { "secp256k1 BOLT #8 keys and ECDH", test_secp256k1_bolt8 },
    { "secp256k1 invalid points", test_secp256k1_invalid_points },
    { "secp256k1 remembered parsed points", test_secp256k1_parsed_points },
    { "secp256k1 invalid scalars", test_secp256k1_bad_scalar },
    { "secp256k1 add/negate/compress helpers", test_secp256k1_helpers },
    { "generated DH keys", test_dh_generate },
    { "random bytes", test_random },
    { "hex encode/decode", test_hex },
    { "failing allocations at each step", test_alloc_failures },
    { "software keys", test_key_software },
    { "key files", test_key_load_file },
    { NULL, NULL },
};

int main(void)
{
    alloc_hooked = t_hook_openssl_alloc();
    return p11n_test_main("crypto", tests);
}
