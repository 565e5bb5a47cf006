/* Fuzz a whole session from one side: a KK or XK initiator or responder
 * (a KK responder with up to eight candidate initiator keys, an XK
 * responder with or without a list of accepted keys) reads the acts and
 * then the transport stream that the input holds, through the public
 * sans-I/O API with software keys. The input layout is in session.h; the
 * seeds are real sessions recorded by tests/fuzz/record_session.c.
 *
 * Checks besides memory safety: every failed read is an error documented
 * for handshake input and leaves the handshake refusing everything; a
 * completed handshake authenticated the one peer whose private key made
 * the recorded acts (mutated acts never authenticate anybody, a decoy
 * candidate least of all); the transport returns a message, asks for
 * more after consuming everything, or fails with BAD_TAG and is then dead;
 * every delivered message can be answered. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_ACT 66

typedef struct {
    const uint8_t *p;
    size_t left;
} input;

typedef struct {
    p11n_key *local;
    uint8_t keys[S_MAX_KEYS][P11N_PUBKEY_LEN];  /* the remote keys configured */
    uint8_t expect[P11N_PUBKEY_LEN];            /* the peer that recorded the input */
    p11n_handshake *hs;
    p11n_transport *t;
} side;

static p11n_key *key_of(uint8_t fill)
{
    uint8_t priv[32];
    memset(priv, fill, sizeof(priv));
    p11n_key *k = NULL;
    CHECK(p11n_key_from_private("secp256k1", priv, sizeof(priv), &k) == P11N_OK);
    return k;
}

static void public_of(uint8_t fill, uint8_t out[P11N_PUBKEY_LEN])
{
    p11n_key *k = key_of(fill);
    size_t n = 0;
    CHECK(p11n_key_public(k, out, P11N_PUBKEY_LEN, &n) == P11N_OK && n == P11N_PUBKEY_LEN);
    p11n_key_free(k);
}

/* The next record, cut short if the input ends first; 0 when none is left. */
static int next_record(input *in, const uint8_t **rec, size_t *len)
{
    if (in->left < 2)
        return 0;
    size_t want = (size_t)in->p[0] << 8 | in->p[1];
    in->p += 2;
    in->left -= 2;
    *len = want < in->left ? want : in->left;
    *rec = in->p;
    in->p += *len;
    in->left -= *len;
    return 1;
}

static void setup(uint8_t cfg, side *s)
{
    int xk = (cfg & S_CFG_XK) != 0, initiator = (cfg & S_CFG_INITIATOR) != 0;
    uint8_t eph[32];
    memset(eph, initiator ? S_INITIATOR_EPH_FILL : S_RESPONDER_EPH_FILL, sizeof(eph));
    size_t nkeys = 1;
    if (initiator) {
        s->local = key_of(S_INITIATOR_FILL);
        public_of(S_RESPONDER_FILL, s->keys[0]);
        memcpy(s->expect, s->keys[0], P11N_PUBKEY_LEN);
    } else {
        s->local = key_of(S_RESPONDER_FILL);
        public_of(S_INITIATOR_FILL, s->expect);
        nkeys = S_CFG_COUNT(cfg) + (xk ? 0 : 1);
        for (size_t i = 0; i < nkeys; i++)
            if (i == S_CFG_POS(cfg) % nkeys)
                memcpy(s->keys[i], s->expect, P11N_PUBKEY_LEN);
            else
                public_of((uint8_t)(S_DECOY_FILL + i), s->keys[i]);
    }
    p11n_handshake_config hc = { .size = sizeof(p11n_handshake_config),
        .pattern = xk ? "XK" : "KK", .local = s->local,
        .remote = nkeys > 0 ? (const uint8_t (*)[P11N_PUBKEY_LEN])s->keys : NULL,
        .nremote = nkeys, .test_ephemeral = eph };
    int rc = initiator ? p11n_handshake_initiate(&hc, &s->hs)
                       : p11n_handshake_respond(&hc, &s->hs);
    CHECK(rc == P11N_OK);
}

static int act_error(int rc)
{
    static const int documented[] = { P11N_ERR_SHORT_MESSAGE, P11N_ERR_LONG_MESSAGE,
        P11N_ERR_BAD_VERSION, P11N_ERR_BAD_PUBKEY, P11N_ERR_BAD_CIPHERTEXT,
        P11N_ERR_BAD_TAG, P11N_ERR_UNKNOWN_PEER };
    for (size_t i = 0; i < sizeof(documented) / sizeof(documented[0]); i++)
        if (rc == documented[i])
            return 1;
    return 0;
}

static void check_dead(p11n_handshake *hs)
{
    uint8_t buf[MAX_ACT], pub[P11N_PUBKEY_LEN];
    size_t n;
    p11n_transport *t = NULL;
    CHECK(p11n_handshake_want(hs) == 0 && !p11n_handshake_done(hs));
    CHECK(p11n_handshake_read(hs, buf, sizeof(buf)) == P11N_ERR_STATE);
    CHECK(p11n_handshake_write(hs, buf, sizeof(buf), &n) == P11N_ERR_STATE);
    CHECK(p11n_handshake_remote(hs, pub) == P11N_ERR_STATE);
    CHECK(p11n_handshake_finish(hs, &t) == P11N_ERR_STATE && t == NULL);
}

/* Run the handshake on the input's acts; 1 when it completed. */
static int run_handshake(side *s, input *in)
{
    while (!p11n_handshake_done(s->hs)) {
        uint8_t act[MAX_ACT];
        size_t n = 0;
        const uint8_t *rec;
        if (p11n_handshake_want(s->hs) == 0) {
            CHECK(p11n_handshake_write(s->hs, act, sizeof(act), &n) == P11N_OK);
            continue;
        }
        if (!next_record(in, &rec, &n))
            return 0;
        int rc = p11n_handshake_read(s->hs, rec, n);
        if (rc != P11N_OK) {
            CHECK(act_error(rc));
            check_dead(s->hs);
            return 0;
        }
    }
    uint8_t pub[P11N_PUBKEY_LEN];
    CHECK(p11n_handshake_remote(s->hs, pub) == P11N_OK);
    CHECK(memcmp(pub, s->expect, P11N_PUBKEY_LEN) == 0);
    CHECK(p11n_handshake_finish(s->hs, &s->t) == P11N_OK && s->t != NULL);
    return 1;
}

/* Feed the rest of the input as the peer's stream, answering each message. */
static void run_transport(p11n_transport *t, input *in)
{
    static uint8_t reply[P11N_MAX_FRAME];
    const uint8_t *rec;
    size_t len;
    while (next_record(in, &rec, &len)) {
        size_t off = 0;
        for (;;) {
            const uint8_t *m = NULL;
            size_t mlen = 0, used = 0, flen = 0;
            int rc = p11n_transport_feed(t, rec + off, len - off, &used, &m, &mlen);
            CHECK(used <= len - off);
            off += used;
            if (rc == 0) {
                CHECK(off == len);
                break;
            }
            if (rc != 1) {
                CHECK(rc == P11N_ERR_BAD_TAG);
                CHECK(p11n_transport_feed(t, rec, len, &used, &m, &mlen) == P11N_ERR_STATE);
                return;
            }
            CHECK(mlen <= P11N_MAX_MESSAGE && (mlen == 0 || m != NULL));
            CHECK(p11n_transport_seal(t, m, mlen, reply, sizeof(reply), &flen) == P11N_OK);
            CHECK(flen == mlen + P11N_FRAME_OVERHEAD);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    side s;
    memset(&s, 0, sizeof(s));
    input in = { data + 1, size - 1 };
    setup(data[0], &s);
    if (run_handshake(&s, &in))
        run_transport(s.t, &in);
    p11n_transport_free(s.t);
    p11n_handshake_free(s.hs);
    p11n_key_free(s.local);
    return 0;
}
