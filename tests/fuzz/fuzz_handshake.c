/* Fuzz the wire handshake with corrupted acts.
 *
 * Input: one configuration byte (bit 0: XK instead of KK; bits 1-2: the
 * act whose length changes; bit 3: shorten, else lengthen it), then XOR
 * masks laid over the acts in order as they cross the wire. Both sides
 * use fixed keys and ephemerals, so every input replays the same way.
 *
 * Checks besides memory safety: a reader's error is one the wire
 * handshake documents for that act, and leaves it refusing everything;
 * untouched acts of the right length complete the handshake; a completed
 * pair of transports talks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_ACT 66

static p11n_key *key_of(uint8_t fill)
{
    uint8_t priv[32];
    memset(priv, fill, sizeof(priv));
    p11n_key *k = NULL;
    CHECK(p11n_key_from_private("secp256k1", priv, sizeof(priv), &k) == P11N_OK);
    return k;
}

static int allowed(int rc)
{
    switch (rc) {
    case P11N_ERR_SHORT_MESSAGE:
    case P11N_ERR_LONG_MESSAGE:
    case P11N_ERR_BAD_VERSION:
    case P11N_ERR_BAD_PUBKEY:
    case P11N_ERR_BAD_CIPHERTEXT:
    case P11N_ERR_BAD_TAG:
    case P11N_ERR_UNKNOWN_PEER:
        return 1;
    default:
        return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t cfg = data[0];
    const char *pattern = (cfg & 1) ? "XK" : "KK";
    int nacts = (cfg & 1) ? 3 : 2;
    int resized_act = 1 + ((cfg >> 1) & 3);   /* 4: none */
    int shorten = (cfg >> 3) & 1;
    data++;
    size--;

    p11n_key *ik = key_of(0x11), *rk = key_of(0x21);
    uint8_t ipub[1][P11N_PUBKEY_LEN], rpub[1][P11N_PUBKEY_LEN];
    size_t n;
    CHECK(p11n_key_public(ik, ipub[0], P11N_PUBKEY_LEN, &n) == P11N_OK);
    CHECK(p11n_key_public(rk, rpub[0], P11N_PUBKEY_LEN, &n) == P11N_OK);
    uint8_t ie[32], re[32];
    memset(ie, 0x12, sizeof(ie));
    memset(re, 0x22, sizeof(re));
    p11n_handshake_config icfg = { .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .local = ik, .remote = rpub,
        .nremote = 1, .test_ephemeral = ie };
    p11n_handshake_config rcfg = { .size = sizeof(p11n_handshake_config),
        .pattern = pattern, .local = rk, .remote = ipub,
        .nremote = 1, .test_ephemeral = re };
    p11n_handshake *hs[2] = { NULL, NULL };
    CHECK(p11n_handshake_initiate(&icfg, &hs[0]) == P11N_OK);
    CHECK(p11n_handshake_respond(&rcfg, &hs[1]) == P11N_OK);

    size_t used = 0;
    int tampered = 0, failed = 0;
    for (int act = 1; act <= nacts && !failed; act++) {
        p11n_handshake *w = hs[(act - 1) % 2], *r = hs[act % 2];
        uint8_t buf[MAX_ACT + 1];
        size_t len = 0;
        CHECK(p11n_handshake_write(w, buf, sizeof(buf), &len) == P11N_OK);
        CHECK(p11n_handshake_want(r) == len);
        for (size_t i = 0; i < len && used < size; i++, used++) {
            buf[i] ^= data[used];
            tampered |= data[used] != 0;
        }
        if (act == resized_act) {
            buf[len] = 0;
            len = shorten ? len - 1 : len + 1;
            tampered = 1;
        }
        int rc = p11n_handshake_read(r, buf, len);
        if (rc != P11N_OK) {
            CHECK(tampered && allowed(rc));
            CHECK(p11n_handshake_want(r) == 0 && !p11n_handshake_done(r));
            CHECK(p11n_handshake_read(r, buf, len) == P11N_ERR_STATE);
            p11n_transport *t = NULL;
            CHECK(p11n_handshake_finish(r, &t) == P11N_ERR_STATE && t == NULL);
            failed = 1;
        }
    }
    if (!failed) {
        /* Only changes that cannot matter got through: none exist for the
         * authenticated bytes, so nothing may have been tampered with. */
        CHECK(!tampered);
        p11n_transport *t[2] = { NULL, NULL };
        CHECK(p11n_handshake_finish(hs[0], &t[0]) == P11N_OK);
        CHECK(p11n_handshake_finish(hs[1], &t[1]) == P11N_OK);
        uint8_t frame[8 + P11N_FRAME_OVERHEAD];
        const uint8_t *m;
        size_t flen, mlen, u;
        CHECK(p11n_transport_seal(t[0], (const uint8_t *)"ping", 4, frame, sizeof(frame),
            &flen) == P11N_OK);
        CHECK(p11n_transport_feed(t[1], frame, flen, &u, &m, &mlen) == 1 && mlen == 4);
        p11n_transport_free(t[0]);
        p11n_transport_free(t[1]);
    }
    p11n_handshake_free(hs[0]);
    p11n_handshake_free(hs[1]);
    p11n_key_free(ik);
    p11n_key_free(rk);
    return 0;
}
