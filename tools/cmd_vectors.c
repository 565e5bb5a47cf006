/*
 * p11noise vectors FILE...: runs Noise test vectors through the public API.
 *
 * Two formats, told apart by their top-level keys:
 *  - cacophony/snow JSON {"vectors": [...]}: each vector runs once as
 *    initiator and once as responder (each role alone, checked against the
 *    recorded messages); it passes when both roles do. After the handshake
 *    the messages alternate initiator -> responder and back (one-way
 *    patterns: all initiator -> responder) over the split CipherStates.
 *  - BOLT #8 JSON {"protocol", "prologue", "cases": [...]}: each case runs
 *    through p11n_handshake_* (or p11n_transport_* for the transport case).
 *
 * Protocols the library does not support are skipped, never passed. Each
 * failure is one line naming the case; the last line is
 * "N passed, N failed, N skipped"; the exit status is 1 if anything failed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "p11noise.h"
#include "cli.h"

enum { PASS, FAIL, SKIP };

typedef struct {
    unsigned passed, failed, skipped;
} tally_t;

/* Why a case failed: filled by the runners, printed by the caller. */
typedef struct {
    char text[256];
} why_t;

static int failf(why_t *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int failf(why_t *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->text, sizeof(why->text), fmt, ap);
    va_end(ap);
    return FAIL;
}

static void count(tally_t *t, int result, const char *name, const char *role, const why_t *why)
{
    if (result == PASS) {
        t->passed++;
    } else if (result == SKIP) {
        t->skipped++;
    } else {
        t->failed++;
        printf("FAIL %s%s%s: %s\n", name, role ? " as " : "", role ? role : "", why->text);
    }
}

/* ---- hex fields ---- */

static int nibble(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A decoded hex field of the vector. Vector files hold test keys only, so
 * plain decoding is fine here. */
typedef struct {
    uint8_t *p;
    size_t len;
    int present;
} bytes_t;

/* Decodes the hex string `s` (NULL counts as malformed). */
static int decode_hex(const char *s, bytes_t *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = s != NULL ? strlen(s) : 1;
    if (n % 2 != 0)
        return -1;
    out->p = malloc(n / 2 + 1);
    if (out->p == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out->p);
            out->p = NULL;
            return -1;
        }
        out->p[i] = (uint8_t)(hi << 4 | lo);
    }
    out->len = n / 2;
    out->present = 1;
    return 0;
}

/* The hex field `key` of `obj`; absent fields leave present = 0. */
static int get_hex(json_t *obj, const char *key, bytes_t *out)
{
    memset(out, 0, sizeof(*out));
    json_t *f = json_object_get(obj, key);
    if (f == NULL)
        return 0;
    return decode_hex(json_string_value(f), out);
}

static void bytes_free(bytes_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------------
 * cacophony / snow vectors
 * ------------------------------------------------------------------------ */

#define MSG_CAP 65535

/* The DH field of a protocol name ("25519" in Noise_XX_25519_AESGCM_SHA256). */
static int dh_of(const char *name, char *out, size_t cap)
{
    const char *a = strchr(name, '_');
    const char *b = a != NULL ? strchr(a + 1, '_') : NULL;
    const char *c = b != NULL ? strchr(b + 1, '_') : NULL;
    if (c == NULL || (size_t)(c - b - 1) >= cap)
        return -1;
    memcpy(out, b + 1, (size_t)(c - b - 1));
    out[c - b - 1] = '\0';
    return 0;
}

typedef struct {
    p11n_noise *hs;
    p11n_key *s;
    p11n_cipher *send, *recv;
} role_t;

static void role_free(role_t *r)
{
    p11n_noise_free(r->hs);
    p11n_key_free(r->s);
    p11n_cipher_free(r->send);
    p11n_cipher_free(r->recv);
}

/* Applies the vector's settings for one role ("init" / "resp"). */
static int configure(json_t *v, const char *pre, const char *dh, role_t *r, why_t *why)
{
    char key[48];
    bytes_t b;
    int rc = P11N_OK;
    static const char *const fields[] = { "prologue", "ephemeral", "static", "remote_static" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]) && rc == P11N_OK; i++) {
        snprintf(key, sizeof(key), "%s_%s", pre, fields[i]);
        if (get_hex(v, key, &b) != 0)
            return failf(why, "bad hex in %s", key);
        if (!b.present)
            continue;
        switch (i) {
        case 0:
            rc = p11n_noise_set_prologue(r->hs, b.p, b.len);
            break;
        case 1:
            rc = p11n_noise_set_ephemeral(r->hs, b.p, b.len);
            break;
        case 2:
            rc = p11n_key_from_private(dh, b.p, b.len, &r->s);
            if (rc == P11N_OK)
                rc = p11n_noise_set_local_static(r->hs, r->s);
            break;
        default:
            rc = p11n_noise_set_remote_static(r->hs, b.p, b.len);
            break;
        }
        bytes_free(&b);
        if (rc != P11N_OK)
            return rc == P11N_ERR_UNSUPPORTED ? SKIP
                : failf(why, "setting %s: %s", key, p11n_strerror(rc));
    }
    snprintf(key, sizeof(key), "%s_psks", pre);
    size_t i;
    json_t *psk;
    json_array_foreach(json_object_get(v, key), i, psk) {
        if (decode_hex(json_string_value(psk), &b) != 0)
            return failf(why, "bad hex in %s", key);
        rc = p11n_noise_add_psk(r->hs, b.p, b.len);
        bytes_free(&b);
        if (rc != P11N_OK)
            return failf(why, "psk %zu: %s", i, p11n_strerror(rc));
    }
    /* older vector files carry a single PSK as a string */
    snprintf(key, sizeof(key), "%s_psk", pre);
    if (json_is_string(json_object_get(v, key))) {
        if (get_hex(v, key, &b) != 0)
            return failf(why, "bad hex in %s", key);
        rc = p11n_noise_add_psk(r->hs, b.p, b.len);
        bytes_free(&b);
        if (rc != P11N_OK)
            return failf(why, "psk: %s", p11n_strerror(rc));
    }
    rc = p11n_noise_start(r->hs);
    if (rc != P11N_OK)
        return failf(why, "start: %s", p11n_strerror(rc));
    return PASS;
}

/* After the last handshake message: split and check the handshake hash. */
static int finish_handshake(json_t *v, role_t *r, int initiator, int *one_way, why_t *why)
{
    uint8_t h[64];
    size_t hlen;
    bytes_t want;
    int rc = p11n_noise_handshake_hash(r->hs, h, sizeof(h), &hlen);
    if (rc != P11N_OK)
        return failf(why, "handshake hash: %s", p11n_strerror(rc));
    if (get_hex(v, "handshake_hash", &want) != 0)
        return failf(why, "bad hex in handshake_hash");
    int same = !want.present || (want.len == hlen && memcmp(want.p, h, hlen) == 0);
    bytes_free(&want);
    if (!same)
        return failf(why, "handshake hash differs");
    rc = p11n_noise_split(r->hs, &r->send, &r->recv);
    if (rc != P11N_OK)
        return failf(why, "split: %s", p11n_strerror(rc));
    /* a one-way pattern leaves the direction back to the initiator out */
    *one_way = initiator ? r->recv == NULL : r->send == NULL;
    return PASS;
}

/* One message: write or encrypt it if we send it, else read or decrypt. */
static int step(role_t *r, int handshake, int sending, const bytes_t *payload,
    const bytes_t *ct, uint8_t *buf, size_t i, why_t *why)
{
    size_t outlen = 0;
    int rc;
    if (sending) {
        rc = handshake
            ? p11n_noise_write_message(r->hs, payload->p, payload->len, buf, MSG_CAP, &outlen)
            : p11n_cipher_encrypt(r->send, NULL, 0, payload->p, payload->len, buf, MSG_CAP,
                  &outlen);
        if (rc != P11N_OK)
            return failf(why, "message %zu: writing: %s", i, p11n_strerror(rc));
        if (outlen != ct->len || memcmp(buf, ct->p, outlen) != 0)
            return failf(why, "message %zu: ciphertext differs", i);
    } else {
        rc = handshake
            ? p11n_noise_read_message(r->hs, ct->p, ct->len, buf, MSG_CAP, &outlen)
            : p11n_cipher_decrypt(r->recv, NULL, 0, ct->p, ct->len, buf, MSG_CAP, &outlen);
        if (rc != P11N_OK)
            return failf(why, "message %zu: reading: %s", i, p11n_strerror(rc));
        if (outlen != payload->len || (outlen > 0 && memcmp(buf, payload->p, outlen) != 0))
            return failf(why, "message %zu: payload differs", i);
    }
    return PASS;
}

static int run_snow_role(json_t *v, const char *name, int initiator, why_t *why)
{
    char dh[32];
    role_t r = { 0 };
    int one_way = 0, done = 0;
    if (dh_of(name, dh, sizeof(dh)) != 0)
        return SKIP;
    int rc = p11n_noise_new(name, initiator, &r.hs);
    if (rc == P11N_ERR_UNSUPPORTED)
        return SKIP;
    if (rc != P11N_OK)
        return failf(why, "%s", p11n_strerror(rc));
    uint8_t *buf = malloc(MSG_CAP);
    int result = buf != NULL ? configure(v, initiator ? "init" : "resp", dh, &r, why)
        : failf(why, "out of memory");

    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(v, "messages"), i, m) {
        if (result != PASS)
            break;
        bytes_t payload, ct;
        int bad = get_hex(m, "payload", &payload) != 0;
        bad |= get_hex(m, "ciphertext", &ct) != 0;
        int action = done ? 0 : p11n_noise_action(r.hs);
        if (bad || !ct.present) {
            result = failf(why, "message %zu: bad hex", i);
        } else if (!done) {
            result = step(&r, 1, action == P11N_NOISE_WRITE, &payload, &ct, buf, i, why);
            if (result == PASS && p11n_noise_action(r.hs) == P11N_NOISE_SPLIT) {
                result = finish_handshake(v, &r, initiator, &one_way, why);
                done = 1;
            }
        } else {
            int initiator_sends = one_way || i % 2 == 0;
            result = step(&r, 0, initiator_sends == initiator, &payload, &ct, buf, i, why);
        }
        bytes_free(&payload);
        bytes_free(&ct);
    }
    if (result == PASS && !done)
        result = failf(why, "the vector ends before the handshake does");
    free(buf);
    role_free(&r);
    return result;
}

static void run_snow(json_t *vectors, tally_t *t)
{
    size_t i;
    json_t *v;
    json_array_foreach(vectors, i, v) {
        const char *name = json_string_value(json_object_get(v, "protocol_name"));
        why_t why = { "" };
        char label[64];
        if (name == NULL) {
            snprintf(label, sizeof(label), "vector %zu", i);
            count(t, failf(&why, "no protocol_name"), label, NULL, &why);
            continue;
        }
        /* Noise Pipes fallback and hybrid-forward-secrecy vectors need
         * protocol features outside the engine: counted, never passed. */
        if (json_is_true(json_object_get(v, "fallback")) ||
            json_object_get(v, "fallback_pattern") != NULL ||
            json_object_get(v, "hybrid") != NULL) {
            count(t, SKIP, name, NULL, &why);
            continue;
        }
        int ri = run_snow_role(v, name, 1, &why);
        if (ri == FAIL) {
            count(t, FAIL, name, "initiator", &why);
            continue;
        }
        int rr = run_snow_role(v, name, 0, &why);
        if (rr == FAIL) {
            count(t, FAIL, name, "responder", &why);
            continue;
        }
        count(t, ri == SKIP || rr == SKIP ? SKIP : PASS, name, NULL, &why);
    }
}

/* ------------------------------------------------------------------------
 * BOLT #8 vectors
 * ------------------------------------------------------------------------ */

/* The error a BOLT #8 failure label maps to ("ACT2_BAD_VERSION 1"). */
static int map_error(const char *label)
{
    static const struct {
        const char *suffix;
        int err;
    } map[] = {
        { "READ_FAILED", P11N_ERR_SHORT_MESSAGE },
        { "BAD_VERSION", P11N_ERR_BAD_VERSION },
        { "BAD_PUBKEY", P11N_ERR_BAD_PUBKEY },
        { "BAD_CIPHERTEXT", P11N_ERR_BAD_CIPHERTEXT },
        { "BAD_TAG", P11N_ERR_BAD_TAG },
    };
    if (label == NULL || strncmp(label, "ACT", 3) != 0 || label[3] < '1' || label[3] > '3' ||
        label[4] != '_')
        return 0;
    const char *s = label + 5;
    size_t len = strcspn(s, " ");
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strlen(map[i].suffix) == len && strncmp(s, map[i].suffix, len) == 0)
            return map[i].err;
    return 0;
}

#define FRAME_CAP P11N_MAX_FRAME

/* Compares a finished transport's keys with sk/rk through behaviour: the
 * first frame it seals must equal one sealed by a reference transport with
 * send key sk, and it must open a frame sealed with rk. The chaining key
 * only matters from the first rotation (1000 nonces) on, so any ck works
 * for the references. */
static int check_keys(p11n_transport *t, const char *protocol, json_t *keys, why_t *why)
{
    static const uint8_t ck[32];
    static const uint8_t probe[] = "key check";
    bytes_t sk, rk;
    p11n_transport *ref_send = NULL, *ref_recv = NULL;
    uint8_t a[64], b[64];
    size_t alen = 0, blen = 0, used = 0, mlen = 0;
    const uint8_t *m = NULL;
    int result = PASS;

    int bad = get_hex(keys, "sk", &sk) != 0;
    bad |= get_hex(keys, "rk", &rk) != 0;
    if (bad || sk.len != 32 || rk.len != 32) {
        result = failf(why, "keys: bad sk/rk");
        goto out;
    }
    if (p11n_transport_new(protocol, ck, sk.p, rk.p, &ref_send) != P11N_OK ||
        p11n_transport_new(protocol, ck, rk.p, sk.p, &ref_recv) != P11N_OK) {
        result = failf(why, "keys: reference transport failed");
        goto out;
    }
    if (p11n_transport_seal(t, probe, sizeof(probe), a, sizeof(a), &alen) != P11N_OK ||
        p11n_transport_seal(ref_send, probe, sizeof(probe), b, sizeof(b), &blen) != P11N_OK ||
        alen != blen || memcmp(a, b, alen) != 0) {
        result = failf(why, "keys: sk differs");
        goto out;
    }
    if (p11n_transport_seal(ref_recv, probe, sizeof(probe), b, sizeof(b), &blen) != P11N_OK ||
        p11n_transport_feed(t, b, blen, &used, &m, &mlen) != 1 || used != blen ||
        mlen != sizeof(probe) || memcmp(m, probe, mlen) != 0)
        result = failf(why, "keys: rk differs");
out:
    p11n_transport_free(ref_send);
    p11n_transport_free(ref_recv);
    bytes_free(&sk);
    bytes_free(&rk);
    return result;
}

/* "transport-message test": the frames of chosen message indexes when one
 * message is sealed over and over. */
static int run_transport_case(json_t *c, const char *protocol, why_t *why)
{
    bytes_t ck, sk, rk, pt;
    p11n_transport *t = NULL;
    uint8_t *frame = malloc(FRAME_CAP);
    int result = PASS;
    int bad = get_hex(c, "ck", &ck) != 0;
    bad |= get_hex(c, "sk", &sk) != 0;
    bad |= get_hex(c, "rk", &rk) != 0;
    bad |= get_hex(c, "plaintext_hex", &pt) != 0;
    json_t *outputs = json_object_get(c, "outputs");
    if (frame == NULL || bad || ck.len != 32 || sk.len != 32 || rk.len != 32 ||
        !json_is_object(outputs)) {
        result = failf(why, "malformed case");
        goto out;
    }
    int rc = p11n_transport_new(protocol, ck.p, sk.p, rk.p, &t);
    if (rc == P11N_ERR_UNSUPPORTED) {
        result = SKIP;
        goto out;
    }
    if (rc != P11N_OK) {
        result = failf(why, "transport: %s", p11n_strerror(rc));
        goto out;
    }
    unsigned long last = 0;
    const char *key;
    json_t *val;
    json_object_foreach(outputs, key, val) {
        char *end;
        unsigned long n = strtoul(key, &end, 10);
        if (*end != '\0' || n > 1000000) {
            result = failf(why, "bad output index '%s'", key);
            goto out;
        }
        if (n > last)
            last = n;
    }
    for (unsigned long i = 0; i <= last && result == PASS; i++) {
        size_t flen;
        rc = p11n_transport_seal(t, pt.p, pt.len, frame, FRAME_CAP, &flen);
        if (rc != P11N_OK) {
            result = failf(why, "message %lu: %s", i, p11n_strerror(rc));
            break;
        }
        char idx[24];
        snprintf(idx, sizeof(idx), "%lu", i);
        bytes_t want;
        if (json_object_get(outputs, idx) == NULL)
            continue;
        if (get_hex(outputs, idx, &want) != 0)
            result = failf(why, "message %lu: bad hex", i);
        else if (want.len != flen || memcmp(want.p, frame, flen) != 0)
            result = failf(why, "message %lu: frame differs", i);
        bytes_free(&want);
    }
out:
    p11n_transport_free(t);
    free(frame);
    bytes_free(&ck);
    bytes_free(&sk);
    bytes_free(&rk);
    bytes_free(&pt);
    return result;
}

/* The p11noise pattern of a protocol name the wire handshake speaks, or
 * NULL (then the case is skipped). */
static const char *wire_pattern(const char *protocol)
{
    if (protocol == NULL)
        return NULL;
    if (strcmp(protocol, "Noise_XK_secp256k1_ChaChaPoly_SHA256") == 0)
        return "XK";
    if (strcmp(protocol, "Noise_KK_secp256k1_ChaChaPoly_SHA256") == 0)
        return "KK";
    return NULL;
}

/* Runs the steps of a handshake case; `*hs` is freed by the caller. */
static int run_steps(json_t *steps, p11n_handshake *hs, const char *protocol, why_t *why)
{
    uint8_t out[256];
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) {
        bytes_t data;
        if (json_object_get(s, "write") != NULL) {
            size_t outlen = 0;
            if (get_hex(s, "write", &data) != 0)
                return failf(why, "step %zu: bad hex", i);
            int rc = p11n_handshake_write(hs, out, sizeof(out), &outlen);
            int same = rc == P11N_OK && outlen == data.len && memcmp(out, data.p, outlen) == 0;
            bytes_free(&data);
            if (rc != P11N_OK)
                return failf(why, "step %zu: write: %s", i, p11n_strerror(rc));
            if (!same)
                return failf(why, "step %zu: written act differs", i);
        } else if (json_object_get(s, "read") != NULL) {
            if (get_hex(s, "read", &data) != 0)
                return failf(why, "step %zu: bad hex", i);
            int rc = p11n_handshake_read(hs, data.p, data.len);
            bytes_free(&data);
            const char *label = json_string_value(json_object_get(json_array_get(steps, i + 1),
                "error"));
            if (label != NULL) {
                int want = map_error(label);
                if (want == 0)
                    return failf(why, "step %zu: unknown error label '%s'", i + 1, label);
                if (rc != want)
                    return failf(why, "step %zu: read gave '%s', want '%s' (%s)", i,
                        p11n_strerror(rc), p11n_strerror(want), label);
                return PASS;
            }
            if (rc != P11N_OK)
                return failf(why, "step %zu: read: %s", i, p11n_strerror(rc));
        } else if (json_object_get(s, "keys") != NULL) {
            p11n_transport *t = NULL;
            if (!p11n_handshake_done(hs))
                return failf(why, "step %zu: handshake not done", i);
            int rc = p11n_handshake_finish(hs, &t);
            if (rc != P11N_OK)
                return failf(why, "step %zu: finish: %s", i, p11n_strerror(rc));
            int result = check_keys(t, protocol, json_object_get(s, "keys"), why);
            p11n_transport_free(t);
            if (result != PASS)
                return result;
        } else {
            return failf(why, "step %zu: unknown step", i);
        }
    }
    return PASS;
}

static int run_handshake_case(json_t *c, const char *protocol, const bytes_t *prologue,
    why_t *why)
{
    const char *pattern = wire_pattern(protocol);
    const char *role = json_string_value(json_object_get(c, "role"));
    if (pattern == NULL)
        return SKIP;
    int initiator = role != NULL && strcmp(role, "initiator") == 0;
    if (role == NULL || (!initiator && strcmp(role, "responder") != 0))
        return failf(why, "unknown role");

    bytes_t ls_priv, ls_pub, rs_pub, e_priv;
    p11n_key *key = NULL;
    p11n_handshake *hs = NULL;
    int result = PASS;
    int bad = get_hex(c, "ls_priv", &ls_priv) != 0;
    bad |= get_hex(c, "ls_pub", &ls_pub) != 0;
    bad |= get_hex(c, "rs_pub", &rs_pub) != 0;
    bad |= get_hex(c, "e_priv", &e_priv) != 0;
    if (bad || !ls_priv.present || e_priv.len != 32 ||
        (rs_pub.present && rs_pub.len != P11N_PUBKEY_LEN)) {
        result = failf(why, "malformed case");
        goto out;
    }
    int rc = p11n_key_from_private("secp256k1", ls_priv.p, ls_priv.len, &key);
    if (rc != P11N_OK) {
        result = failf(why, "ls_priv: %s", p11n_strerror(rc));
        goto out;
    }
    if (ls_pub.present) {
        uint8_t pub[P11N_PUBKEY_LEN];
        size_t publen;
        if (p11n_key_public(key, pub, sizeof(pub), &publen) != P11N_OK ||
            publen != ls_pub.len || memcmp(pub, ls_pub.p, publen) != 0) {
            result = failf(why, "ls_pub differs from the key of ls_priv");
            goto out;
        }
    }
    p11n_handshake_config cfg = { .size = sizeof(p11n_handshake_config),
        .pattern = pattern,
        .prologue = prologue->p,
        .prologue_len = prologue->len,
        .local = key,
        .remote = rs_pub.present ? (const uint8_t (*)[P11N_PUBKEY_LEN])rs_pub.p : NULL,
        .nremote = rs_pub.present ? 1 : 0,
        .test_ephemeral = e_priv.p,
    };
    rc = initiator ? p11n_handshake_initiate(&cfg, &hs) : p11n_handshake_respond(&cfg, &hs);
    if (rc != P11N_OK) {
        result = rc == P11N_ERR_UNSUPPORTED ? SKIP : failf(why, "%s", p11n_strerror(rc));
        goto out;
    }
    result = run_steps(json_object_get(c, "steps"), hs, protocol, why);
out:
    p11n_handshake_free(hs);
    p11n_key_free(key);
    bytes_free(&ls_priv);
    bytes_free(&ls_pub);
    bytes_free(&rs_pub);
    bytes_free(&e_priv);
    return result;
}

static void run_bolt8(json_t *root, tally_t *t)
{
    const char *protocol = json_string_value(json_object_get(root, "protocol"));
    const char *ptext = json_string_value(json_object_get(root, "prologue"));
    bytes_t prologue = { (uint8_t *)(ptext != NULL ? ptext : ""), ptext ? strlen(ptext) : 0, 1 };
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        char label[64];
        why_t why = { "" };
        if (name == NULL) {
            snprintf(label, sizeof(label), "case %zu", i);
            name = label;
        }
        int result;
        if (protocol == NULL)
            result = failf(&why, "no protocol");
        else if (json_object_get(c, "outputs") != NULL)
            result = run_transport_case(c, protocol, &why);
        else
            result = run_handshake_case(c, protocol, &prologue, &why);
        count(t, result, name, NULL, &why);
    }
}

/* ------------------------------------------------------------------------ */

static void run_file(const char *path, tally_t *t)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    json_t *vectors = root != NULL ? json_object_get(root, "vectors") : NULL;
    if (root == NULL) {
        if (jerr.line > 0)
            cli_error("vectors: %s: line %d: %s", path, jerr.line, jerr.text);
        else
            cli_error("vectors: %s: %s", path, jerr.text);
        t->failed++;
    } else if (json_is_array(vectors)) {
        run_snow(vectors, t);
    } else if (json_is_array(json_object_get(root, "cases"))) {
        run_bolt8(root, t);
    } else {
        cli_error("vectors: %s: neither a {\"vectors\": [...]} nor a BOLT #8 case file",
            path);
        t->failed++;
    }
    json_decref(root);
}

int cmd_vectors(int argc, char **argv)
{
    static const struct cli_opt none[] = { { NULL, 0, 0 } };
    struct cli_parser p;
    cli_parser_init(&p, "vectors", argc, argv, none);
    tally_t t = { 0, 0, 0 };
    const char *path;
    int id, files = 0;
    /* Options are checked before any file runs. */
    while ((id = cli_next(&p, &path)) == CLI_ARG)
        files++;
    if (id == CLI_HELP) {
        printf("usage: p11noise vectors FILE...\n"
               "Runs Noise (cacophony/snow JSON) and BOLT #8 vector files through the\n"
               "library; the last line is \"N passed, N failed, N skipped\". Exits 1 if\n"
               "any vector failed.\n");
        return 0;
    }
    if (id == CLI_BAD)
        return 2;
    if (files == 0) {
        cli_error("usage: p11noise vectors FILE...");
        return 2;
    }
    cli_parser_init(&p, "vectors", argc, argv, none);
    while (cli_next(&p, &path) == CLI_ARG)
        run_file(path, &t);
    printf("%u passed, %u failed, %u skipped\n", t.passed, t.failed, t.skipped);
    return t.failed > 0 ? 1 : 0;
}
