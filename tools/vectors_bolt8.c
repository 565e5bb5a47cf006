/*
 * The BOLT #8 vector runner (tools/vectors.h): `p11noise vectors` runs it
 * with software keys, tests/test_handshake and tests/test_pkcs11 with a
 * software and a token key. It lives with the tool because it may use only
 * the public API; the tests compile it in, so both run the same checks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vectors.h"

/* Large enough for any act of the wire patterns (XK act 3 is 66 bytes). */
#define ACT_CAP 256
/* Messages sealed each way in the key check: one past the first rotation
 * (every 1000 nonces, two nonces a message), which needs the right ck. */
#define KEY_CHECK_MESSAGES 501

int vec_bolt8_error(const char *label)
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

/* Copies a fixed-size hex field of `c` into `out`; 1 if it was there. */
static int fixed_field(json_t *c, const char *key, uint8_t *out, size_t len)
{
    vec_bytes b;
    int ok = vec_get_hex(c, key, &b) == 0 && b.present && b.len == len;
    if (ok)
        memcpy(out, b.p, len);
    vec_bytes_free(&b);
    return ok;
}

int vec_bolt8_file_init(vec_bolt8_file *f, json_t *root, vec_why *why)
{
    memset(f, 0, sizeof(*f));
    f->protocol = json_string_value(json_object_get(root, "protocol"));
    const char *ptext = json_string_value(json_object_get(root, "prologue"));
    f->prologue = (const uint8_t *)(ptext != NULL ? ptext : "");
    f->prologue_len = ptext != NULL ? strlen(ptext) : 0;
    if (f->protocol == NULL)
        return vec_failf(why, "no protocol");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        const char *role = json_string_value(json_object_get(c, "role"));
        if (!f->has_ck)
            f->has_ck = fixed_field(c, "ck", f->ck, sizeof(f->ck));
        if (!f->has_initiator_pub && role != NULL && strcmp(role, "initiator") == 0)
            f->has_initiator_pub = fixed_field(c, "ls_pub", f->initiator_pub,
                P11N_PUBKEY_LEN);
    }
    return VEC_PASS;
}

/* Seals KEY_CHECK_MESSAGES from `from` and opens them at `to`; when
 * `same` is given its frames must equal those of `from`. 1 if all did. */
static int frames_agree(p11n_transport *from, p11n_transport *same, p11n_transport *to,
    unsigned messages)
{
    static const uint8_t probe[] = "key check";
    uint8_t a[64], b[64];
    for (unsigned i = 0; i < messages; i++) {
        size_t alen = 0, blen = 0, used = 0, mlen = 0;
        const uint8_t *m = NULL;
        if (p11n_transport_seal(from, probe, sizeof(probe), a, sizeof(a), &alen) != P11N_OK)
            return 0;
        if (same != NULL &&
            (p11n_transport_seal(same, probe, sizeof(probe), b, sizeof(b), &blen) != P11N_OK ||
                alen != blen || memcmp(a, b, alen) != 0))
            return 0;
        if (p11n_transport_feed(to, a, alen, &used, &m, &mlen) != 1 || used != alen ||
            mlen != sizeof(probe) || memcmp(m, probe, mlen) != 0)
            return 0;
    }
    return 1;
}

/* Compares a finished transport's keys with sk/rk through behaviour: its
 * frames equal those of a reference transport with send key sk and open at
 * the mirror, and it opens the mirror's frames. With the file's ck this
 * goes past a rotation each way; without it only the first frame counts
 * (the ck matters from the first rotation on). */
static int check_keys(p11n_transport *t, const vec_bolt8_file *f, json_t *keys, vec_why *why)
{
    static const uint8_t zero_ck[32];
    const uint8_t *ck = f->has_ck ? f->ck : zero_ck;
    unsigned messages = f->has_ck ? KEY_CHECK_MESSAGES : 1;
    uint8_t sk[32], rk[32];
    p11n_transport *same = NULL, *mirror = NULL, *mirror_peer = NULL;
    int result = VEC_PASS;
    if (!fixed_field(keys, "sk", sk, sizeof(sk)) || !fixed_field(keys, "rk", rk, sizeof(rk)))
        return vec_failf(why, "keys: bad sk/rk");
    if (p11n_transport_new(f->protocol, ck, sk, rk, &same) != P11N_OK ||
        p11n_transport_new(f->protocol, ck, rk, sk, &mirror) != P11N_OK ||
        p11n_transport_new(f->protocol, ck, rk, sk, &mirror_peer) != P11N_OK)
        result = vec_failf(why, "keys: reference transport failed");
    else if (!frames_agree(t, same, mirror, messages))
        result = vec_failf(why, "keys: sk (or the ck past a rotation) differs");
    else if (!frames_agree(mirror_peer, NULL, t, messages))
        result = vec_failf(why, "keys: rk (or the ck past a rotation) differs");
    p11n_transport_free(same);
    p11n_transport_free(mirror);
    p11n_transport_free(mirror_peer);
    return result;
}

/* "transport-message test": the frames of chosen message indexes when one
 * message is sealed over and over. */
static int transport_outputs(p11n_transport *t, json_t *outputs, const vec_bytes *pt,
    vec_why *why)
{
    unsigned long last = 0;
    const char *key;
    json_t *val;
    json_object_foreach(outputs, key, val) {
        char *end;
        unsigned long n = strtoul(key, &end, 10);
        if (*end != '\0' || n > 1000000)
            return vec_failf(why, "bad output index '%s'", key);
        if (n > last)
            last = n;
    }
    uint8_t *frame = malloc(P11N_MAX_FRAME);
    int result = frame != NULL ? VEC_PASS : vec_failf(why, "out of memory");
    for (unsigned long i = 0; i <= last && result == VEC_PASS; i++) {
        size_t flen;
        int rc = p11n_transport_seal(t, pt->p, pt->len, frame, P11N_MAX_FRAME, &flen);
        if (rc != P11N_OK) {
            result = vec_failf(why, "message %lu: %s", i, p11n_strerror(rc));
            break;
        }
        char idx[24];
        snprintf(idx, sizeof(idx), "%lu", i);
        vec_bytes want;
        if (json_object_get(outputs, idx) == NULL)
            continue;
        if (vec_get_hex(outputs, idx, &want) != 0)
            result = vec_failf(why, "message %lu: bad hex", i);
        else if (want.len != flen || memcmp(want.p, frame, flen) != 0)
            result = vec_failf(why, "message %lu: frame differs", i);
        vec_bytes_free(&want);
    }
    free(frame);
    return result;
}

static int run_transport_case(const vec_bolt8_file *f, json_t *c, vec_why *why)
{
    uint8_t ck[32], sk[32], rk[32];
    vec_bytes pt;
    p11n_transport *t = NULL;
    json_t *outputs = json_object_get(c, "outputs");
    if (!fixed_field(c, "ck", ck, 32) || !fixed_field(c, "sk", sk, 32) ||
        !fixed_field(c, "rk", rk, 32) || !json_is_object(outputs) ||
        vec_get_hex(c, "plaintext_hex", &pt) != 0)
        return vec_failf(why, "malformed case");
    int rc = p11n_transport_new(f->protocol, ck, sk, rk, &t);
    int result = rc == P11N_ERR_UNSUPPORTED ? VEC_SKIP
        : rc != P11N_OK ? vec_failf(why, "transport: %s", p11n_strerror(rc))
        : transport_outputs(t, outputs, &pt, why);
    p11n_transport_free(t);
    vec_bytes_free(&pt);
    return result;
}

/* ---- handshake cases ---- */

/* One handshake case in progress. */
typedef struct {
    const vec_bolt8_file *f;
    p11n_handshake *hs;
    const uint8_t *peer;   /* the key the peer must have shown, or NULL */
    int last;              /* what the last read returned */
    int finished;          /* an error or keys step has been checked */
} run_t;

/* After a failure the handshake refuses everything. */
static int check_dead(run_t *r, size_t i, vec_why *why)
{
    uint8_t buf[ACT_CAP] = { 0 };
    size_t outlen = 0;
    p11n_transport *t = NULL;
    if (p11n_handshake_want(r->hs) != 0 ||
        p11n_handshake_write(r->hs, buf, sizeof(buf), &outlen) != P11N_ERR_STATE ||
        p11n_handshake_read(r->hs, buf, 50) != P11N_ERR_STATE ||
        p11n_handshake_finish(r->hs, &t) != P11N_ERR_STATE || t != NULL ||
        p11n_handshake_done(r->hs))
        return vec_failf(why, "step %zu: the handshake is usable after its failure", i);
    return VEC_PASS;
}

static int step_error(run_t *r, const char *label, size_t i, vec_why *why)
{
    int want = vec_bolt8_error(label);
    if (want == 0)
        return vec_failf(why, "step %zu: unknown error label '%s'", i, label);
    if (r->last != want)
        return vec_failf(why, "step %zu: read gave '%s', want '%s' (%s)", i,
            p11n_strerror(r->last), p11n_strerror(want), label);
    r->finished = 1;
    return check_dead(r, i, why);
}

static int step_keys(run_t *r, json_t *keys, size_t i, vec_why *why)
{
    uint8_t peer[P11N_PUBKEY_LEN];
    p11n_transport *t = NULL, *again = NULL;
    if (r->last != P11N_OK || !p11n_handshake_done(r->hs))
        return vec_failf(why, "step %zu: handshake not done", i);
    if (p11n_handshake_remote(r->hs, peer) != P11N_OK ||
        (r->peer != NULL && memcmp(peer, r->peer, P11N_PUBKEY_LEN) != 0))
        return vec_failf(why, "step %zu: the peer's static key differs", i);
    int rc = p11n_handshake_finish(r->hs, &t);
    if (rc != P11N_OK)
        return vec_failf(why, "step %zu: finish: %s", i, p11n_strerror(rc));
    int result = check_keys(t, r->f, keys, why);
    p11n_transport_free(t);
    if (result == VEC_PASS &&
        (p11n_handshake_finish(r->hs, &again) != P11N_ERR_STATE || again != NULL))
        result = vec_failf(why, "step %zu: a second finish did not fail", i);
    r->finished = 1;
    return result;
}

static int step_write(run_t *r, json_t *s, size_t i, vec_why *why)
{
    uint8_t out[ACT_CAP];
    size_t outlen = 0;
    vec_bytes data;
    if (vec_get_hex(s, "write", &data) != 0)
        return vec_failf(why, "step %zu: bad hex", i);
    size_t want = p11n_handshake_want(r->hs);
    int rc = p11n_handshake_write(r->hs, out, sizeof(out), &outlen);
    int same = rc == P11N_OK && outlen == data.len && memcmp(out, data.p, outlen) == 0;
    vec_bytes_free(&data);
    if (want != 0)
        return vec_failf(why, "step %zu: wants %zu bytes before writing", i, want);
    if (rc != P11N_OK)
        return vec_failf(why, "step %zu: write: %s", i, p11n_strerror(rc));
    return same ? VEC_PASS : vec_failf(why, "step %zu: written act differs", i);
}

static int step_read(run_t *r, json_t *s, size_t i, vec_why *why)
{
    vec_bytes data;
    if (vec_get_hex(s, "read", &data) != 0)
        return vec_failf(why, "step %zu: bad hex", i);
    if (p11n_handshake_want(r->hs) == 0) {
        vec_bytes_free(&data);
        return vec_failf(why, "step %zu: wants nothing before reading", i);
    }
    r->last = p11n_handshake_read(r->hs, data.p, data.len);
    vec_bytes_free(&data);
    /* A failure is checked by the error step that must follow. */
    return VEC_PASS;
}

/* Runs the steps of a handshake case; every read must succeed unless an
 * error step follows it, and the case must end in an error or keys step. */
static int run_steps(run_t *r, json_t *steps, vec_why *why)
{
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s) {
        const char *label = json_string_value(json_object_get(s, "error"));
        json_t *keys = json_object_get(s, "keys");
        int result;
        if (r->last != P11N_OK && label == NULL)
            return vec_failf(why, "step %zu: read: %s", i - 1, p11n_strerror(r->last));
        if (json_object_get(s, "write") != NULL)
            result = step_write(r, s, i, why);
        else if (json_object_get(s, "read") != NULL)
            result = step_read(r, s, i, why);
        else if (label != NULL)
            result = step_error(r, label, i, why);
        else if (keys != NULL)
            result = step_keys(r, keys, i, why);
        else
            result = vec_failf(why, "step %zu: unknown step", i);
        if (result != VEC_PASS || r->finished)
            return result;
    }
    if (r->last != P11N_OK)
        return vec_failf(why, "read: %s", p11n_strerror(r->last));
    return vec_failf(why, "the case ends before an error or keys step");
}

/* The p11noise pattern of a protocol name the wire handshake speaks, or
 * NULL (then the case is skipped). */
static const char *wire_pattern(const char *protocol)
{
    static const struct {
        const char *protocol, *pattern;
    } wire[] = {
        { "Noise_XK_secp256k1_ChaChaPoly_SHA256", "XK" },
        { "Noise_KK_secp256k1_ChaChaPoly_SHA256", "KK" },
    };
    for (size_t i = 0; i < sizeof(wire) / sizeof(wire[0]); i++)
        if (strcmp(protocol, wire[i].protocol) == 0)
            return wire[i].pattern;
    return NULL;
}

/* The local key: `given`, or one made from ls_priv into `*made`; its public
 * key must be the case's ls_pub when the case has one. */
static int local_key(json_t *c, p11n_key *given, p11n_key **made, vec_why *why)
{
    vec_bytes priv, pub;
    uint8_t have[P11N_PUBKEY_LEN];
    size_t havelen = 0;
    int rc = P11N_OK;
    if (given == NULL) {
        if (vec_get_hex(c, "ls_priv", &priv) != 0 || !priv.present)
            return vec_failf(why, "malformed ls_priv");
        rc = p11n_key_from_private("secp256k1", priv.p, priv.len, made);
        vec_bytes_free(&priv);
        if (rc != P11N_OK)
            return vec_failf(why, "ls_priv: %s", p11n_strerror(rc));
        given = *made;
    }
    if (vec_get_hex(c, "ls_pub", &pub) != 0)
        return vec_failf(why, "malformed ls_pub");
    int same = !pub.present ||
        (p11n_key_public(given, have, sizeof(have), &havelen) == P11N_OK &&
            havelen == pub.len && memcmp(have, pub.p, havelen) == 0);
    vec_bytes_free(&pub);
    return same ? VEC_PASS : vec_failf(why, "ls_pub differs from the local key");
}

static int run_handshake_case(const vec_bolt8_file *f, json_t *c, p11n_key *local,
    vec_why *why)
{
    const char *pattern = wire_pattern(f->protocol);
    const char *role = json_string_value(json_object_get(c, "role"));
    if (pattern == NULL)
        return VEC_SKIP;
    int initiator = role != NULL && strcmp(role, "initiator") == 0;
    if (role == NULL || (!initiator && strcmp(role, "responder") != 0))
        return vec_failf(why, "unknown role");
    uint8_t e_priv[32], rs[P11N_PUBKEY_LEN];
    int has_rs = fixed_field(c, "rs_pub", rs, sizeof(rs));
    if (!fixed_field(c, "e_priv", e_priv, sizeof(e_priv)) ||
        (json_object_get(c, "rs_pub") != NULL && !has_rs))
        return vec_failf(why, "malformed case");
    p11n_key *made = NULL;
    run_t r = { .f = f, .last = P11N_OK };
    int result = local_key(c, local, &made, why);
    p11n_handshake_config cfg = { .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .prologue = f->prologue, .prologue_len = f->prologue_len,
        .local = local != NULL ? local : made,
        .remote = has_rs ? (const uint8_t (*)[P11N_PUBKEY_LEN])rs : NULL,
        .nremote = has_rs ? 1 : 0, .test_ephemeral = e_priv,
    };
    int rc = result != VEC_PASS ? P11N_OK
        : initiator ? p11n_handshake_initiate(&cfg, &r.hs) : p11n_handshake_respond(&cfg, &r.hs);
    /* The configuration was copied: wiping it must not change the acts. */
    memset(e_priv, 0, sizeof(e_priv));
    if (rc != P11N_OK)
        result = rc == P11N_ERR_UNSUPPORTED ? VEC_SKIP : vec_failf(why, "%s", p11n_strerror(rc));
    if (result == VEC_PASS) {
        r.peer = initiator ? (has_rs ? rs : NULL)
            : f->has_initiator_pub ? f->initiator_pub : NULL;
        result = run_steps(&r, json_object_get(c, "steps"), why);
    }
    p11n_handshake_free(r.hs);
    p11n_key_free(made);
    return result;
}

int vec_bolt8_run_case(const vec_bolt8_file *f, json_t *c, p11n_key *local, vec_why *why)
{
    if (json_object_get(c, "outputs") != NULL)
        return run_transport_case(f, c, why);
    return run_handshake_case(f, c, local, why);
}
