/*
 * Noise HandshakeState (section 5.3): one engine that walks the pattern
 * tables of pattern.c. The local static key is a borrowed handle (the
 * engine only asks it for DH results); ephemeral keys are bytes kept here
 * and wiped as soon as the handshake no longer needs them.
 *
 * Fail closed: after any error the object is dead and every call returns
 * P11N_ERR_STATE.
 */
#include <stdlib.h>
#include <string.h>

#include "noise.h"
#include "secure.h"

enum hs_state {
    HS_SETUP,       /* set_* calls allowed, then start */
    HS_RUNNING,     /* messages to write or read */
    HS_SPLIT,       /* all messages done: split next */
    HS_DONE,        /* split: only queries and free */
    HS_FAILED
};

struct p11n_noise {
    p11n_protocol proto;
    p11n_symmetric ss;
    int initiator;
    int state;
    unsigned msg;                   /* index of the next message */
    int prologue_set;
    struct p11n_key *s;             /* borrowed */
    int has_e, has_re, has_rs;
    int has_expect_rs;              /* rs the pattern transmits, pinned in advance */
    uint8_t expect_rs[P11N_MAXPUBLEN];
    uint8_t e_priv[P11N_MAXPRIVLEN];
    uint8_t e_pub[P11N_MAXPUBLEN];
    uint8_t re[P11N_MAXPUBLEN];
    uint8_t rs[P11N_MAXPUBLEN];
    unsigned npsk, psk_next;
    uint8_t psk[P11N_MAX_MESSAGES + 1][P11N_PSKLEN];
};

/* Which key of each side a DH token combines. */
static const struct {
    uint8_t initiator, responder;
} dh_keys[] = {
    [P11N_TOK_EE] = { P11N_PRE_E, P11N_PRE_E },
    [P11N_TOK_ES] = { P11N_PRE_E, P11N_PRE_S },
    [P11N_TOK_SE] = { P11N_PRE_S, P11N_PRE_E },
    [P11N_TOK_SS] = { P11N_PRE_S, P11N_PRE_S },
};

static int is_psk_handshake(const p11n_noise *hs)
{
    return hs->proto.npsk > 0;
}

/* Whether message i is ours to write. */
static int our_message(const p11n_noise *hs, unsigned i)
{
    return (i % 2 == 0) == (hs->initiator != 0);
}

/* Secrets the handshake holds until the end: ephemeral private key, PSKs. */
static void wipe_handshake_secrets(p11n_noise *hs)
{
    p11n_wipe(hs->e_priv, sizeof(hs->e_priv));
    p11n_wipe(hs->psk, sizeof(hs->psk));
}

static int fail(p11n_noise *hs, int rc)
{
    wipe_handshake_secrets(hs);
    p11n_ss_clear(&hs->ss);
    hs->has_e = 0;
    hs->state = HS_FAILED;
    return rc;
}

/* Entry check shared by every mutating call: INVALID_ARG for no object,
 * and a call in the wrong state kills it. */
static int check_state(p11n_noise *hs, int want)
{
    if (hs == NULL)
        return P11N_ERR_INVALID_ARG;
    if (hs->state == want)
        return P11N_OK;
    return fail(hs, P11N_ERR_STATE);
}

P11N_API int p11n_noise_new(const char *protocol_name, int initiator, p11n_noise **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (protocol_name == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_noise *hs = calloc(1, sizeof(*hs));
    if (hs == NULL)
        return P11N_ERR_NOMEM;
    int rc = p11n_protocol_parse(protocol_name, &hs->proto);
    if (rc == P11N_OK)
        rc = p11n_ss_init(&hs->ss, &hs->proto);
    if (rc != P11N_OK) {
        p11n_noise_free(hs);
        return rc;
    }
    hs->initiator = initiator != 0;
    hs->state = HS_SETUP;
    *out = hs;
    return P11N_OK;
}

/* The prologue is mixed at once: nothing else touches h before start. */
P11N_API int p11n_noise_set_prologue(p11n_noise *hs, const uint8_t *prologue, size_t len)
{
    int rc = check_state(hs, HS_SETUP);
    if (rc != P11N_OK)
        return rc;
    if (hs->prologue_set)
        return fail(hs, P11N_ERR_STATE);
    if (prologue == NULL && len > 0)
        return fail(hs, P11N_ERR_INVALID_ARG);
    rc = p11n_ss_mix_hash(&hs->ss, prologue, len);
    if (rc != P11N_OK)
        return fail(hs, rc);
    hs->prologue_set = 1;
    return P11N_OK;
}

P11N_API int p11n_noise_set_local_static(p11n_noise *hs, p11n_key *key)
{
    int rc = check_state(hs, HS_SETUP);
    if (rc != P11N_OK)
        return rc;
    if (key == NULL || key->alg != hs->proto.dh)
        return fail(hs, P11N_ERR_INVALID_ARG);
    hs->s = key;
    return P11N_OK;
}

/* Whether `side` (0 initiator, 1 responder) ever uses its static key. */
static int side_uses_static(const p11n_protocol *p, unsigned side)
{
    if (p->pre[side] & P11N_PRE_S)
        return 1;
    for (unsigned i = side; i < p->nmsg; i += 2)
        for (const uint8_t *t = p->msg[i]; *t != P11N_TOK_END; t++)
            if (*t == P11N_TOK_S)
                return 1;
    return 0;
}

/* A peer static key that a pre-message announces is used as given. For a
 * pattern that transmits the peer's key, the key given here pins it: the
 * one that arrives must be the same, or the read fails with UNKNOWN_PEER
 * (never silently replaced by whatever arrives). A pattern in which the
 * peer has no static key refuses it: a pin nothing would ever check must
 * not look like authentication. */
P11N_API int p11n_noise_set_remote_static(p11n_noise *hs, const uint8_t *pub, size_t len)
{
    int rc = check_state(hs, HS_SETUP);
    if (rc != P11N_OK)
        return rc;
    const p11n_dh_alg *dh = hs->proto.dh;
    if (pub == NULL || len != dh->publen)
        return fail(hs, P11N_ERR_INVALID_ARG);
    if (dh->check_pub(pub) != P11N_OK)
        return fail(hs, P11N_ERR_BAD_PUBKEY);
    unsigned peer = hs->initiator ? 1 : 0;
    if (!side_uses_static(&hs->proto, peer))
        return fail(hs, P11N_ERR_INVALID_ARG);
    if ((hs->proto.pre[peer] & P11N_PRE_S) == 0) {
        memcpy(hs->expect_rs, pub, len);
        hs->has_expect_rs = 1;
        return P11N_OK;
    }
    memcpy(hs->rs, pub, len);
    hs->has_rs = 1;
    return P11N_OK;
}

P11N_API int p11n_noise_add_psk(p11n_noise *hs, const uint8_t *psk, size_t len)
{
    int rc = check_state(hs, HS_SETUP);
    if (rc != P11N_OK)
        return rc;
    if (psk == NULL || len != P11N_PSKLEN || hs->npsk >= hs->proto.npsk)
        return fail(hs, P11N_ERR_INVALID_ARG);
    memcpy(hs->psk[hs->npsk++], psk, len);
    return P11N_OK;
}

P11N_API int p11n_noise_set_ephemeral(p11n_noise *hs, const uint8_t *priv, size_t len)
{
    int rc = check_state(hs, HS_SETUP);
    if (rc != P11N_OK)
        return rc;
    const p11n_dh_alg *dh = hs->proto.dh;
    if (priv == NULL || len != dh->privlen)
        return fail(hs, P11N_ERR_INVALID_ARG);
    rc = dh->pubkey(priv, hs->e_pub);
    if (rc != P11N_OK)
        return fail(hs, rc == P11N_ERR_BAD_PRIVKEY ? rc : P11N_ERR_CRYPTO);
    memcpy(hs->e_priv, priv, len);
    hs->has_e = 1;
    return P11N_OK;
}

/* Pre-message "e": MixHash, and in PSK handshakes MixKey too (section 9). */
static int mix_ephemeral(p11n_noise *hs, const uint8_t *pub)
{
    size_t publen = hs->proto.dh->publen;
    int rc = p11n_ss_mix_hash(&hs->ss, pub, publen);
    if (rc == P11N_OK && is_psk_handshake(hs))
        rc = p11n_ss_mix_key(&hs->ss, pub, publen);
    return rc;
}

static int mix_pre_message(p11n_noise *hs, unsigned side)
{
    unsigned pre = hs->proto.pre[side];
    int ours = (side == 0) == (hs->initiator != 0);
    int rc = P11N_OK;
    if (pre & P11N_PRE_E)
        rc = mix_ephemeral(hs, ours ? hs->e_pub : hs->re);
    if (rc == P11N_OK && (pre & P11N_PRE_S))
        rc = p11n_ss_mix_hash(&hs->ss, ours ? hs->s->pub : hs->rs, hs->proto.dh->publen);
    return rc;
}

P11N_API int p11n_noise_start(p11n_noise *hs)
{
    int rc = check_state(hs, HS_SETUP);
    if (rc != P11N_OK)
        return rc;
    const p11n_protocol *p = &hs->proto;
    unsigned me = hs->initiator ? 0 : 1, peer = 1 - me;
    /* No API sets a remote ephemeral key, so a pattern whose peer
     * pre-message holds one cannot run. */
    if ((side_uses_static(p, me) && hs->s == NULL) ||
        ((p->pre[peer] & P11N_PRE_S) && !hs->has_rs) ||
        ((p->pre[me] & P11N_PRE_E) && !hs->has_e) ||
        (p->pre[peer] & P11N_PRE_E) ||
        hs->npsk != p->npsk)
        return fail(hs, P11N_ERR_MISSING_KEY);

    if (!hs->prologue_set)
        rc = p11n_ss_mix_hash(&hs->ss, NULL, 0);
    if (rc == P11N_OK)
        rc = mix_pre_message(hs, 0);
    if (rc == P11N_OK)
        rc = mix_pre_message(hs, 1);
    if (rc != P11N_OK)
        return fail(hs, rc);
    hs->state = HS_RUNNING;
    return P11N_OK;
}

P11N_API int p11n_noise_action(const p11n_noise *hs)
{
    if (hs == NULL)
        return P11N_ERR_INVALID_ARG;
    switch (hs->state) {
    case HS_RUNNING:
        return our_message(hs, hs->msg) ? P11N_NOISE_WRITE : P11N_NOISE_READ;
    case HS_SPLIT:
        return P11N_NOISE_SPLIT;
    case HS_FAILED:
        return P11N_NOISE_FAILED;
    default:
        return P11N_ERR_STATE;
    }
}

P11N_API size_t p11n_noise_message_len(const p11n_noise *hs, size_t payload_len)
{
    /* The payload bound also keeps the sum below from wrapping around. */
    if (hs == NULL || hs->state != HS_RUNNING || payload_len > P11N_MAX_NOISE_MESSAGE)
        return 0;
    size_t publen = hs->proto.dh->publen, len = 0;
    /* Simulate which tokens key the cipher before each encryption. */
    int has_key = hs->ss.cs.has_key;
    for (const uint8_t *t = hs->proto.msg[hs->msg]; *t != P11N_TOK_END; t++) {
        switch (*t) {
        case P11N_TOK_E:
            len += publen;
            if (is_psk_handshake(hs))
                has_key = 1;
            break;
        case P11N_TOK_S:
            len += publen + (has_key ? P11N_TAG_LEN : 0);
            break;
        default:
            has_key = 1;
            break;
        }
    }
    return len + payload_len + (has_key ? P11N_TAG_LEN : 0);
}

/* Which key of ours (P11N_PRE_E or _S) a DH token uses, and the peer's
 * key (NULL if we do not have it). */
static uint8_t dh_local(const p11n_noise *hs, uint8_t tok)
{
    return hs->initiator ? dh_keys[tok].initiator : dh_keys[tok].responder;
}

static const uint8_t *dh_peer(const p11n_noise *hs, uint8_t tok)
{
    uint8_t remote = hs->initiator ? dh_keys[tok].responder : dh_keys[tok].initiator;
    if (remote == P11N_PRE_E && hs->has_re)
        return hs->re;
    if (remote == P11N_PRE_S && hs->has_rs)
        return hs->rs;
    return NULL;
}

/* DH(local, remote) for ee, es, se, ss into out (dhlen bytes). A DH of
 * two static keys goes through dh_static: the same for every handshake
 * with this peer, so a token key may remember its parity. */
static int compute_dh(p11n_noise *hs, uint8_t tok, uint8_t *out)
{
    uint8_t local = dh_local(hs, tok);
    const uint8_t *peer = dh_peer(hs, tok);
    /* The tables and start() guarantee both keys; this guards the tables. */
    if (peer == NULL || (local == P11N_PRE_E && !hs->has_e) ||
        (local == P11N_PRE_S && hs->s == NULL))
        return P11N_ERR_STATE;
    if (local == P11N_PRE_E)
        return hs->proto.dh->dh(hs->e_priv, peer, out);
    if (peer == hs->rs)
        return p11n_key_dh_static(hs->s, peer, out);
    return p11n_key_dh(hs->s, peer, out);
}

/* MixKey(DH(local, remote)) for ee, es, se, ss. */
static int mix_dh(p11n_noise *hs, uint8_t tok)
{
    uint8_t dh[P11N_MAXDHLEN];
    int rc = compute_dh(hs, tok, dh);
    if (rc == P11N_OK)
        rc = p11n_ss_mix_key(&hs->ss, dh, hs->proto.dh->dhlen);
    p11n_wipe(dh, sizeof(dh));
    return rc;
}

static int is_dh_token(uint8_t tok)
{
    return tok == P11N_TOK_EE || tok == P11N_TOK_ES || tok == P11N_TOK_SE ||
        tok == P11N_TOK_SS;
}

/* A DH we would do with our static key through dh_x (one derivation,
 * x only). */
static int is_x_dh(const p11n_noise *hs, uint8_t tok)
{
    return is_dh_token(tok) && dh_local(hs, tok) == P11N_PRE_S && hs->s != NULL &&
        p11n_key_has_dh_x(hs->s);
}

/* Reading: the index in the current message from which the tag can pick
 * the parity of our static key's DHs, or -1. From the first such DH on,
 * every token must only mix a key (DH or psk) -- nothing is decrypted
 * before the payload -- and at most P11N_MAX_X_STEPS DHs are x only. */
static int x_start(const p11n_noise *hs)
{
    const uint8_t *toks = hs->proto.msg[hs->msg];
    int start = -1;
    unsigned nx = 0;
    for (int i = 0; toks[i] != P11N_TOK_END; i++) {
        if (start < 0 && !is_x_dh(hs, toks[i]))
            continue;
        if (start < 0)
            start = i;
        if (!is_dh_token(toks[i]) && toks[i] != P11N_TOK_PSK)
            return -1;
        nx += is_x_dh(hs, toks[i]);
    }
    return nx <= P11N_MAX_X_STEPS ? start : -1;
}

static int mix_psk(p11n_noise *hs)
{
    if (hs->psk_next >= hs->npsk)
        return P11N_ERR_STATE;
    int rc = p11n_ss_mix_key_and_hash(&hs->ss, hs->psk[hs->psk_next], P11N_PSKLEN);
    p11n_wipe(hs->psk[hs->psk_next], P11N_PSKLEN);
    hs->psk_next++;
    return rc;
}

/* Tokens that act the same whether we write or read. */
static int shared_token(p11n_noise *hs, uint8_t tok)
{
    return tok == P11N_TOK_PSK ? mix_psk(hs) : mix_dh(hs, tok);
}

/* After the last message the ephemeral key and PSKs have done their job. */
static void advance(p11n_noise *hs)
{
    hs->msg++;
    if (hs->msg == hs->proto.nmsg) {
        wipe_handshake_secrets(hs);
        hs->has_e = 0;
        hs->state = HS_SPLIT;
    }
}

static int write_tokens(p11n_noise *hs, uint8_t *out, size_t *pos)
{
    const p11n_dh_alg *dh = hs->proto.dh;
    int rc = P11N_OK;
    for (const uint8_t *t = hs->proto.msg[hs->msg]; rc == P11N_OK && *t != P11N_TOK_END; t++) {
        switch (*t) {
        case P11N_TOK_E:
            /* a fixed ephemeral (test vectors) replaces generation */
            if (!hs->has_e) {
                rc = dh->generate(hs->e_priv, hs->e_pub);
                if (rc != P11N_OK)
                    break;
                hs->has_e = 1;
            }
            memcpy(out + *pos, hs->e_pub, dh->publen);
            *pos += dh->publen;
            rc = mix_ephemeral(hs, hs->e_pub);
            break;
        case P11N_TOK_S: {
            size_t n = dh->publen + p11n_cs_overhead(&hs->ss.cs);
            rc = p11n_ss_encrypt_and_hash(&hs->ss, hs->s->pub, dh->publen, out + *pos);
            *pos += n;
            break;
        }
        default:
            rc = shared_token(hs, *t);
            break;
        }
    }
    return rc;
}

P11N_API int p11n_noise_write_message(p11n_noise *hs, const uint8_t *payload,
    size_t payload_len, uint8_t *out, size_t cap, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    int rc = check_state(hs, HS_RUNNING);
    if (rc != P11N_OK)
        return rc;
    if (!our_message(hs, hs->msg))
        return fail(hs, P11N_ERR_STATE);
    if (out == NULL || outlen == NULL || (payload == NULL && payload_len > 0))
        return fail(hs, P11N_ERR_INVALID_ARG);
    size_t need = p11n_noise_message_len(hs, payload_len);
    if (need > P11N_MAX_NOISE_MESSAGE || payload_len > P11N_MAX_NOISE_MESSAGE)
        return fail(hs, P11N_ERR_MESSAGE_TOO_LARGE);
    if (cap < need)
        return fail(hs, P11N_ERR_BUFFER_TOO_SMALL);

    size_t pos = 0;
    rc = write_tokens(hs, out, &pos);
    if (rc == P11N_OK) {
        rc = p11n_ss_encrypt_and_hash(&hs->ss, payload, payload_len, out + pos);
        pos += payload_len + p11n_cs_overhead(&hs->ss.cs);
    }
    if (rc == P11N_OK && pos != need)
        rc = P11N_ERR_STATE;
    if (rc != P11N_OK) {
        /* no half-written message leaves the engine */
        p11n_wipe(out, need);
        return fail(hs, rc);
    }
    *outlen = pos;
    advance(hs);
    return P11N_OK;
}

/* The current message's tokens before index `stop` (-1: all). */
static int read_tokens(p11n_noise *hs, const uint8_t *msg, size_t len, size_t *pos, int stop)
{
    const p11n_dh_alg *dh = hs->proto.dh;
    int rc = P11N_OK;
    const uint8_t *toks = hs->proto.msg[hs->msg];
    for (const uint8_t *t = toks; rc == P11N_OK && *t != P11N_TOK_END &&
        (stop < 0 || t - toks < stop); t++) {
        switch (*t) {
        case P11N_TOK_E:
            if (len - *pos < dh->publen)
                return P11N_ERR_SHORT_MESSAGE;
            if (dh->check_pub(msg + *pos) != P11N_OK)
                return P11N_ERR_BAD_PUBKEY;
            memcpy(hs->re, msg + *pos, dh->publen);
            hs->has_re = 1;
            *pos += dh->publen;
            rc = mix_ephemeral(hs, hs->re);
            break;
        case P11N_TOK_S: {
            size_t n = dh->publen + p11n_cs_overhead(&hs->ss.cs);
            uint8_t rs[P11N_MAXPUBLEN];
            if (len - *pos < n)
                return P11N_ERR_SHORT_MESSAGE;
            rc = p11n_ss_decrypt_and_hash(&hs->ss, msg + *pos, n, rs);
            if (rc == P11N_ERR_BAD_TAG)
                return P11N_ERR_BAD_CIPHERTEXT;
            if (rc != P11N_OK)
                return rc;
            if (dh->check_pub(rs) != P11N_OK)
                return P11N_ERR_BAD_PUBKEY;
            if (hs->has_expect_rs && !p11n_ct_eq(rs, hs->expect_rs, dh->publen))
                return P11N_ERR_UNKNOWN_PEER;
            memcpy(hs->rs, rs, dh->publen);
            hs->has_rs = 1;
            *pos += n;
            break;
        }
        default:
            rc = shared_token(hs, *t);
            break;
        }
    }
    return rc;
}

/* Scratch of a read by the tag: the inputs of every remaining step. */
struct tag_read {
    p11n_step steps[P11N_MAX_TOKENS];
    uint8_t val[P11N_MAX_TOKENS][P11N_MAXDHLEN];
    size_t n;
};

/* The x-only DHs of a read, asked for together: two go to the key at
 * once (a token runs them on two sessions in parallel). */
static int tag_x(p11n_noise *hs, const uint8_t *const peers[P11N_MAX_X_STEPS],
    uint8_t *const xs[P11N_MAX_X_STEPS], unsigned nx)
{
    for (unsigned i = 0; i < nx; i++)
        if (peers[i] == NULL)
            return P11N_ERR_STATE;
    if (nx == 2)
        return p11n_key_dh_x2(hs->s, peers[0], peers[1], xs[0], xs[1]);
    return nx == 1 ? p11n_key_dh_x(hs->s, peers[0], xs[0]) : P11N_OK;
}

/* The steps from token `start` on: our static key's DHs as x only (one
 * token operation each, its parity left to the tag), every other DH and
 * psk as its value. */
static int tag_steps(p11n_noise *hs, int start, struct tag_read *r)
{
    const uint8_t *peers[P11N_MAX_X_STEPS] = { NULL, NULL };
    uint8_t *xs[P11N_MAX_X_STEPS] = { NULL, NULL };
    unsigned nx = 0;
    int rc = P11N_OK;
    for (const uint8_t *t = hs->proto.msg[hs->msg] + start;
        rc == P11N_OK && *t != P11N_TOK_END; t++) {
        p11n_step *st = &r->steps[r->n];
        if (*t == P11N_TOK_PSK) {
            if (hs->psk_next >= hs->npsk)
                return P11N_ERR_STATE;
            memcpy(r->val[r->n], hs->psk[hs->psk_next], P11N_PSKLEN);
            p11n_wipe(hs->psk[hs->psk_next++], P11N_PSKLEN);
            *st = (p11n_step){ P11N_STEP_PSK, r->val[r->n], P11N_PSKLEN };
        } else if (is_x_dh(hs, *t) && nx < P11N_MAX_X_STEPS) {
            peers[nx] = dh_peer(hs, *t);
            xs[nx++] = r->val[r->n];
            *st = (p11n_step){ P11N_STEP_X, r->val[r->n], 32 };
        } else {
            rc = compute_dh(hs, *t, r->val[r->n]);
            *st = (p11n_step){ P11N_STEP_DH, r->val[r->n], hs->proto.dh->dhlen };
        }
        r->n++;
    }
    return rc == P11N_OK ? tag_x(hs, peers, xs, nx) : rc;
}

/* The rest of the message (from token `start`, then the payload) with
 * the parity of our token DHs picked by the payload's tag. */
static int read_by_tag(p11n_noise *hs, int start, const uint8_t *rest, size_t len,
    uint8_t *payload, size_t cap)
{
    struct tag_read *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return P11N_ERR_NOMEM;
    int rc = tag_steps(hs, start, r);
    if (rc == P11N_OK && len < P11N_TAG_LEN)
        rc = P11N_ERR_SHORT_MESSAGE;
    if (rc == P11N_OK && len - P11N_TAG_LEN > cap)
        rc = P11N_ERR_BUFFER_TOO_SMALL;
    uint8_t empty;
    if (rc == P11N_OK)
        rc = p11n_ss_read_candidates(&hs->ss, r->steps, r->n, rest, len,
            payload != NULL ? payload : &empty);
    p11n_wipe(r, sizeof(*r));
    free(r);
    return rc;
}

/* The payload, read as usual: DecryptAndHash of what is left. */
static int read_payload(p11n_noise *hs, const uint8_t *rest, size_t len,
    uint8_t *payload, size_t cap)
{
    size_t overhead = p11n_cs_overhead(&hs->ss.cs);
    if (len < overhead)
        return P11N_ERR_SHORT_MESSAGE;
    if (len - overhead > cap)
        return P11N_ERR_BUFFER_TOO_SMALL;
    /* the AEAD wants a destination even for an empty plaintext */
    uint8_t empty;
    return p11n_ss_decrypt_and_hash(&hs->ss, rest, len, payload != NULL ? payload : &empty);
}

P11N_API int p11n_noise_read_message(p11n_noise *hs, const uint8_t *msg, size_t len,
    uint8_t *payload, size_t cap, size_t *payload_len)
{
    if (payload_len != NULL)
        *payload_len = 0;
    int rc = check_state(hs, HS_RUNNING);
    if (rc == P11N_OK && our_message(hs, hs->msg))
        rc = fail(hs, P11N_ERR_STATE);
    if (rc == P11N_OK && (payload_len == NULL || (msg == NULL && len > 0) ||
        (payload == NULL && cap > 0)))
        rc = fail(hs, P11N_ERR_INVALID_ARG);
    if (rc == P11N_OK && len > P11N_MAX_NOISE_MESSAGE)
        rc = fail(hs, P11N_ERR_MESSAGE_TOO_LARGE);
    if (rc != P11N_OK) {
        p11n_wipe(payload, cap);
        return rc;
    }

    size_t pos = 0;
    int start = x_start(hs);
    rc = read_tokens(hs, msg, len, &pos, start);
    /* msg may be NULL only when len is 0 */
    const uint8_t *rest = len > 0 ? msg + pos : msg;
    if (rc == P11N_OK && start >= 0)
        rc = read_by_tag(hs, start, rest, len - pos, payload, cap);
    else if (rc == P11N_OK)
        rc = read_payload(hs, rest, len - pos, payload, cap);
    if (rc != P11N_OK) {
        p11n_wipe(payload, cap);
        return fail(hs, rc);
    }
    *payload_len = len - pos - p11n_cs_overhead(&hs->ss.cs);
    advance(hs);
    return P11N_OK;
}

P11N_API int p11n_noise_remote_static(const p11n_noise *hs, uint8_t *out, size_t cap,
    size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (hs == NULL || out == NULL || outlen == NULL)
        return P11N_ERR_INVALID_ARG;
    if (hs->state == HS_FAILED || !hs->has_rs)
        return P11N_ERR_STATE;
    if (cap < hs->proto.dh->publen)
        return P11N_ERR_BUFFER_TOO_SMALL;
    memcpy(out, hs->rs, hs->proto.dh->publen);
    *outlen = hs->proto.dh->publen;
    return P11N_OK;
}

P11N_API int p11n_noise_handshake_hash(const p11n_noise *hs, uint8_t *out, size_t cap,
    size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (hs == NULL || out == NULL || outlen == NULL)
        return P11N_ERR_INVALID_ARG;
    if (hs->state != HS_SPLIT && hs->state != HS_DONE)
        return P11N_ERR_STATE;
    size_t hashlen = hs->proto.hash->hashlen;
    if (cap < hashlen)
        return P11N_ERR_BUFFER_TOO_SMALL;
    memcpy(out, hs->ss.h, hashlen);
    *outlen = hashlen;
    return P11N_OK;
}

/* Ends the handshake: everything but h (and the public keys) is wiped. */
static void finish(p11n_noise *hs)
{
    uint8_t h[P11N_MAXHASHLEN];
    memcpy(h, hs->ss.h, sizeof(h));
    p11n_ss_clear(&hs->ss);
    memcpy(hs->ss.h, h, sizeof(h));
    hs->state = HS_DONE;
}

int p11n_noise_split_keys(p11n_noise *hs, uint8_t *ck, uint8_t k1[P11N_KEYLEN],
    uint8_t k2[P11N_KEYLEN])
{
    int rc = check_state(hs, HS_SPLIT);
    if (rc != P11N_OK)
        return rc;
    if (ck == NULL || k1 == NULL || k2 == NULL)
        return fail(hs, P11N_ERR_INVALID_ARG);
    rc = p11n_ss_split(&hs->ss, k1, k2);
    if (rc != P11N_OK)
        return fail(hs, rc);
    memcpy(ck, hs->ss.ck, hs->proto.hash->hashlen);
    finish(hs);
    return P11N_OK;
}

P11N_API int p11n_noise_split(p11n_noise *hs, p11n_cipher **send, p11n_cipher **recv)
{
    if (send != NULL)
        *send = NULL;
    if (recv != NULL)
        *recv = NULL;
    int rc = check_state(hs, HS_SPLIT);
    if (rc != P11N_OK)
        return rc;

    uint8_t k1[P11N_KEYLEN], k2[P11N_KEYLEN];
    p11n_cipher *c1 = NULL, *c2 = NULL;
    /* One-way patterns: only initiator -> responder exists. */
    int one_way = hs->proto.nmsg == 1;
    int want1 = hs->initiator ? send != NULL : recv != NULL;
    int want2 = !one_way && (hs->initiator ? recv != NULL : send != NULL);
    rc = p11n_ss_split(&hs->ss, k1, k2);
    if (rc == P11N_OK && want1)
        rc = p11n_cipher_new_keyed(hs->proto.cipher, k1, &c1);
    if (rc == P11N_OK && want2)
        rc = p11n_cipher_new_keyed(hs->proto.cipher, k2, &c2);
    p11n_wipe(k1, sizeof(k1));
    p11n_wipe(k2, sizeof(k2));
    if (rc != P11N_OK) {
        p11n_cipher_free(c1);
        p11n_cipher_free(c2);
        return fail(hs, rc);
    }
    if (hs->initiator) {
        if (send != NULL)
            *send = c1;
        if (recv != NULL)
            *recv = c2;
    } else {
        if (send != NULL)
            *send = c2;
        if (recv != NULL)
            *recv = c1;
    }
    finish(hs);
    return P11N_OK;
}

const p11n_protocol *p11n_noise_protocol(const p11n_noise *hs)
{
    return &hs->proto;
}

int p11n_noise_next_uses_static(const p11n_noise *hs)
{
    if (hs == NULL || hs->state != HS_RUNNING)
        return 0;
    for (const uint8_t *t = hs->proto.msg[hs->msg]; *t != P11N_TOK_END; t++)
        if (is_dh_token(*t) && dh_local(hs, *t) == P11N_PRE_S)
            return 1;
    return 0;
}

size_t p11n_noise_next_static_peers(const p11n_noise *hs, const uint8_t **peers, size_t cap)
{
    size_t n = 0;
    if (hs == NULL || hs->state != HS_RUNNING)
        return 0;
    for (const uint8_t *t = hs->proto.msg[hs->msg]; *t != P11N_TOK_END && n < cap; t++)
        if (is_dh_token(*t) && dh_local(hs, *t) == P11N_PRE_S) {
            const uint8_t *peer = dh_peer(hs, *t);
            peers[n++] = peer != NULL && peer == hs->rs ? peer : NULL;
        }
    return n;
}

int p11n_noise_is_initiator(const p11n_noise *hs)
{
    return hs->initiator;
}

P11N_API void p11n_noise_free(p11n_noise *hs)
{
    if (hs == NULL)
        return;
    p11n_ss_clear(&hs->ss);
    p11n_wipe(hs, sizeof(*hs));
    free(hs);
}
