/* The Noise engine: every snow vector in both roles, generated round trips
 * over every pattern and algorithm, tampering, misuse and fail-closed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "noise.h"
#include "secure.h"
#include "testutil.h"

#define BUF 4096

static const char *const dh_names[] = { "secp256k1", "25519", "448" };
static const char *const cipher_names[] = { "ChaChaPoly", "AESGCM" };
static const char *const hash_names[] = { "SHA256", "SHA512", "BLAKE2s", "BLAKE2b" };
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* One side of a handshake and what it ends with. */
typedef struct {
    p11n_noise *hs;
    p11n_key *s;
    p11n_cipher *send, *recv;
} side_t;

static void side_free(side_t *sd)
{
    p11n_noise_free(sd->hs);
    p11n_key_free(sd->s);
    p11n_cipher_free(sd->send);
    p11n_cipher_free(sd->recv);
    memset(sd, 0, sizeof(*sd));
}

static int sender_is_initiator(const p11n_protocol *p, size_t i)
{
    return p->nmsg == 1 || i % 2 == 0;
}

/* ------------------------------------------------------------------------
 * snow vectors
 * ------------------------------------------------------------------------ */

/* Decodes the hex string field `key` of `v` (NULL if absent). */
static uint8_t *field(json_t *v, const char *key, size_t *len)
{
    json_t *f = json_object_get(v, key);
    if (!json_is_string(f))
        return NULL;
    return t_unhex(json_string_value(f), len);
}

/* Configures one side from the vector fields with prefix "init" / "resp". */
static int vector_side(json_t *v, const char *name, const p11n_protocol *p, int initiator,
    side_t *sd)
{
    const char *pre = initiator ? "init" : "resp";
    char key[64];
    size_t len;
    uint8_t *b;
    int rc = p11n_noise_new(name, initiator, &sd->hs);
    if (rc != P11N_OK)
        return rc;

    snprintf(key, sizeof(key), "%s_prologue", pre);
    if ((b = field(v, key, &len)) != NULL) {
        rc = p11n_noise_set_prologue(sd->hs, b, len);
        free(b);
    }
    snprintf(key, sizeof(key), "%s_ephemeral", pre);
    if (rc == P11N_OK && (b = field(v, key, &len)) != NULL) {
        rc = p11n_noise_set_ephemeral(sd->hs, b, len);
        free(b);
    }
    snprintf(key, sizeof(key), "%s_static", pre);
    if (rc == P11N_OK && (b = field(v, key, &len)) != NULL) {
        rc = p11n_key_from_private(p->dh->name, b, len, &sd->s);
        free(b);
        if (rc == P11N_OK)
            rc = p11n_noise_set_local_static(sd->hs, sd->s);
    }
    snprintf(key, sizeof(key), "%s_remote_static", pre);
    if (rc == P11N_OK && (b = field(v, key, &len)) != NULL) {
        rc = p11n_noise_set_remote_static(sd->hs, b, len);
        free(b);
    }
    snprintf(key, sizeof(key), "%s_psks", pre);
    size_t i;
    json_t *psk;
    json_array_foreach(json_object_get(v, key), i, psk) {
        if (rc != P11N_OK)
            break;
        b = t_unhex(json_string_value(psk), &len);
        rc = p11n_noise_add_psk(sd->hs, b, len);
        free(b);
    }
    if (rc == P11N_OK)
        rc = p11n_noise_start(sd->hs);
    return rc;
}

/* Runs a vector with both roles at once: each message is written by its
 * sender (checked against the ciphertext) and the ciphertext is read by
 * the receiver (checked against the payload). Returns 0 on success. */
static int run_vector(json_t *v)
{
    const char *name = json_string_value(json_object_get(v, "protocol_name"));
    p11n_protocol p;
    side_t sides[2] = { { 0 }, { 0 } };
    int fails = 0;
    if (name == NULL || p11n_protocol_parse(name, &p) != P11N_OK) {
        fprintf(stderr, "%s: unsupported\n", name ? name : "(no name)");
        return 1;
    }
    int rc = vector_side(v, name, &p, 1, &sides[0]);
    if (rc == P11N_OK)
        rc = vector_side(v, name, &p, 0, &sides[1]);
    if (rc != P11N_OK) {
        fprintf(stderr, "%s: setup: %s\n", name, p11n_strerror(rc));
        fails++;
        goto out;
    }

    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(v, "messages"), i, m) {
        size_t plen, clen, outlen;
        uint8_t *payload = field(m, "payload", &plen);
        uint8_t *ct = field(m, "ciphertext", &clen);
        uint8_t out[BUF];
        side_t *tx = &sides[sender_is_initiator(&p, i) ? 0 : 1];
        side_t *rx = &sides[sender_is_initiator(&p, i) ? 1 : 0];
        int hs = i < p.nmsg;
        if (hs) {
            rc = p11n_noise_message_len(tx->hs, plen) == clen ? P11N_OK : P11N_ERR_STATE;
            if (rc == P11N_OK)
                rc = p11n_noise_write_message(tx->hs, payload, plen, out, sizeof(out), &outlen);
        } else {
            rc = p11n_cipher_encrypt(tx->send, NULL, 0, payload, plen, out, sizeof(out),
                &outlen);
        }
        if (rc != P11N_OK || outlen != clen || memcmp(out, ct, clen) != 0) {
            fprintf(stderr, "%s: message %zu: write differs (%s)\n", name, i,
                p11n_strerror(rc));
            fails++;
        }
        if (hs)
            rc = p11n_noise_read_message(rx->hs, ct, clen, out, sizeof(out), &outlen);
        else
            rc = p11n_cipher_decrypt(rx->recv, NULL, 0, ct, clen, out, sizeof(out), &outlen);
        if (rc != P11N_OK || outlen != plen || (plen > 0 && memcmp(out, payload, plen) != 0)) {
            fprintf(stderr, "%s: message %zu: read differs (%s)\n", name, i,
                p11n_strerror(rc));
            fails++;
        }
        free(payload);
        free(ct);
        if (fails > 0)
            goto out;
        if (i + 1 == p.nmsg) {
            for (int k = 0; k < 2; k++) {
                if (p11n_noise_action(sides[k].hs) != P11N_NOISE_SPLIT)
                    fails++;
                else if (p11n_noise_split(sides[k].hs, &sides[k].send, &sides[k].recv))
                    fails++;
            }
            size_t hlen = 0;
            uint8_t *want = field(v, "handshake_hash", &hlen);
            uint8_t h0[P11N_MAXHASHLEN], h1[P11N_MAXHASHLEN];
            size_t l0, l1;
            if (p11n_noise_handshake_hash(sides[0].hs, h0, sizeof(h0), &l0) ||
                p11n_noise_handshake_hash(sides[1].hs, h1, sizeof(h1), &l1) ||
                l0 != p.hash->hashlen || l1 != l0 || memcmp(h0, h1, l0) != 0 ||
                (want != NULL && (hlen != l0 || memcmp(want, h0, l0) != 0))) {
                fprintf(stderr, "%s: handshake hash differs\n", name);
                fails++;
            }
            free(want);
            if (fails > 0)
                goto out;
        }
    }
    if (i < p.nmsg) {
        fprintf(stderr, "%s: vector ends before the handshake\n", name);
        fails++;
    }
out:
    side_free(&sides[0]);
    side_free(&sides[1]);
    return fails;
}

static void test_snow_vectors(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(t_vector_path("snow.txt"), 0, &jerr);
    CU_ASSERT_FATAL(root != NULL);
    json_t *vectors = json_object_get(root, "vectors");
    size_t i, failed = 0;
    json_t *v;
    json_array_foreach(vectors, i, v)
        failed += run_vector(v) != 0;
    CU_ASSERT_EQUAL(json_array_size(vectors), 408);
    CU_ASSERT_EQUAL(failed, 0);
    json_decref(root);
}

/* ------------------------------------------------------------------------
 * generated round trips
 * ------------------------------------------------------------------------ */

static uint64_t seed = 0x5eed11;

static p11n_key *gen_key(const p11n_protocol *p)
{
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(p11n_key_generate(p->dh->name, &k) == P11N_OK);
    return k;
}

/* Sets up both sides of `name` with fresh keys, PSKs and a prologue. */
static int make_pair(const char *name, side_t sides[2], const uint8_t *prologue, size_t plen)
{
    p11n_protocol p;
    int rc = p11n_protocol_parse(name, &p);
    if (rc != P11N_OK)
        return rc;
    memset(sides, 0, 2 * sizeof(side_t));
    for (int k = 0; k < 2; k++) {
        rc = p11n_noise_new(name, k == 0, &sides[k].hs);
        if (rc != P11N_OK)
            return rc;
        sides[k].s = gen_key(&p);
        CU_ASSERT_FATAL(p11n_noise_set_prologue(sides[k].hs, prologue, plen) == P11N_OK);
        CU_ASSERT_FATAL(p11n_noise_set_local_static(sides[k].hs, sides[k].s) == P11N_OK);
    }
    for (int k = 0; k < 2; k++) {
        /* the peer's pre-message static is known out of band */
        if (p.pre[1 - k] & P11N_PRE_S)
            CU_ASSERT_FATAL(p11n_noise_set_remote_static(sides[k].hs, sides[1 - k].s->pub,
                p.dh->publen) == P11N_OK);
    }
    for (unsigned j = 0; j < p.npsk; j++) {
        uint8_t psk[P11N_PSKLEN];
        t_fill(psk, sizeof(psk), &seed);
        for (int k = 0; k < 2; k++)
            CU_ASSERT_FATAL(p11n_noise_add_psk(sides[k].hs, psk, sizeof(psk)) == P11N_OK);
    }
    for (int k = 0; k < 2; k++) {
        rc = p11n_noise_start(sides[k].hs);
        if (rc != P11N_OK)
            return rc;
    }
    return P11N_OK;
}

/* Runs the whole handshake with random payloads; returns the first error. */
static int run_handshake(const p11n_protocol *p, side_t sides[2])
{
    for (unsigned i = 0; i < p->nmsg; i++) {
        side_t *tx = &sides[i % 2], *rx = &sides[1 - i % 2];
        uint8_t payload[64], out[BUF], got[BUF];
        size_t plen = t_rand(&seed) % sizeof(payload), outlen, glen;
        t_fill(payload, plen, &seed);
        if (p11n_noise_action(tx->hs) != P11N_NOISE_WRITE ||
            p11n_noise_action(rx->hs) != P11N_NOISE_READ)
            return P11N_ERR_STATE;
        size_t want = p11n_noise_message_len(tx->hs, plen);
        int rc = p11n_noise_write_message(tx->hs, payload, plen, out, sizeof(out), &outlen);
        if (rc != P11N_OK)
            return rc;
        CU_ASSERT_EQUAL(outlen, want);
        CU_ASSERT_EQUAL(p11n_noise_message_len(rx->hs, plen), want);
        rc = p11n_noise_read_message(rx->hs, out, outlen, got, sizeof(got), &glen);
        if (rc != P11N_OK)
            return rc;
        CU_ASSERT(glen == plen && memcmp(got, payload, plen) == 0);
    }
    return P11N_OK;
}

/* Splits both sides and checks hashes, remote statics and transport. */
static void check_complete(const p11n_protocol *p, side_t sides[2])
{
    uint8_t h[2][P11N_MAXHASHLEN];
    size_t hl[2];
    for (int k = 0; k < 2; k++) {
        CU_ASSERT_EQUAL_FATAL(p11n_noise_action(sides[k].hs), P11N_NOISE_SPLIT);
        CU_ASSERT_EQUAL(p11n_noise_handshake_hash(sides[k].hs, h[k], sizeof(h[k]), &hl[k]),
            P11N_OK);
        /* every pattern ends with both statics known to the side that
         * receives them (or none were sent) */
        uint8_t rs[P11N_MAXPUBLEN];
        size_t rslen;
        if (p11n_noise_remote_static(sides[k].hs, rs, sizeof(rs), &rslen) == P11N_OK)
            CU_ASSERT(rslen == p->dh->publen &&
                memcmp(rs, sides[1 - k].s->pub, rslen) == 0);
        CU_ASSERT_EQUAL_FATAL(p11n_noise_split(sides[k].hs, &sides[k].send, &sides[k].recv),
            P11N_OK);
    }
    CU_ASSERT(hl[0] == p->hash->hashlen && hl[1] == hl[0] && memcmp(h[0], h[1], hl[0]) == 0);
    int two_way = p->nmsg > 1;
    CU_ASSERT((sides[0].recv != NULL) == two_way && (sides[1].send != NULL) == two_way);
    for (int dir = 0; dir < (two_way ? 2 : 1); dir++) {
        side_t *tx = &sides[dir], *rx = &sides[1 - dir];
        for (int n = 0; n < 3; n++) {
            uint8_t msg[100], ct[BUF], pt[BUF];
            size_t len = t_rand(&seed) % sizeof(msg), clen, plen;
            /* all of msg: its first 3 bytes are the ad even when len < 3 */
            t_fill(msg, sizeof(msg), &seed);
            CU_ASSERT_EQUAL_FATAL(p11n_cipher_encrypt(tx->send, msg, 3, msg, len, ct,
                sizeof(ct), &clen), P11N_OK);
            CU_ASSERT_EQUAL_FATAL(p11n_cipher_decrypt(rx->recv, msg, 3, ct, clen, pt,
                sizeof(pt), &plen), P11N_OK);
            CU_ASSERT(plen == len && memcmp(pt, msg, len) == 0);
        }
    }
}

static void roundtrip(const char *name)
{
    p11n_protocol p;
    side_t sides[2];
    CU_ASSERT_EQUAL_FATAL(p11n_protocol_parse(name, &p), P11N_OK);
    int rc = make_pair(name, sides, (const uint8_t *)"prologue", 8);
    if (rc == P11N_OK)
        rc = run_handshake(&p, sides);
    if (rc != P11N_OK)
        fprintf(stderr, "%s: %s\n", name, p11n_strerror(rc));
    CU_ASSERT_EQUAL(rc, P11N_OK);
    if (rc == P11N_OK)
        check_complete(&p, sides);
    side_free(&sides[0]);
    side_free(&sides[1]);
}

/* The psk modifier text for subset `mask` of positions 0..nmsg. */
static void psk_suffix(unsigned mask, unsigned nmsg, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (unsigned n = 0; n <= nmsg; n++)
        if (mask & (1u << n))
            len += (size_t)snprintf(out + len, cap - len, "%spsk%u", len ? "+" : "", n);
}

static void test_roundtrip_all(void)
{
    unsigned count = 0;
    for (const p11n_pattern *const *pat = p11n_patterns; *pat != NULL; pat++) {
        unsigned combos = 1u << ((*pat)->nmsg + 1);
        for (size_t d = 0; d < COUNT(dh_names); d++)
            for (size_t c = 0; c < COUNT(cipher_names); c++)
                for (size_t h = 0; h < COUNT(hash_names); h++) {
                    char name[128], mods[64];
                    snprintf(name, sizeof(name), "Noise_%s_%s_%s_%s", (*pat)->name,
                        dh_names[d], cipher_names[c], hash_names[h]);
                    roundtrip(name);
                    /* and a psk variant, cycling through every subset */
                    unsigned mask = 1 + (unsigned)(count % (combos - 1));
                    psk_suffix(mask, (*pat)->nmsg, mods, sizeof(mods));
                    snprintf(name, sizeof(name), "Noise_%s%s_%s_%s_%s", (*pat)->name, mods,
                        dh_names[d], cipher_names[c], hash_names[h]);
                    roundtrip(name);
                    count++;
                }
    }
    CU_ASSERT_EQUAL(count, 38 * 3 * 2 * 4);
}

/* ------------------------------------------------------------------------
 * parsing
 * ------------------------------------------------------------------------ */

static void test_parse(void)
{
    p11n_protocol p;
    CU_ASSERT_EQUAL_FATAL(p11n_protocol_parse("Noise_XXpsk0+psk2_25519_AESGCM_SHA512", &p),
        P11N_OK);
    static const uint8_t m0[] = { P11N_TOK_PSK, P11N_TOK_E, 0 };
    static const uint8_t m1[] = { P11N_TOK_E, P11N_TOK_EE, P11N_TOK_S, P11N_TOK_ES,
        P11N_TOK_PSK, 0 };
    CU_ASSERT(memcmp(p.msg[0], m0, sizeof(m0)) == 0);
    CU_ASSERT(memcmp(p.msg[1], m1, sizeof(m1)) == 0);
    CU_ASSERT_EQUAL(p.npsk, 2);
    CU_ASSERT(p.dh == &p11n_dh_25519 && p.cipher == &p11n_cipher_aesgcm &&
        p.hash == &p11n_hash_sha512);
    CU_ASSERT_EQUAL(p11n_protocol_parse("Noise_KK_secp256k1_ChaChaPoly_SHA256", &p), P11N_OK);
    CU_ASSERT(p.pre[0] == P11N_PRE_S && p.pre[1] == P11N_PRE_S && p.nmsg == 2);
    CU_ASSERT(p.dh->publen == 33 && p.dh->dhlen == 32);
    CU_ASSERT_EQUAL(p11n_protocol_parse("Noise_Npsk1_448_AESGCM_BLAKE2b", &p), P11N_OK);

    static const char *const bad[] = {
        "Noise_XY_25519_AESGCM_SHA256", "Noise_XX_25518_AESGCM_SHA256",
        "Noise_XX_25519_AESGCM_SHA384", "Noise_XX_25519_AES_SHA256",
        "Noise_XXfallback_25519_AESGCM_SHA256", "Noise_XXpsk4_25519_AESGCM_SHA256",
        "Noise_XXpsk0+psk0_25519_AESGCM_SHA256", "Noise_XXpsk0+_25519_AESGCM_SHA256",
        "Noise_XXpsk_25519_AESGCM_SHA256", "Noise_XXpsk0psk1_25519_AESGCM_SHA256",
        "Noise_Npsk2_25519_AESGCM_SHA256", "Noise_XX_25519_AESGCM_SHA256_",
        "Noise_XX_25519_AESGCM", "Noise__25519_AESGCM_SHA256", "Noise_XX+hfs_25519_AESGCM_SHA256",
        "Noise_XX_25519+448_AESGCM_SHA256", "Noisy_XX_25519_AESGCM_SHA256", "",
        "Noise_xx_25519_AESGCM_SHA256", "Noise_XX_25519__AESGCM_SHA256",
    };
    for (size_t i = 0; i < COUNT(bad); i++) {
        p11n_noise *hs = (p11n_noise *)&p;
        CU_ASSERT_EQUAL(p11n_protocol_parse(bad[i], &p), P11N_ERR_UNSUPPORTED);
        CU_ASSERT_EQUAL(p11n_noise_new(bad[i], 1, &hs), P11N_ERR_UNSUPPORTED);
        CU_ASSERT_PTR_NULL(hs);
    }
    char longname[200];
    memset(longname, 'K', sizeof(longname));
    memcpy(longname, "Noise_", 6);
    longname[sizeof(longname) - 1] = '\0';
    CU_ASSERT_EQUAL(p11n_protocol_parse(longname, &p), P11N_ERR_UNSUPPORTED);
}

/* Every table obeys the rules of section 7.3: each side sends e at most
 * once, each DH token is used at most once and only after both keys
 * exist. A typo in a table would break this. */
static void test_pattern_tables(void)
{
    unsigned n = 0;
    for (const p11n_pattern *const *pat = p11n_patterns; *pat != NULL; pat++, n++) {
        const p11n_pattern *p = *pat;
        unsigned have[2] = { p->pre[0], p->pre[1] }, used = 0;
        CU_ASSERT(p->nmsg >= 1 && p->nmsg <= P11N_MAX_MESSAGES);
        CU_ASSERT_PTR_EQUAL(p11n_pattern_by_name(p->name, strlen(p->name)), p);
        for (unsigned i = 0; i < p->nmsg; i++) {
            unsigned me = i % 2;
            CU_ASSERT(p->msg[i][0] != P11N_TOK_END);
            for (const uint8_t *t = p->msg[i]; *t; t++) {
                if (*t == P11N_TOK_E || *t == P11N_TOK_S) {
                    unsigned bit = *t == P11N_TOK_E ? P11N_PRE_E : P11N_PRE_S;
                    CU_ASSERT((have[me] & bit) == 0);
                    have[me] |= bit;
                } else {
                    unsigned ik = (*t == P11N_TOK_EE || *t == P11N_TOK_ES) ? P11N_PRE_E
                        : P11N_PRE_S;
                    unsigned rk = (*t == P11N_TOK_EE || *t == P11N_TOK_SE) ? P11N_PRE_E
                        : P11N_PRE_S;
                    CU_ASSERT((have[0] & ik) && (have[1] & rk));
                    CU_ASSERT((used & (1u << *t)) == 0);
                    used |= 1u << *t;
                }
            }
        }
        /* the one-way patterns are the only single-message ones */
        CU_ASSERT((p->nmsg == 1) == (strlen(p->name) == 1));
    }
    CU_ASSERT_EQUAL(n, 38);
}

/* ------------------------------------------------------------------------
 * tampering and misuse
 * ------------------------------------------------------------------------ */

/* Whether the cipher is keyed when message i starts (no pre-message e in
 * any table, so only message tokens key it). */
static int keyed_before(const p11n_protocol *p, unsigned i)
{
    int has_key = 0;
    for (unsigned m = 0; m < i; m++)
        for (const uint8_t *t = p->msg[m]; *t; t++)
            if ((*t != P11N_TOK_E && *t != P11N_TOK_S) || (*t == P11N_TOK_E && p->npsk))
                has_key = 1;
    return has_key;
}

/* The read errors allowed for a bit flipped at byte j of message i (of a
 * secp256k1 pattern with an empty payload). A flipped point prefix is
 * always invalid; a flipped x coordinate may still be a point, and then
 * the next authenticated field of the message fails instead (or, when
 * nothing in the message is authenticated, the read succeeds). */
static void expected_flip(const p11n_protocol *p, unsigned i, size_t j, int *want, int *alt)
{
    int has_key = keyed_before(p, i);
    size_t pos = 0;
    int found = 0, point_prefix = 0;
    *want = *alt = P11N_OK;
    for (const uint8_t *t = p->msg[i]; *t; t++) {
        size_t n = 0;
        int err = P11N_OK, enc = 0;
        if (*t == P11N_TOK_E) {
            n = 33;
            err = P11N_ERR_BAD_PUBKEY;
        } else if (*t == P11N_TOK_S) {
            enc = has_key;
            n = 33 + (enc ? 16 : 0);
            err = enc ? P11N_ERR_BAD_CIPHERTEXT : P11N_ERR_BAD_PUBKEY;
        }
        if (found && *alt == P11N_OK && enc)
            *alt = P11N_ERR_BAD_CIPHERTEXT;
        if (!found && j >= pos && j < pos + n) {
            found = 1;
            *want = err;
            point_prefix = err == P11N_ERR_BAD_PUBKEY && j == pos;
        }
        if (*t == P11N_TOK_E ? p->npsk > 0 : *t != P11N_TOK_S)
            has_key = 1;
        pos += n;
    }
    if (!found) {
        *want = *alt = P11N_ERR_BAD_TAG;
        return;
    }
    if (*alt == P11N_OK && has_key)
        *alt = P11N_ERR_BAD_TAG;
    if (*want != P11N_ERR_BAD_PUBKEY || point_prefix)
        *alt = *want;
}

/* Writes and reads messages 0..i-1 unchanged, then writes message i. */
static void advance_to(side_t sides[2], unsigned i, uint8_t *out, size_t *outlen)
{
    uint8_t got[BUF];
    size_t glen;
    for (unsigned k = 0; k <= i; k++) {
        CU_ASSERT_EQUAL_FATAL(p11n_noise_write_message(sides[k % 2].hs, NULL, 0, out, BUF,
            outlen), P11N_OK);
        if (k < i)
            CU_ASSERT_EQUAL_FATAL(p11n_noise_read_message(sides[1 - k % 2].hs, out, *outlen,
                got, sizeof(got), &glen), P11N_OK);
    }
}

static void tamper(const char *name)
{
    p11n_protocol p;
    CU_ASSERT_EQUAL_FATAL(p11n_protocol_parse(name, &p), P11N_OK);
    for (unsigned i = 0; i < p.nmsg; i++) {
        size_t len = 1;
        /* j < len: flip byte j; len <= j < 2 len: truncate to j - len */
        for (size_t j = 0; j < 2 * len; j++) {
            side_t sides[2];
            uint8_t out[BUF], got[BUF];
            size_t outlen, glen = 1;
            CU_ASSERT_EQUAL_FATAL(make_pair(name, sides, NULL, 0), P11N_OK);
            advance_to(sides, i, out, &outlen);
            len = outlen;
            side_t *rx = &sides[1 - i % 2];
            int want = P11N_ERR_SHORT_MESSAGE, alt = want;
            size_t feed = outlen;
            if (j < len) {
                out[j] ^= 0x04; /* in a point prefix: 02/03 -> 06/07 */
                expected_flip(&p, i, j, &want, &alt);
            } else {
                feed = j - len;
            }
            memset(got, 0xaa, sizeof(got));
            int rc = p11n_noise_read_message(rx->hs, out, feed, got, sizeof(got), &glen);
            if (rc != want && rc != alt)
                fprintf(stderr, "%s message %u byte %zu: got %d, want %d or %d\n", name, i,
                    j, rc, want, alt);
            CU_ASSERT(rc == want || rc == alt);
            if (rc != P11N_OK) {
                CU_ASSERT_EQUAL(p11n_noise_action(rx->hs), P11N_NOISE_FAILED);
                CU_ASSERT_EQUAL(glen, 0);
                /* the payload buffer holds nothing after a failure */
                static const uint8_t zero[BUF];
                CU_ASSERT(memcmp(got, zero, sizeof(got)) == 0);
            }
            side_free(&sides[0]);
            side_free(&sides[1]);
        }
    }
}

static void test_tamper(void)
{
    static const char *const names[] = {
        "Noise_XK_secp256k1_ChaChaPoly_SHA256", "Noise_KK_secp256k1_ChaChaPoly_SHA256",
        "Noise_XX_secp256k1_AESGCM_SHA512", "Noise_IX_secp256k1_ChaChaPoly_BLAKE2s",
        "Noise_NNpsk0_secp256k1_ChaChaPoly_SHA256", "Noise_X_secp256k1_AESGCM_BLAKE2b",
    };
    for (size_t i = 0; i < COUNT(names); i++)
        tamper(names[i]);
}

/* Every call on a dead handshake is refused. */
static void assert_dead(p11n_noise *hs)
{
    uint8_t buf[BUF];
    size_t len;
    p11n_cipher *a = NULL, *b = NULL;
    uint8_t k1[32], k2[32], ck[64];
    CU_ASSERT_EQUAL(p11n_noise_action(hs), P11N_NOISE_FAILED);
    CU_ASSERT_EQUAL(p11n_noise_write_message(hs, NULL, 0, buf, sizeof(buf), &len),
        P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_read_message(hs, buf, 100, buf, sizeof(buf), &len),
        P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_start(hs), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_set_prologue(hs, buf, 1), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_add_psk(hs, buf, 32), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_split(hs, &a, &b), P11N_ERR_STATE);
    CU_ASSERT(a == NULL && b == NULL);
    CU_ASSERT_EQUAL(p11n_noise_split_keys(hs, ck, k1, k2), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_handshake_hash(hs, buf, sizeof(buf), &len), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_remote_static(hs, buf, sizeof(buf), &len), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_noise_message_len(hs, 0), 0);
}

#define XK "Noise_XK_secp256k1_ChaChaPoly_SHA256"
#define KK "Noise_KK_secp256k1_ChaChaPoly_SHA256"

/* First message of a pair, read by the responder: its result. */
static int first_read(side_t sides[2])
{
    uint8_t out[BUF], got[BUF];
    size_t outlen, glen;
    CU_ASSERT_EQUAL_FATAL(p11n_noise_write_message(sides[0].hs, (const uint8_t *)"hi", 2,
        out, sizeof(out), &outlen), P11N_OK);
    return p11n_noise_read_message(sides[1].hs, out, outlen, got, sizeof(got), &glen);
}

static void test_wrong_prologue_and_keys(void)
{
    side_t sides[2];
    /* prologue: the responder mixes a different one */
    CU_ASSERT_EQUAL_FATAL(make_pair(XK, sides, (const uint8_t *)"a", 1), P11N_OK);
    p11n_noise_free(sides[1].hs);
    CU_ASSERT_EQUAL_FATAL(p11n_noise_new(XK, 0, &sides[1].hs), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_set_prologue(sides[1].hs, (const uint8_t *)"b", 1), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_set_local_static(sides[1].hs, sides[1].s), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(p11n_noise_start(sides[1].hs), P11N_OK);
    CU_ASSERT_EQUAL(first_read(sides), P11N_ERR_BAD_TAG);
    assert_dead(sides[1].hs);
    side_free(&sides[0]);
    side_free(&sides[1]);

    /* XK initiator aiming at another responder key */
    p11n_key *other = NULL;
    CU_ASSERT_EQUAL_FATAL(p11n_key_generate("secp256k1", &other), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(make_pair(XK, sides, NULL, 0), P11N_OK);
    p11n_noise_free(sides[0].hs);
    CU_ASSERT_EQUAL_FATAL(p11n_noise_new(XK, 1, &sides[0].hs), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_set_local_static(sides[0].hs, sides[0].s), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_set_remote_static(sides[0].hs, other->pub, 33), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(p11n_noise_start(sides[0].hs), P11N_OK);
    CU_ASSERT_EQUAL(first_read(sides), P11N_ERR_BAD_TAG);
    side_free(&sides[0]);
    side_free(&sides[1]);

    /* KK responder expecting another initiator */
    CU_ASSERT_EQUAL_FATAL(make_pair(KK, sides, NULL, 0), P11N_OK);
    p11n_noise_free(sides[1].hs);
    CU_ASSERT_EQUAL_FATAL(p11n_noise_new(KK, 0, &sides[1].hs), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_set_local_static(sides[1].hs, sides[1].s), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_set_remote_static(sides[1].hs, other->pub, 33), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(p11n_noise_start(sides[1].hs), P11N_OK);
    CU_ASSERT_EQUAL(first_read(sides), P11N_ERR_BAD_TAG);
    assert_dead(sides[1].hs);
    side_free(&sides[0]);
    side_free(&sides[1]);
    p11n_key_free(other);
}

/* A peer static that the pattern transmits may be pinned in advance: the
 * handshake completes with that key and fails with UNKNOWN_PEER otherwise. */
static void test_pinned_remote(void)
{
    static const char *const names[] = { "Noise_XX_secp256k1_ChaChaPoly_SHA256",
        "Noise_IK_25519_AESGCM_SHA512", "Noise_XK_secp256k1_ChaChaPoly_SHA256" };
    for (size_t n = 0; n < COUNT(names); n++) {
        p11n_protocol p;
        CU_ASSERT_EQUAL_FATAL(p11n_protocol_parse(names[n], &p), P11N_OK);
        for (int wrong = 0; wrong < 2; wrong++) {
            side_t sides[2];
            memset(sides, 0, sizeof(sides));
            p11n_key *other = gen_key(&p);
            for (int k = 0; k < 2; k++) {
                CU_ASSERT_EQUAL_FATAL(p11n_noise_new(names[n], k == 0, &sides[k].hs), P11N_OK);
                sides[k].s = gen_key(&p);
                CU_ASSERT_EQUAL(p11n_noise_set_local_static(sides[k].hs, sides[k].s), P11N_OK);
            }
            for (int k = 0; k < 2; k++) {
                /* every side pins its peer: pre-message keys and transmitted ones */
                const p11n_key *peer = (k == 1 && wrong) ? other : sides[1 - k].s;
                CU_ASSERT_EQUAL(p11n_noise_set_remote_static(sides[k].hs, peer->pub,
                    p.dh->publen), P11N_OK);
                CU_ASSERT_EQUAL_FATAL(p11n_noise_start(sides[k].hs), P11N_OK);
            }
            int rc = run_handshake(&p, sides);
            if (wrong) {
                /* the responder learns the initiator's key from a message */
                CU_ASSERT_EQUAL(rc, P11N_ERR_UNKNOWN_PEER);
                assert_dead(sides[1].hs);
            } else {
                CU_ASSERT_EQUAL(rc, P11N_OK);
                CU_ASSERT_EQUAL(p11n_noise_action(sides[0].hs), P11N_NOISE_SPLIT);
                CU_ASSERT_EQUAL(p11n_noise_action(sides[1].hs), P11N_NOISE_SPLIT);
            }
            side_free(&sides[0]);
            side_free(&sides[1]);
            p11n_key_free(other);
        }
    }
}

static void test_setup_errors(void)
{
    p11n_noise *hs = NULL;
    p11n_key *k = NULL, *k25519 = NULL;
    uint8_t buf[64] = { 0 };
    CU_ASSERT_EQUAL_FATAL(p11n_key_generate("secp256k1", &k), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(p11n_key_generate("25519", &k25519), P11N_OK);

    /* each setup mistake is reported and kills the object */
    struct {
        const char *name;
        int initiator;
        int step; /* which mistake */
        int want;
    } cases[] = {
        { XK, 1, 0, P11N_ERR_MISSING_KEY },      /* no rs */
        { XK, 0, 1, P11N_ERR_MISSING_KEY },      /* no s */
        { "Noise_NNpsk2_25519_AESGCM_SHA256", 1, 2, P11N_ERR_MISSING_KEY },
        { "Noise_NNpsk2_25519_AESGCM_SHA256", 1, 3, P11N_ERR_INVALID_ARG }, /* 31-byte psk */
        { "Noise_NN_25519_AESGCM_SHA256", 1, 4, P11N_ERR_INVALID_ARG },    /* psk in NN */
        { "Noise_XX_448_AESGCM_SHA256", 1, 5, P11N_ERR_INVALID_ARG }, /* 33-byte rs for 448 */
        { XK, 1, 6, P11N_ERR_BAD_PUBKEY },       /* off-curve rs */
        { XK, 1, 7, P11N_ERR_BAD_PRIVKEY },      /* zero ephemeral */
        { XK, 0, 8, P11N_ERR_INVALID_ARG },      /* 25519 key for secp256k1 */
        { XK, 0, 9, P11N_ERR_STATE },            /* write before start */
        { XK, 0, 10, P11N_ERR_STATE },           /* prologue twice */
        /* a remote static for a peer that has none: a pin never checked */
        { "Noise_NN_secp256k1_ChaChaPoly_SHA256", 1, 11, P11N_ERR_INVALID_ARG },
        { "Noise_NN_secp256k1_ChaChaPoly_SHA256", 0, 11, P11N_ERR_INVALID_ARG },
        { "Noise_NK_secp256k1_ChaChaPoly_SHA256", 0, 11, P11N_ERR_INVALID_ARG },
        { "Noise_N_secp256k1_ChaChaPoly_SHA256", 0, 11, P11N_ERR_INVALID_ARG },
        { "Noise_XN_secp256k1_ChaChaPoly_SHA256", 1, 11, P11N_ERR_INVALID_ARG },
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        CU_ASSERT_EQUAL_FATAL(p11n_noise_new(cases[i].name, cases[i].initiator, &hs), P11N_OK);
        int rc = P11N_OK;
        size_t len;
        switch (cases[i].step) {
        case 0:
            CU_ASSERT_EQUAL(p11n_noise_set_local_static(hs, k), P11N_OK);
            rc = p11n_noise_start(hs);
            break;
        case 1:
        case 2:
            rc = p11n_noise_start(hs);
            break;
        case 3:
            rc = p11n_noise_add_psk(hs, buf, 31);
            break;
        case 4:
            rc = p11n_noise_add_psk(hs, buf, 32);
            break;
        case 5:
            rc = p11n_noise_set_remote_static(hs, k->pub, 33);
            break;
        case 6:
            buf[0] = 0x04;
            rc = p11n_noise_set_remote_static(hs, buf, 33);
            buf[0] = 0;
            break;
        case 7:
            rc = p11n_noise_set_ephemeral(hs, buf, 32);
            break;
        case 8:
            rc = p11n_noise_set_local_static(hs, k25519);
            break;
        case 9:
            rc = p11n_noise_write_message(hs, NULL, 0, buf, sizeof(buf), &len);
            break;
        case 10:
            CU_ASSERT_EQUAL(p11n_noise_set_prologue(hs, NULL, 0), P11N_OK);
            rc = p11n_noise_set_prologue(hs, NULL, 0);
            break;
        case 11:
            rc = p11n_noise_set_remote_static(hs, k->pub, 33);
            break;
        }
        CU_ASSERT_EQUAL(rc, cases[i].want);
        assert_dead(hs);
        p11n_noise_free(hs);
    }

    /* out of turn: the responder may not write first */
    side_t sides[2];
    size_t len;
    CU_ASSERT_EQUAL_FATAL(make_pair(KK, sides, NULL, 0), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_write_message(sides[1].hs, NULL, 0, buf, sizeof(buf), &len),
        P11N_ERR_STATE);
    assert_dead(sides[1].hs);
    /* too small an output buffer */
    CU_ASSERT_EQUAL(p11n_noise_message_len(sides[0].hs, 0), 33 + 16);
    /* a payload no message can carry: 0, not a sum wrapped around */
    CU_ASSERT_EQUAL(p11n_noise_message_len(sides[0].hs, SIZE_MAX - 20), 0);
    CU_ASSERT_EQUAL(p11n_noise_message_len(sides[0].hs, 65536), 0);
    CU_ASSERT_EQUAL(p11n_noise_write_message(sides[0].hs, NULL, 0, buf, 48, &len),
        P11N_ERR_BUFFER_TOO_SMALL);
    assert_dead(sides[0].hs);
    side_free(&sides[0]);
    side_free(&sides[1]);

    /* a payload buffer too small for the payload */
    CU_ASSERT_EQUAL_FATAL(make_pair(KK, sides, NULL, 0), P11N_OK);
    uint8_t out[BUF], got[4];
    size_t outlen, glen;
    CU_ASSERT_EQUAL_FATAL(p11n_noise_write_message(sides[0].hs, (const uint8_t *)"hello", 5,
        out, sizeof(out), &outlen), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_read_message(sides[1].hs, out, outlen, got, sizeof(got),
        &glen), P11N_ERR_BUFFER_TOO_SMALL);
    assert_dead(sides[1].hs);
    side_free(&sides[0]);
    side_free(&sides[1]);

    /* messages of 65535 bytes and one more */
    uint8_t *big = calloc(2, 70000);
    CU_ASSERT_FATAL(big != NULL);
    for (size_t extra = 0; extra < 2; extra++) {
        CU_ASSERT_EQUAL_FATAL(make_pair(KK, sides, NULL, 0), P11N_OK);
        int rc = p11n_noise_write_message(sides[0].hs, big, 65535 - 49 + extra, big + 70000,
            70000, &len);
        CU_ASSERT_EQUAL(rc, extra ? P11N_ERR_MESSAGE_TOO_LARGE : P11N_OK);
        CU_ASSERT(extra || len == 65535);
        if (!extra)
            CU_ASSERT_EQUAL(p11n_noise_read_message(sides[1].hs, big + 70000, 65536, big,
                70000, &len), P11N_ERR_MESSAGE_TOO_LARGE);
        side_free(&sides[0]);
        side_free(&sides[1]);
    }
    free(big);

    p11n_key_free(k);
    p11n_key_free(k25519);
}

/* split_keys (for the BOLT #8 transport) gives the keys split() uses, and
 * the chaining key both sides agree on. */
static void test_split_keys(void)
{
    side_t a[2], b[2];
    uint8_t e0[32], e1[32];
    memset(e0, 0x12, sizeof(e0));
    memset(e1, 0x22, sizeof(e1));
    p11n_protocol p;
    CU_ASSERT_EQUAL_FATAL(p11n_protocol_parse(XK, &p), P11N_OK);
    /* two identical runs: same keys and ephemerals */
    p11n_key *s0 = NULL, *s1 = NULL;
    CU_ASSERT_EQUAL_FATAL(p11n_key_generate("secp256k1", &s0), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(p11n_key_generate("secp256k1", &s1), P11N_OK);
    side_t *runs[2] = { a, b };
    for (int r = 0; r < 2; r++) {
        side_t *sd = runs[r];
        memset(sd, 0, 2 * sizeof(side_t));
        for (int k = 0; k < 2; k++) {
            CU_ASSERT_EQUAL_FATAL(p11n_noise_new(XK, k == 0, &sd[k].hs), P11N_OK);
            CU_ASSERT_EQUAL(p11n_noise_set_local_static(sd[k].hs, k == 0 ? s0 : s1), P11N_OK);
            CU_ASSERT_EQUAL(p11n_noise_set_ephemeral(sd[k].hs, k == 0 ? e0 : e1, 32), P11N_OK);
        }
        CU_ASSERT_EQUAL(p11n_noise_set_remote_static(sd[0].hs, s1->pub, 33), P11N_OK);
        for (int k = 0; k < 2; k++)
            CU_ASSERT_EQUAL_FATAL(p11n_noise_start(sd[k].hs), P11N_OK);
        uint8_t out[BUF], got[BUF];
        size_t outlen, glen;
        for (unsigned i = 0; i < p.nmsg; i++) {
            CU_ASSERT_EQUAL_FATAL(p11n_noise_write_message(sd[i % 2].hs, NULL, 0, out,
                sizeof(out), &outlen), P11N_OK);
            CU_ASSERT_EQUAL_FATAL(p11n_noise_read_message(sd[1 - i % 2].hs, out, outlen, got,
                sizeof(got), &glen), P11N_OK);
        }
    }
    uint8_t ck[2][64], k1[2][32], k2[2][32];
    for (int k = 0; k < 2; k++) {
        CU_ASSERT_EQUAL(p11n_noise_split(a[k].hs, &a[k].send, &a[k].recv), P11N_OK);
        CU_ASSERT_EQUAL(p11n_noise_split_keys(b[k].hs, ck[k], k1[k], k2[k]), P11N_OK);
        CU_ASSERT_EQUAL(p11n_noise_is_initiator(b[k].hs), k == 0);
        CU_ASSERT_PTR_EQUAL(p11n_noise_protocol(b[k].hs)->dh, &p11n_dh_secp256k1);
    }
    CU_ASSERT(memcmp(ck[0], ck[1], 32) == 0 && memcmp(k1[0], k1[1], 32) == 0 &&
        memcmp(k2[0], k2[1], 32) == 0 && memcmp(k1[0], k2[0], 32) != 0);
    /* the initiator's send cipher is k1, the responder's is k2 */
    for (int k = 0; k < 2; k++) {
        p11n_cipher *c = NULL;
        uint8_t x[64], y[64];
        size_t xl, yl;
        CU_ASSERT_EQUAL_FATAL(p11n_cipher_new_keyed(&p11n_cipher_chachapoly,
            k == 0 ? k1[0] : k2[0], &c), P11N_OK);
        CU_ASSERT_EQUAL(p11n_cipher_encrypt(c, NULL, 0, (const uint8_t *)"m", 1, x,
            sizeof(x), &xl), P11N_OK);
        CU_ASSERT_EQUAL(p11n_cipher_encrypt(a[k].send, NULL, 0, (const uint8_t *)"m", 1, y,
            sizeof(y), &yl), P11N_OK);
        CU_ASSERT(xl == 17 && yl == 17 && memcmp(x, y, 17) == 0);
        p11n_cipher_free(c);
    }
    /* after split, only queries and free */
    uint8_t h[64];
    size_t hl;
    CU_ASSERT_EQUAL(p11n_noise_handshake_hash(b[0].hs, h, sizeof(h), &hl), P11N_OK);
    CU_ASSERT_EQUAL(p11n_noise_split_keys(b[0].hs, ck[0], k1[0], k2[0]), P11N_ERR_STATE);
    for (int k = 0; k < 2; k++) {
        side_free(&a[k]);
        side_free(&b[k]);
    }
    p11n_key_free(s0);
    p11n_key_free(s1);
}

/* CipherState: nonce exhaustion, Rekey, fail-closed transport ciphers. */
static void test_cipherstate(void)
{
    uint8_t k[32], ct[64], pt[64];
    size_t len;
    memset(k, 0x42, sizeof(k));
    p11n_cipherstate cs;
    CU_ASSERT_EQUAL_FATAL(p11n_cs_init(&cs, &p11n_cipher_aesgcm), P11N_OK);
    /* without a key, encryption is the identity */
    CU_ASSERT_EQUAL(p11n_cs_overhead(&cs), 0);
    CU_ASSERT_EQUAL(p11n_cs_encrypt(&cs, NULL, 0, (const uint8_t *)"abc", 3, ct), P11N_OK);
    CU_ASSERT(memcmp(ct, "abc", 3) == 0);
    CU_ASSERT_EQUAL(p11n_cs_rekey(&cs), P11N_ERR_STATE);
    CU_ASSERT_EQUAL_FATAL(p11n_cs_set_key(&cs, k), P11N_OK);
    p11n_cs_set_nonce(&cs, UINT64_MAX - 1);
    CU_ASSERT_EQUAL(p11n_cs_encrypt(&cs, NULL, 0, pt, 0, ct), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cs_encrypt(&cs, NULL, 0, pt, 0, ct), P11N_ERR_NONCE_EXHAUSTED);
    CU_ASSERT_EQUAL(p11n_cs_decrypt(&cs, NULL, 0, ct, 16, pt), P11N_ERR_NONCE_EXHAUSTED);

    /* Rekey: k' = first 32 bytes of ENCRYPT(k, 2^64-1, "", zeros) */
    p11n_aead ref;
    uint8_t block[48] = { 0 }, a[32], b[32];
    CU_ASSERT_EQUAL_FATAL(p11n_aead_init(&ref, &p11n_cipher_aesgcm), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&ref, k), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_seal(&ref, UINT64_MAX, NULL, 0, block, 32, block), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_setkey(&ref, block), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cs_set_key(&cs, k), P11N_OK);
    p11n_cs_set_nonce(&cs, 7);
    CU_ASSERT_EQUAL(p11n_cs_rekey(&cs), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cs_encrypt(&cs, NULL, 0, (const uint8_t *)"x", 1, a), P11N_OK);
    CU_ASSERT_EQUAL(p11n_aead_seal(&ref, 7, NULL, 0, (const uint8_t *)"x", 1, b), P11N_OK);
    CU_ASSERT(memcmp(a, b, 17) == 0);
    p11n_aead_clear(&ref);
    p11n_cs_clear(&cs);
    CU_ASSERT_EQUAL(p11n_cs_encrypt(&cs, NULL, 0, (const uint8_t *)"abc", 3, ct),
        P11N_ERR_STATE);

    /* Fail closed: a key that could not be set, a failed rekey or a failed
     * init never turn encryption into a plain copy (has_key is 0 then). */
    static const uint8_t plain[3] = { 'a', 'b', 'c' };
    for (int how = 0; how < 3; how++) {
        memset(ct, 0, sizeof(ct));
        if (how == 2) {
            static const p11n_cipher_alg bogus = { .name = "Bogus", .evp_name = "no-such" };
            CU_ASSERT_EQUAL(p11n_cs_init(&cs, &bogus), P11N_ERR_UNSUPPORTED);
        } else {
            CU_ASSERT_EQUAL_FATAL(p11n_cs_init(&cs, &p11n_cipher_chachapoly), P11N_OK);
            int rc = how == 1 ? p11n_cs_set_key(&cs, k) : P11N_OK;
            CU_ASSERT_EQUAL(rc, P11N_OK);
            /* the backend context gone: setkey and rekey's seal fail */
            p11n_aead_clear(&cs.aead);
            rc = how == 0 ? p11n_cs_set_key(&cs, k) : p11n_cs_rekey(&cs);
            CU_ASSERT_EQUAL(rc, P11N_ERR_INVALID_ARG);
        }
        CU_ASSERT_EQUAL(p11n_cs_encrypt(&cs, NULL, 0, plain, 3, ct), P11N_ERR_STATE);
        CU_ASSERT(memcmp(ct, plain, 3) != 0);
        CU_ASSERT_EQUAL(p11n_cs_decrypt(&cs, NULL, 0, plain, 3, pt), P11N_ERR_STATE);
        CU_ASSERT_EQUAL(p11n_cs_rekey(&cs), P11N_ERR_STATE);
        p11n_cs_clear(&cs);
    }

    /* public ciphers: rekey on both sides keeps them in step; a rekey on
     * one side only makes the next message fail, and the cipher dies */
    p11n_cipher *tx = NULL, *rx = NULL;
    CU_ASSERT_EQUAL_FATAL(p11n_cipher_new_keyed(&p11n_cipher_chachapoly, k, &tx), P11N_OK);
    CU_ASSERT_EQUAL_FATAL(p11n_cipher_new_keyed(&p11n_cipher_chachapoly, k, &rx), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cipher_rekey(tx), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cipher_rekey(rx), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cipher_encrypt(tx, NULL, 0, (const uint8_t *)"ok", 2, ct, sizeof(ct),
        &len), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cipher_decrypt(rx, NULL, 0, ct, len, pt, sizeof(pt), &len), P11N_OK);
    CU_ASSERT(len == 2 && memcmp(pt, "ok", 2) == 0);
    CU_ASSERT_EQUAL(p11n_cipher_rekey(tx), P11N_OK);
    CU_ASSERT_EQUAL(p11n_cipher_encrypt(tx, NULL, 0, (const uint8_t *)"no", 2, ct, sizeof(ct),
        &len), P11N_OK);
    memset(pt, 0xaa, sizeof(pt));
    CU_ASSERT_EQUAL(p11n_cipher_decrypt(rx, NULL, 0, ct, len, pt, sizeof(pt), &len),
        P11N_ERR_BAD_TAG);
    CU_ASSERT(pt[0] == 0 && pt[1] == 0 && len == 0);
    CU_ASSERT_EQUAL(p11n_cipher_decrypt(rx, NULL, 0, ct, 18, pt, sizeof(pt), &len),
        P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_cipher_rekey(rx), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_cipher_encrypt(tx, NULL, 0, pt, 1, ct, 16, &len),
        P11N_ERR_BUFFER_TOO_SMALL);
    CU_ASSERT_EQUAL(p11n_cipher_decrypt(tx, NULL, 0, ct, 15, pt, sizeof(pt), &len),
        P11N_ERR_SHORT_MESSAGE);
    p11n_cipher_free(tx);
    p11n_cipher_free(rx);
}

/* An AEAD failure while encrypting ends the cipher as a decryption
 * failure does: the nonce did not move, so a retry would encrypt other
 * input under it. The failure is a real one from EVP: the encryption
 * context is reset to "no cipher", so EVP_EncryptInit_ex2 refuses. */
static void test_encrypt_failure_kills(void)
{
    uint8_t k[32];
    uint64_t fill = 0xe4c;
    t_fill(k, sizeof(k), &fill);
    p11n_cipher *tx = NULL, *rx = NULL;
    CU_ASSERT_FATAL(p11n_cipher_new_keyed(&p11n_cipher_chachapoly, k, &tx) == P11N_OK);
    CU_ASSERT_FATAL(p11n_cipher_new_keyed(&p11n_cipher_chachapoly, k, &rx) == P11N_OK);
    uint8_t ct[64], pt[64];
    size_t n = 0, m = 0;
    CU_ASSERT_FATAL(p11n_cipher_encrypt(tx, NULL, 0, (const uint8_t *)"first", 5, ct,
        sizeof(ct), &n) == P11N_OK);

    /* The receiving side's encryption breaks; its decryption would work. */
    CU_ASSERT_FATAL(EVP_CIPHER_CTX_reset(rx->cs.aead.enc) == 1);
    uint8_t out[64];
    memset(out, 0xa5, sizeof(out));
    size_t outlen = 99;
    CU_ASSERT(p11n_cipher_encrypt(rx, NULL, 0, (const uint8_t *)"reply", 5, out, sizeof(out),
        &outlen) == P11N_ERR_CRYPTO);
    CU_ASSERT(outlen == 0);
    uint8_t zero[5 + 16] = { 0 };
    CU_ASSERT(memcmp(out, zero, sizeof(zero)) == 0);   /* nothing half-made to send */
    /* Dead both ways, without touching the AEAD again. */
    CU_ASSERT(p11n_cipher_encrypt(rx, NULL, 0, (const uint8_t *)"reply", 5, out, sizeof(out),
        &outlen) == P11N_ERR_STATE);
    CU_ASSERT(p11n_cipher_decrypt(rx, NULL, 0, ct, n, pt, sizeof(pt), &m) == P11N_ERR_STATE);
    CU_ASSERT(p11n_cipher_rekey(rx) == P11N_ERR_STATE);
    p11n_cipher_free(rx);

    /* The CipherState itself, as the handshake and transport use it. */
    p11n_cipherstate cs;
    CU_ASSERT_FATAL(p11n_cs_init(&cs, &p11n_cipher_chachapoly) == P11N_OK);
    CU_ASSERT_FATAL(p11n_cs_set_key(&cs, k) == P11N_OK);
    CU_ASSERT_FATAL(EVP_CIPHER_CTX_reset(cs.aead.enc) == 1);
    CU_ASSERT(p11n_cs_encrypt(&cs, NULL, 0, (const uint8_t *)"x", 1, out) == P11N_ERR_CRYPTO);
    CU_ASSERT(p11n_cs_decrypt(&cs, NULL, 0, ct, n, pt) == P11N_ERR_STATE);
    p11n_cs_clear(&cs);
    p11n_cipher_free(tx);
}

static const p11n_test tests[] = {
    { "parse", test_parse },
    { "a failed encryption ends the cipher", test_encrypt_failure_kills },
    { "pattern tables", test_pattern_tables },
    { "snow vectors, both roles", test_snow_vectors },
    { "round trips: every pattern and algorithm", test_roundtrip_all },
    { "flipped bits and truncation in every message", test_tamper },
    { "wrong prologue and static keys", test_wrong_prologue_and_keys },
    { "setup errors and fail-closed", test_setup_errors },
    { "pinned remote static", test_pinned_remote },
    { "split keys", test_split_keys },
    { "cipherstate", test_cipherstate },
    { NULL, NULL }
};

int main(void)
{
    return p11n_test_main("noise", tests);
}
