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
 *    through p11n_handshake_* (or p11n_transport_* for the transport case),
 *    by the runner in vectors_bolt8.c that the tests share.
 *
 * Protocols the library does not support are skipped, never passed. Each
 * failure is one line naming the case; the last line is
 * "N passed, N failed, N skipped"; the exit status is 1 if anything failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "p11noise.h"
#include "cli.h"
#include "vectors.h"

typedef struct {
    unsigned passed, failed, skipped;
} tally_t;

static void count(tally_t *t, int result, const char *name, const char *role, const vec_why *why)
{
    if (result == VEC_PASS) {
        t->passed++;
    } else if (result == VEC_SKIP) {
        t->skipped++;
    } else {
        t->failed++;
        printf("FAIL %s%s%s: %s\n", name, role ? " as " : "", role ? role : "", why->text);
    }
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
static int configure(json_t *v, const char *pre, const char *dh, role_t *r, vec_why *why)
{
    char key[48];
    vec_bytes b;
    int rc = P11N_OK;
    static const char *const fields[] = { "prologue", "ephemeral", "static", "remote_static" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]) && rc == P11N_OK; i++) {
        snprintf(key, sizeof(key), "%s_%s", pre, fields[i]);
        if (vec_get_hex(v, key, &b) != 0)
            return vec_failf(why, "bad hex in %s", key);
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
        vec_bytes_free(&b);
        if (rc != P11N_OK)
            return rc == P11N_ERR_UNSUPPORTED ? VEC_SKIP
                : vec_failf(why, "setting %s: %s", key, p11n_strerror(rc));
    }
    snprintf(key, sizeof(key), "%s_psks", pre);
    size_t i;
    json_t *psk;
    json_array_foreach(json_object_get(v, key), i, psk) {
        if (vec_decode_hex(json_string_value(psk), &b) != 0)
            return vec_failf(why, "bad hex in %s", key);
        rc = p11n_noise_add_psk(r->hs, b.p, b.len);
        vec_bytes_free(&b);
        if (rc != P11N_OK)
            return vec_failf(why, "psk %zu: %s", i, p11n_strerror(rc));
    }
    /* older vector files carry a single PSK as a string */
    snprintf(key, sizeof(key), "%s_psk", pre);
    if (json_is_string(json_object_get(v, key))) {
        if (vec_get_hex(v, key, &b) != 0)
            return vec_failf(why, "bad hex in %s", key);
        rc = p11n_noise_add_psk(r->hs, b.p, b.len);
        vec_bytes_free(&b);
        if (rc != P11N_OK)
            return vec_failf(why, "psk: %s", p11n_strerror(rc));
    }
    rc = p11n_noise_start(r->hs);
    if (rc != P11N_OK)
        return vec_failf(why, "start: %s", p11n_strerror(rc));
    return VEC_PASS;
}

/* After the last handshake message: split and check the handshake hash. */
static int finish_handshake(json_t *v, role_t *r, int initiator, int *one_way, vec_why *why)
{
    uint8_t h[64];
    size_t hlen;
    vec_bytes want;
    int rc = p11n_noise_handshake_hash(r->hs, h, sizeof(h), &hlen);
    if (rc != P11N_OK)
        return vec_failf(why, "handshake hash: %s", p11n_strerror(rc));
    if (vec_get_hex(v, "handshake_hash", &want) != 0)
        return vec_failf(why, "bad hex in handshake_hash");
    int same = !want.present || (want.len == hlen && memcmp(want.p, h, hlen) == 0);
    vec_bytes_free(&want);
    if (!same)
        return vec_failf(why, "handshake hash differs");
    rc = p11n_noise_split(r->hs, &r->send, &r->recv);
    if (rc != P11N_OK)
        return vec_failf(why, "split: %s", p11n_strerror(rc));
    /* a one-way pattern leaves the direction back to the initiator out */
    *one_way = initiator ? r->recv == NULL : r->send == NULL;
    return VEC_PASS;
}

/* One message: write or encrypt it if we send it, else read or decrypt. */
static int step(role_t *r, int handshake, int sending, const vec_bytes *payload,
    const vec_bytes *ct, uint8_t *buf, size_t i, vec_why *why)
{
    size_t outlen = 0;
    int rc;
    if (sending) {
        rc = handshake
            ? p11n_noise_write_message(r->hs, payload->p, payload->len, buf, MSG_CAP, &outlen)
            : p11n_cipher_encrypt(r->send, NULL, 0, payload->p, payload->len, buf, MSG_CAP,
                  &outlen);
        if (rc != P11N_OK)
            return vec_failf(why, "message %zu: writing: %s", i, p11n_strerror(rc));
        if (outlen != ct->len || memcmp(buf, ct->p, outlen) != 0)
            return vec_failf(why, "message %zu: ciphertext differs", i);
    } else {
        rc = handshake
            ? p11n_noise_read_message(r->hs, ct->p, ct->len, buf, MSG_CAP, &outlen)
            : p11n_cipher_decrypt(r->recv, NULL, 0, ct->p, ct->len, buf, MSG_CAP, &outlen);
        if (rc != P11N_OK)
            return vec_failf(why, "message %zu: reading: %s", i, p11n_strerror(rc));
        if (outlen != payload->len || (outlen > 0 && memcmp(buf, payload->p, outlen) != 0))
            return vec_failf(why, "message %zu: payload differs", i);
    }
    return VEC_PASS;
}

static int run_snow_role(json_t *v, const char *name, int initiator, vec_why *why)
{
    char dh[32];
    role_t r = { 0 };
    int one_way = 0, done = 0;
    if (dh_of(name, dh, sizeof(dh)) != 0)
        return VEC_SKIP;
    int rc = p11n_noise_new(name, initiator, &r.hs);
    if (rc == P11N_ERR_UNSUPPORTED)
        return VEC_SKIP;
    if (rc != P11N_OK)
        return vec_failf(why, "%s", p11n_strerror(rc));
    uint8_t *buf = malloc(MSG_CAP);
    int result = buf != NULL ? configure(v, initiator ? "init" : "resp", dh, &r, why)
        : vec_failf(why, "out of memory");

    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(v, "messages"), i, m) {
        if (result != VEC_PASS)
            break;
        vec_bytes payload, ct;
        int bad = vec_get_hex(m, "payload", &payload) != 0;
        bad |= vec_get_hex(m, "ciphertext", &ct) != 0;
        int action = done ? 0 : p11n_noise_action(r.hs);
        if (bad || !ct.present) {
            result = vec_failf(why, "message %zu: bad hex", i);
        } else if (!done) {
            result = step(&r, 1, action == P11N_NOISE_WRITE, &payload, &ct, buf, i, why);
            if (result == VEC_PASS && p11n_noise_action(r.hs) == P11N_NOISE_SPLIT) {
                result = finish_handshake(v, &r, initiator, &one_way, why);
                done = 1;
            }
        } else {
            int initiator_sends = one_way || i % 2 == 0;
            result = step(&r, 0, initiator_sends == initiator, &payload, &ct, buf, i, why);
        }
        vec_bytes_free(&payload);
        vec_bytes_free(&ct);
    }
    if (result == VEC_PASS && !done)
        result = vec_failf(why, "the vector ends before the handshake does");
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
        vec_why why = { "" };
        char label[64];
        if (name == NULL) {
            snprintf(label, sizeof(label), "vector %zu", i);
            count(t, vec_failf(&why, "no protocol_name"), label, NULL, &why);
            continue;
        }
        /* Noise Pipes fallback and hybrid-forward-secrecy vectors need
         * protocol features outside the engine: counted, never passed. */
        if (json_is_true(json_object_get(v, "fallback")) ||
            json_object_get(v, "fallback_pattern") != NULL ||
            json_object_get(v, "hybrid") != NULL) {
            count(t, VEC_SKIP, name, NULL, &why);
            continue;
        }
        int ri = run_snow_role(v, name, 1, &why);
        if (ri == VEC_FAIL) {
            count(t, VEC_FAIL, name, "initiator", &why);
            continue;
        }
        int rr = run_snow_role(v, name, 0, &why);
        if (rr == VEC_FAIL) {
            count(t, VEC_FAIL, name, "responder", &why);
            continue;
        }
        count(t, ri == VEC_SKIP || rr == VEC_SKIP ? VEC_SKIP : VEC_PASS, name, NULL, &why);
    }
}

/* ------------------------------------------------------------------------
 * BOLT #8 vectors
 * ------------------------------------------------------------------------ */

static void run_bolt8(json_t *root, tally_t *t)
{
    vec_bolt8_file f;
    vec_why why = { "" };
    if (vec_bolt8_file_init(&f, root, &why) != VEC_PASS) {
        count(t, VEC_FAIL, "file", NULL, &why);
        return;
    }
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        char label[64];
        if (name == NULL) {
            snprintf(label, sizeof(label), "case %zu", i);
            name = label;
        }
        count(t, vec_bolt8_run_case(&f, c, NULL, &why), name, NULL, &why);
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
