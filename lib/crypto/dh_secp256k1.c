/*
 * secp256k1 through libsecp256k1: key generation, ECDH, and the point
 * arithmetic the token layer needs to recover the y parity that a token's
 * x-only ECDH output loses.
 *
 * Public keys are 33-byte compressed points only: the wire carries nothing
 * else, and accepting other encodings would give one key several spellings.
 */
#include <pthread.h>
#include <string.h>
#include <secp256k1.h>
#include <secp256k1_ecdh.h>

#include "crypto.h"
#include "secure.h"

const uint8_t p11n_secp256k1_generator[33] = {
    0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95,
    0xce, 0x87, 0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59,
    0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17, 0x98,
};

/* One context for the process. After randomization it is only read, which
 * libsecp256k1 allows from any number of threads. */
static secp256k1_context *ctx;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void ctx_create(void)
{
    secp256k1_context *c = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (c == NULL)
        return;
    /* Blinding of the scalar multiplications against side channels. */
    uint8_t seed[32];
    int ok = p11n_random(seed, sizeof(seed)) == P11N_OK
        && secp256k1_context_randomize(c, seed);
    /* It fails only for a null argument, never for a seed's value. */
    p11n_declassify(&ok, sizeof(ok));
    if (!ok) {
        secp256k1_context_destroy(c);
        c = NULL;
    }
    p11n_wipe(seed, sizeof(seed));
    ctx = c;
}

static const secp256k1_context *get_ctx(void)
{
    if (pthread_once(&ctx_once, ctx_create) != 0)
        return NULL;
    return ctx;
}

/* Parse a 33-byte compressed point; 0 if it is not one. libsecp256k1
 * already reads 33 bytes only as 02/03 || x; the explicit prefix test
 * states the rule here instead of leaning on that. */
static int parse33(const secp256k1_context *c, const uint8_t in[33], secp256k1_pubkey *pk)
{
    if (in[0] != 0x02 && in[0] != 0x03)
        return 0;
    return secp256k1_ec_pubkey_parse(c, pk, in, 33);
}

static void serialize33(const secp256k1_context *c, const secp256k1_pubkey *pk, uint8_t out[33])
{
    size_t len = 33;
    /* Cannot fail for a parsed or computed key with a 33-byte buffer. */
    (void)secp256k1_ec_pubkey_serialize(c, out, &len, pk, SECP256K1_EC_COMPRESSED);
}

/* The context and one parsed compressed point: the common start of every
 * operation on a public key. */
static int parse_arg(const uint8_t in[33], const secp256k1_context **c, secp256k1_pubkey *pk)
{
    *c = get_ctx();
    if (*c == NULL)
        return P11N_ERR_CRYPTO;
    return parse33(*c, in, pk) ? P11N_OK : P11N_ERR_BAD_PUBKEY;
}

/* Parsing a compressed point costs a field square root, about as much as
 * the hashing of a whole handshake, and a handshake meets the same few
 * points again and again: the configured peer key is checked, then used by
 * two DH tokens; a received ephemeral is checked, then used by two more.
 * Each thread remembers the points it used last, so each is parsed once.
 * The least recently used goes first: a peer's static key, used by every
 * handshake, outlives the ephemerals, which are dead after one.
 * Only public keys pass through here (never the DH-secret points of the
 * token helpers below), and parsing is a function of the bytes alone, so a
 * remembered point is exactly what parsing again would give. */
#define PARSED_SLOTS 4   /* both sides of a handshake in one thread: 2 points each */

struct parsed_point {
    uint8_t bytes[33];
    secp256k1_pubkey pk;
    uint64_t used;       /* 0: empty; else the thread's clock at last use */
};

static _Thread_local struct parsed_point parsed[PARSED_SLOTS];
static _Thread_local uint64_t parsed_clock;

static int parse_public(const uint8_t in[33], const secp256k1_context **c, secp256k1_pubkey *pk)
{
    *c = get_ctx();
    if (*c == NULL)
        return P11N_ERR_CRYPTO;
    struct parsed_point *oldest = &parsed[0];
    for (unsigned i = 0; i < PARSED_SLOTS; i++) {
        struct parsed_point *p = &parsed[i];
        if (p->used != 0 && memcmp(p->bytes, in, 33) == 0) {
            p->used = ++parsed_clock;
            *pk = p->pk;
            return P11N_OK;
        }
        if (p->used < oldest->used)
            oldest = p;
    }
    if (!parse33(*c, in, pk))
        return P11N_ERR_BAD_PUBKEY;
    memcpy(oldest->bytes, in, 33);
    oldest->pk = *pk;
    oldest->used = ++parsed_clock;
    return P11N_OK;
}

static int k1_pubkey(const uint8_t *priv, uint8_t *pub)
{
    const secp256k1_context *c = get_ctx();
    if (c == NULL)
        return P11N_ERR_CRYPTO;
    secp256k1_pubkey pk;
    int ok = secp256k1_ec_pubkey_create(c, &pk, priv);
    /* The public key is public, and so is whether the private key was a
     * valid scalar (a key that is not one is refused when loaded).
     * libsecp256k1's own constant-time test declares the same two. */
    p11n_declassify(&ok, sizeof(ok));
    p11n_declassify(&pk, sizeof(pk));
    if (!ok)
        return P11N_ERR_BAD_PRIVKEY;
    serialize33(c, &pk, pub);
    return P11N_OK;
}

static int k1_generate(uint8_t *priv, uint8_t *pub)
{
    const secp256k1_context *c = get_ctx();
    if (c == NULL)
        return P11N_ERR_CRYPTO;
    /* A random 32-byte string is out of range with probability ~2^-128;
     * the bound only guards against a broken RNG returning constants. */
    for (int tries = 0; tries < 8; tries++) {
        int rc = p11n_random(priv, 32);
        if (rc != P11N_OK)
            break;
        /* A rejected draw is replaced by a fresh one, so whether it was
         * in range tells nothing about the key finally kept. */
        int ok = secp256k1_ec_seckey_verify(c, priv);
        p11n_declassify(&ok, sizeof(ok));
        if (ok)
            return k1_pubkey(priv, pub);
    }
    p11n_wipe(priv, 32);
    return P11N_ERR_CRYPTO;
}

static int k1_check_pub(const uint8_t *pub)
{
    const secp256k1_context *c;
    secp256k1_pubkey pk;
    return parse_public(pub, &c, &pk);
}

/* SHA256 of the compressed shared point: libsecp256k1's default ECDH hash. */
static int k1_dh(const uint8_t *priv, const uint8_t *pub, uint8_t *out)
{
    const secp256k1_context *c;
    secp256k1_pubkey pk;
    int rc = parse_public(pub, &c, &pk);
    if (rc != P11N_OK)
        return rc;
    int ok = secp256k1_ecdh(c, out, &pk, priv, NULL, NULL);
    /* Fails only for a private key that is not a valid scalar, which
     * loading already refused (public, as in libsecp256k1's own test). */
    p11n_declassify(&ok, sizeof(ok));
    if (!ok) {
        p11n_wipe(out, 32);
        return P11N_ERR_BAD_PRIVKEY;
    }
    return P11N_OK;
}

const p11n_dh_alg p11n_dh_secp256k1 = {
    .name = "secp256k1",
    .privlen = 32,
    .publen = 33,
    .dhlen = 32,
    .generate = k1_generate,
    .pubkey = k1_pubkey,
    .dh = k1_dh,
    .check_pub = k1_check_pub,
};

int p11n_secp256k1_add(const uint8_t a[33], const uint8_t b[33], uint8_t out[33])
{
    if (a == NULL || b == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    const secp256k1_context *c;
    secp256k1_pubkey pa, pb, sum;
    int rc = parse_arg(a, &c, &pa);
    if (rc == P11N_OK)
        rc = parse_arg(b, &c, &pb);
    const secp256k1_pubkey *ins[2] = { &pa, &pb };
    /* Fails only when the sum is the point at infinity (b == -a), which
     * has no encoding. */
    if (rc == P11N_OK && !secp256k1_ec_pubkey_combine(c, &sum, ins, 2))
        rc = P11N_ERR_BAD_PUBKEY;
    if (rc == P11N_OK)
        serialize33(c, &sum, out);
    /* Variable time, like all of libsecp256k1's public-key functions: for
     * public points only (the token layer's P + G). Secret points go
     * through lib/secp256k1_x.c. Wiped all the same. */
    p11n_wipe(&pa, sizeof(pa));
    p11n_wipe(&pb, sizeof(pb));
    p11n_wipe(&sum, sizeof(sum));
    return rc;
}

/* Parses the point `a`, negated if asked, and writes it in `outlen` (33:
 * compressed, 65: uncompressed) bytes. */
static int rewrite_point(const uint8_t a[33], int negate, uint8_t *out, size_t outlen)
{
    if (a == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    const secp256k1_context *c;
    secp256k1_pubkey p;
    int rc = parse_arg(a, &c, &p);
    if (rc != P11N_OK)
        return rc;
    if (negate && !secp256k1_ec_pubkey_negate(c, &p))
        return P11N_ERR_CRYPTO;
    size_t len = outlen;
    /* Cannot fail for a parsed key with a buffer of its format's size. */
    (void)secp256k1_ec_pubkey_serialize(c, out, &len, &p,
        outlen == 33 ? SECP256K1_EC_COMPRESSED : SECP256K1_EC_UNCOMPRESSED);
    return P11N_OK;
}

int p11n_secp256k1_negate(const uint8_t a[33], uint8_t out[33])
{
    return rewrite_point(a, 1, out, 33);
}

int p11n_secp256k1_uncompress(const uint8_t a[33], uint8_t out[65])
{
    return rewrite_point(a, 0, out, 65);
}

int p11n_secp256k1_compress(const uint8_t *in, size_t len, uint8_t out[33])
{
    if (in == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    if (len == 33)
        return rewrite_point(in, 0, out, 33);
    /* 0x04 only: the parser would also take the "hybrid" 0x06/0x07 form,
     * which no token should produce. */
    if (len != 65 || in[0] != 0x04)
        return P11N_ERR_BAD_PUBKEY;
    const secp256k1_context *c = get_ctx();
    secp256k1_pubkey p;
    if (c == NULL)
        return P11N_ERR_CRYPTO;
    if (!secp256k1_ec_pubkey_parse(c, &p, in, 65))
        return P11N_ERR_BAD_PUBKEY;
    serialize33(c, &p, out);
    return P11N_OK;
}
