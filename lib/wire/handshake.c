/*
 * The p11noise wire handshake: Noise KK or XK over secp256k1 with empty
 * payloads, each act framed as a version byte (0) and the Noise message,
 * ending in a BOLT #8 transport. XK with the prologue "lightning" is
 * BOLT #8 itself.
 *
 * Everything a step needs lives in the p11n_handshake object, so a step
 * that uses a slow token key can run on a worker thread.
 */
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "crypto.h"
#include "hsjob.h"
#include "key.h"
#include "noise.h"
#include "secure.h"
#include "transport.h"
#include "sized.h"
#include "wire.h"

#define WIRE_VERSION 0x00
#define VERSION_LEN 1

enum hs_state { HS_RUNNING, HS_DONE, HS_FINISHED, HS_FAILED };

/* The largest act of any pattern (wire.h). */
#define MAX_ACT_LEN P11N_MAX_ACT

enum op_kind { OP_NONE, OP_WRITE, OP_READ };

/* A step deferred for P11N_HS_ASYNC_TOKEN: the act to read (copied), or
 * the act written, and the step's result once it ran. */
struct p11n_handshake_op {
    p11n_handshake *hs;
    enum op_kind kind;
    int ran;
    int rc;
    size_t len;
    uint8_t act[MAX_ACT_LEN];
};

struct p11n_handshake {
    const p11n_wire *pattern;
    int initiator;
    enum hs_state state;
    p11n_noise *noise;          /* non-NULL while running or done */
    int picked;                 /* KK responder: a candidate matched act one */

    /* The copied configuration: a KK responder builds one engine per
     * candidate from it. */
    p11n_key *local;
    uint8_t *prologue;
    size_t prologue_len;
    uint8_t (*remote)[P11N_PUBKEY_LEN];
    size_t nremote;
    int has_ephemeral;
    uint8_t ephemeral[P11N_MAXPRIVLEN];

    /* The peer's static key once the engine has it (the initiator from
     * the start, the KK responder when a candidate verifies, the XK
     * responder from act three); reported only once authenticated. */
    int has_peer;
    uint8_t peer[P11N_PUBKEY_LEN];

    unsigned flags;             /* P11N_HS_* */
    struct p11n_handshake_op op;
    /* What the engines are given as the local key: KK's act one derives
     * es once for all candidates through it. */
    struct p11n_key_memo memo;
};

/* A started engine from the configuration, with `remote` (may be NULL) as
 * the peer's static key. */
static int engine_new(const p11n_handshake *hs, const uint8_t *remote, p11n_noise **out)
{
    p11n_noise *ns = NULL;
    int rc = p11n_noise_new(hs->pattern->protocol, hs->initiator, &ns);
    if (rc != P11N_OK)
        return rc;
    rc = p11n_noise_set_prologue(ns, hs->prologue, hs->prologue_len);
    if (rc == P11N_OK)
        rc = p11n_noise_set_local_static(ns, (p11n_key *)&hs->memo.base);
    if (rc == P11N_OK && remote != NULL)
        rc = p11n_noise_set_remote_static(ns, remote, P11N_PUBKEY_LEN);
    if (rc == P11N_OK && hs->has_ephemeral)
        rc = p11n_noise_set_ephemeral(ns, hs->ephemeral, p11n_dh_secp256k1.privlen);
    if (rc == P11N_OK)
        rc = p11n_noise_start(ns);
    if (rc != P11N_OK) {
        p11n_noise_free(ns);
        return rc;
    }
    *out = ns;
    return P11N_OK;
}

/* Fail closed: drop the engine (it wipes its secrets) and refuse all use. */
static int fail(p11n_handshake *hs, int rc)
{
    p11n_noise_free(hs->noise);
    hs->noise = NULL;
    hs->state = HS_FAILED;
    p11n_wipe(hs->ephemeral, sizeof(hs->ephemeral));
    return rc;
}

static int check_config(const p11n_handshake_config *cfg, const p11n_wire *p,
    int initiator)
{
    if (cfg->local == NULL)
        return P11N_ERR_MISSING_KEY;
    const char *dh = p11n_key_dh_name(cfg->local);
    if (dh == NULL || strcmp(dh, p11n_dh_secp256k1.name) != 0)
        return P11N_ERR_UNSUPPORTED;
    if (cfg->prologue == NULL && cfg->prologue_len > 0)
        return P11N_ERR_INVALID_ARG;
    if (cfg->remote == NULL && cfg->nremote > 0)
        return P11N_ERR_INVALID_ARG;
    if ((cfg->flags & ~P11N_HS_ASYNC_TOKEN) != 0)
        return P11N_ERR_INVALID_ARG;
    if (initiator || p->responder_chooses) {
        if (cfg->nremote == 0)
            return P11N_ERR_MISSING_KEY;
        if (initiator && cfg->nremote > 1)
            return P11N_ERR_INVALID_ARG;   /* an initiator talks to one peer */
    }
    /* Candidates are checked now, not when a peer happens to reach them. */
    for (size_t i = 0; i < cfg->nremote; i++)
        if (p11n_dh_secp256k1.check_pub(cfg->remote[i]) != P11N_OK)
            return P11N_ERR_BAD_PUBKEY;
    return P11N_OK;
}

static int handshake_new(const p11n_handshake_config *cfg, int initiator,
    p11n_handshake **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (cfg == NULL)
        return P11N_ERR_INVALID_ARG;
    const p11n_wire *pattern = p11n_wire_by_name(cfg->pattern);
    if (pattern == NULL)
        return P11N_ERR_UNSUPPORTED;
    int rc = check_config(cfg, pattern, initiator);
    if (rc != P11N_OK)
        return rc;

    p11n_handshake *hs = calloc(1, sizeof(*hs));
    if (hs == NULL)
        return P11N_ERR_NOMEM;
    hs->pattern = pattern;
    hs->initiator = initiator;
    hs->local = cfg->local;
    p11n_key_memo_init(&hs->memo, cfg->local);
    hs->flags = cfg->flags;
    hs->op.hs = hs;

    const uint8_t *prologue = cfg->prologue;
    size_t prologue_len = cfg->prologue_len;
    if (prologue == NULL) {
        prologue = (const uint8_t *)pattern->default_prologue;
        prologue_len = strlen(pattern->default_prologue);
    }
    hs->prologue = malloc(prologue_len + 1);   /* + 1: never malloc(0) */
    hs->remote = cfg->nremote > 0 ? calloc(cfg->nremote, sizeof(*hs->remote)) : NULL;
    if (hs->prologue == NULL || (cfg->nremote > 0 && hs->remote == NULL)) {
        p11n_handshake_free(hs);
        return P11N_ERR_NOMEM;
    }
    if (prologue_len > 0)
        memcpy(hs->prologue, prologue, prologue_len);
    hs->prologue_len = prologue_len;
    if (cfg->nremote > 0)
        memcpy(hs->remote, cfg->remote, cfg->nremote * sizeof(*hs->remote));
    hs->nremote = cfg->nremote;
    if (cfg->test_ephemeral != NULL) {
        memcpy(hs->ephemeral, cfg->test_ephemeral, p11n_dh_secp256k1.privlen);
        hs->has_ephemeral = 1;
    }

    /* The initiator and the KK responder start with their (first) peer key;
     * the XK responder learns it in act three. */
    const uint8_t *remote = (initiator || pattern->responder_chooses)
        ? hs->remote[0] : NULL;
    rc = engine_new(hs, remote, &hs->noise);
    if (rc != P11N_OK) {
        p11n_handshake_free(hs);
        return rc;
    }
    if (initiator) {
        memcpy(hs->peer, hs->remote[0], P11N_PUBKEY_LEN);
        hs->has_peer = 1;
    }
    hs->state = HS_RUNNING;
    *out = hs;
    return P11N_OK;
}

/* The caller's config as this library knows it (its size may differ). */
static int handshake_start(const p11n_handshake_config *cfg, int initiator,
    p11n_handshake **out)
{
    if (out != NULL)
        *out = NULL;
    p11n_handshake_config c;
    if (cfg == NULL || out == NULL || p11n_options_copy(&c, sizeof(c), cfg) != P11N_OK)
        return P11N_ERR_INVALID_ARG;
    return handshake_new(&c, initiator, out);
}

int p11n_handshake_initiate(const p11n_handshake_config *cfg, p11n_handshake **out)
{
    return handshake_start(cfg, 1, out);
}

int p11n_handshake_respond(const p11n_handshake_config *cfg, p11n_handshake **out)
{
    return handshake_start(cfg, 0, out);
}

/* Size on the wire of the engine's next message. */
static size_t act_len(const p11n_handshake *hs)
{
    return VERSION_LEN + p11n_noise_message_len(hs->noise, 0);
}

size_t p11n_handshake_want(const p11n_handshake *hs)
{
    if (hs == NULL || hs->state != HS_RUNNING || hs->op.kind != OP_NONE
        || p11n_noise_action(hs->noise) != P11N_NOISE_READ)
        return 0;
    return act_len(hs);
}

/* After a message: note completion. */
static void after_message(p11n_handshake *hs)
{
    if (p11n_noise_action(hs->noise) == P11N_NOISE_SPLIT) {
        hs->state = HS_DONE;
        p11n_wipe(hs->ephemeral, sizeof(hs->ephemeral));
    }
}

/* Whether this step is deferred: asked for, and it needs the token. */
static int defer_step(const p11n_handshake *hs)
{
    return (hs->flags & P11N_HS_ASYNC_TOKEN) && p11n_handshake_token_step(hs);
}

static int pend(p11n_handshake *hs, enum op_kind kind, const uint8_t *act, size_t len)
{
    hs->op.kind = kind;
    hs->op.ran = 0;
    hs->op.rc = P11N_ERR_PENDING;
    hs->op.len = len;
    if (act != NULL)
        memcpy(hs->op.act, act, len);
    return P11N_ERR_PENDING;
}

/* The act itself, into out (cap >= act_len checked). */
static int write_act(p11n_handshake *hs, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t need = act_len(hs), n = 0;
    int rc = p11n_noise_write_message(hs->noise, NULL, 0, out + VERSION_LEN,
        cap - VERSION_LEN, &n);
    if (rc != P11N_OK)
        return fail(hs, rc);
    if (n + VERSION_LEN != need)
        return fail(hs, P11N_ERR_CRYPTO);   /* the engine broke its own size */
    out[0] = WIRE_VERSION;
    *outlen = need;
    after_message(hs);
    return P11N_OK;
}

int p11n_handshake_write(p11n_handshake *hs, uint8_t *out, size_t cap, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (hs == NULL || out == NULL || outlen == NULL)
        return P11N_ERR_INVALID_ARG;
    if (hs->op.kind != OP_NONE)
        return P11N_ERR_PENDING;
    if (hs->state != HS_RUNNING || p11n_noise_action(hs->noise) != P11N_NOISE_WRITE)
        return P11N_ERR_STATE;
    if (cap < act_len(hs))
        return P11N_ERR_BUFFER_TOO_SMALL;
    if (defer_step(hs))
        return pend(hs, OP_WRITE, NULL, 0);
    return write_act(hs, out, cap, outlen);
}

/* Read a Noise message with an empty payload into `ns`. */
static int read_into(p11n_noise *ns, const uint8_t *msg, size_t len)
{
    uint8_t payload[1];
    size_t plen = 0;
    int rc = p11n_noise_read_message(ns, msg, len, payload, sizeof(payload), &plen);
    if (rc == P11N_OK && plen != 0)
        rc = P11N_ERR_LONG_MESSAGE;   /* excluded by the fixed size; kept as a guard */
    return rc;
}

/* KK responder, act one: the act verifies only under the right initiator
 * key, so try each candidate on a fresh engine until one does (es comes
 * from the token once, through the memo; ss once per candidate). */
static int try_candidates(p11n_handshake *hs, const uint8_t *msg, size_t len);

static int read_pick_initiator(p11n_handshake *hs, const uint8_t *msg, size_t len)
{
    int rc = try_candidates(hs, msg, len);
    p11n_key_memo_forget(&hs->memo);
    return rc;
}

static int try_candidates(p11n_handshake *hs, const uint8_t *msg, size_t len)
{
    for (size_t i = 0; i < hs->nremote; i++) {
        p11n_noise *ns = hs->noise;   /* the first candidate's engine exists */
        hs->noise = NULL;
        if (ns == NULL) {
            int rc = engine_new(hs, hs->remote[i], &ns);
            if (rc != P11N_OK)
                return rc;
        }
        int rc = read_into(ns, msg, len);
        if (rc == P11N_OK) {
            hs->noise = ns;
            memcpy(hs->peer, hs->remote[i], P11N_PUBKEY_LEN);
            hs->has_peer = 1;
            hs->picked = 1;
            return P11N_OK;
        }
        p11n_noise_free(ns);
        /* Anything but a tag failure (a bad point, a token error) would be
         * the same for every candidate. */
        if (rc != P11N_ERR_BAD_TAG)
            return rc;
    }
    return P11N_ERR_UNKNOWN_PEER;
}

static int peer_allowed(const p11n_handshake *hs, const uint8_t pub[P11N_PUBKEY_LEN])
{
    int found = 0;
    for (size_t i = 0; i < hs->nremote; i++)
        found |= p11n_ct_eq(hs->remote[i], pub, P11N_PUBKEY_LEN);
    return found;
}

/* The act's Noise message (framing checked), then the peer's key. */
static int read_act(p11n_handshake *hs, const uint8_t *msg, size_t msglen)
{
    int rc;
    if (!hs->initiator && hs->pattern->responder_chooses && !hs->picked)
        rc = read_pick_initiator(hs, msg, msglen);
    else
        rc = read_into(hs->noise, msg, msglen);
    if (rc != P11N_OK)
        return fail(hs, rc);

    if (!hs->has_peer && p11n_noise_action(hs->noise) == P11N_NOISE_SPLIT) {
        /* XK responder: the initiator's key arrived in this act. */
        size_t n = 0;
        rc = p11n_noise_remote_static(hs->noise, hs->peer, sizeof(hs->peer), &n);
        if (rc != P11N_OK || n != P11N_PUBKEY_LEN)
            return fail(hs, rc != P11N_OK ? rc : P11N_ERR_CRYPTO);
        hs->has_peer = 1;
        if (hs->nremote > 0 && !peer_allowed(hs, hs->peer))
            return fail(hs, P11N_ERR_UNKNOWN_PEER);
    }
    after_message(hs);
    return P11N_OK;
}

int p11n_handshake_read(p11n_handshake *hs, const uint8_t *in, size_t len)
{
    if (hs == NULL || (in == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    if (hs->op.kind != OP_NONE)
        return P11N_ERR_PENDING;
    if (hs->state != HS_RUNNING || p11n_noise_action(hs->noise) != P11N_NOISE_READ)
        return P11N_ERR_STATE;

    /* Framing is checked at once, deferred or not: no token work. */
    size_t need = act_len(hs);
    if (len < need)
        return fail(hs, P11N_ERR_SHORT_MESSAGE);
    if (len > need)
        return fail(hs, P11N_ERR_LONG_MESSAGE);
    if (in[0] != WIRE_VERSION)
        return fail(hs, P11N_ERR_BAD_VERSION);
    if (defer_step(hs) && len <= MAX_ACT_LEN)
        return pend(hs, OP_READ, in, len);
    return read_act(hs, in + VERSION_LEN, len - VERSION_LEN);
}

p11n_handshake_op *p11n_handshake_pending(p11n_handshake *hs)
{
    return hs != NULL && hs->op.kind != OP_NONE && !hs->op.ran ? &hs->op : NULL;
}

int p11n_handshake_pending_run(p11n_handshake_op *op)
{
    if (op == NULL)
        return P11N_ERR_INVALID_ARG;
    if (op->kind == OP_NONE || op->ran)
        return P11N_ERR_STATE;
    p11n_handshake *hs = op->hs;
    if (op->kind == OP_WRITE)
        op->rc = write_act(hs, op->act, sizeof(op->act), &op->len);
    else
        op->rc = read_act(hs, op->act + VERSION_LEN, op->len - VERSION_LEN);
    op->ran = 1;
    return op->rc;
}

/* The KK responder's act one: the step that tries every candidate. */
static int op_picks(const p11n_handshake_op *op)
{
    const p11n_handshake *hs = op->hs;
    return op->kind == OP_READ && !hs->initiator && hs->pattern->responder_chooses
        && !hs->picked;
}

unsigned p11n_handshake_op_cost(const p11n_handshake_op *op)
{
    if (op->kind != OP_WRITE)
        return op_picks(op) ? 1 + (unsigned)op->hs->nremote : 1;
    const uint8_t *peers[4];
    size_t n = p11n_noise_next_static_peers(op->hs->noise, peers, 4);
    unsigned cost = 0;
    for (size_t i = 0; i < n; i++)
        cost += p11n_key_dh_cost(op->hs->local, peers[i]);
    return cost > 0 ? cost : 2;
}

int p11n_handshake_op_unauth(const p11n_handshake_op *op)
{
    return op->kind == OP_READ && !op->hs->initiator;
}

const void *p11n_handshake_op_batch(const p11n_handshake_op *op)
{
    return op_picks(op) ? op->hs->local : NULL;
}

size_t p11n_handshake_op_batch_set(const p11n_handshake_op *op, const void **set)
{
    *set = op_picks(op) ? op->hs->remote : NULL;
    return *set != NULL ? op->hs->nremote * sizeof(op->hs->remote[0]) : 0;
}

int p11n_handshake_pending_run_gated(p11n_handshake_op *op, p11n_key_wanted_fn wanted,
    void *arg, struct p11n_ss_table *ss)
{
    if (op == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_handshake *hs = op->hs;
    if (ss != NULL && op_picks(op))
        p11n_ss_table_admit(ss, (const uint8_t (*)[P11N_PUBKEY_LEN])hs->remote, hs->nremote);
    p11n_key_memo_gate(&hs->memo, wanted, arg, op_picks(op) ? ss : NULL);
    int rc = p11n_handshake_pending_run(op);
    p11n_key_memo_gate(&hs->memo, NULL, NULL, NULL);
    return rc;
}

int p11n_handshake_resume(p11n_handshake *hs, uint8_t *out, size_t cap, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (hs == NULL)
        return P11N_ERR_INVALID_ARG;
    struct p11n_handshake_op *op = &hs->op;
    if (op->kind == OP_NONE)
        return P11N_ERR_STATE;
    if (!op->ran)
        return P11N_ERR_PENDING;
    int rc = op->rc;
    if (op->kind == OP_WRITE && rc == P11N_OK) {
        if (out == NULL || outlen == NULL)
            return P11N_ERR_INVALID_ARG;
        if (cap < op->len)
            return P11N_ERR_BUFFER_TOO_SMALL;
        memcpy(out, op->act, op->len);
        *outlen = op->len;
    }
    p11n_wipe(op->act, sizeof(op->act));
    op->kind = OP_NONE;
    op->ran = 0;
    return rc;
}

int p11n_handshake_token_step(const p11n_handshake *hs)
{
    if (hs == NULL || hs->state != HS_RUNNING || hs->noise == NULL)
        return 0;
    return p11n_key_is_slow(hs->local) && p11n_noise_next_uses_static(hs->noise);
}

int p11n_handshake_done(const p11n_handshake *hs)
{
    return hs != NULL && (hs->state == HS_DONE || hs->state == HS_FINISHED);
}

/* A key is authenticated only by the handshake completing: before, the
 * initiator has merely named it and a responder may not have verified it;
 * after a failure (a refused XK key included) it must not be mistaken for
 * a peer. */
int p11n_handshake_remote(const p11n_handshake *hs, uint8_t out[P11N_PUBKEY_LEN])
{
    if (hs == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    if (!hs->has_peer || (hs->state != HS_DONE && hs->state != HS_FINISHED))
        return P11N_ERR_STATE;
    memcpy(out, hs->peer, P11N_PUBKEY_LEN);
    return P11N_OK;
}

int p11n_handshake_finish(p11n_handshake *hs, p11n_transport **out)
{
    if (out != NULL)
        *out = NULL;
    if (hs == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    if (hs->state != HS_DONE)
        return P11N_ERR_STATE;

    const p11n_protocol *proto = p11n_noise_protocol(hs->noise);
    const p11n_hash_alg *hash = proto->hash;
    const p11n_cipher_alg *cipher = proto->cipher;
    uint8_t ck[P11N_MAXHASHLEN], k1[P11N_KEYLEN], k2[P11N_KEYLEN];
    int rc = p11n_noise_split_keys(hs->noise, ck, k1, k2);
    if (rc == P11N_OK) {
        /* k1 carries initiator -> responder. */
        const uint8_t *sk = hs->initiator ? k1 : k2;
        const uint8_t *rk = hs->initiator ? k2 : k1;
        rc = p11n_transport_create(hash, cipher, ck, sk, rk, out);
    }
    uint8_t h[P11N_MAXHASHLEN];
    size_t hlen = 0;
    /* The transport keeps h for channel binding (p11n_conn_handshake_hash). */
    if (rc == P11N_OK && p11n_noise_handshake_hash(hs->noise, h, sizeof(h), &hlen) == P11N_OK)
        p11n_transport_set_hash(*out, h, hlen);
    p11n_wipe(ck, sizeof(ck));
    p11n_wipe(k1, sizeof(k1));
    p11n_wipe(k2, sizeof(k2));
    /* The engine is spent either way. */
    p11n_noise_free(hs->noise);
    hs->noise = NULL;
    if (rc != P11N_OK)
        return fail(hs, rc);
    hs->state = HS_FINISHED;
    return P11N_OK;
}

void p11n_handshake_free(p11n_handshake *hs)
{
    if (hs == NULL)
        return;
    p11n_noise_free(hs->noise);
    p11n_key_memo_forget(&hs->memo);
    free(hs->prologue);
    free(hs->remote);
    p11n_wipe(hs, sizeof(*hs));
    free(hs);
}
