#include <stdlib.h>
#include <string.h>

#include "bolt8case.h"
#include "testutil.h"

#define XK_PROTO "Noise_XK_secp256k1_ChaChaPoly_SHA256"
#define MAX_ACT 128

uint8_t *t_hex_field(json_t *obj, const char *field, size_t want)
{
    const char *s = json_string_value(json_object_get(obj, field));
    CU_ASSERT_FATAL(s != NULL);
    size_t n;
    uint8_t *p = t_unhex(s, &n);
    CU_ASSERT_FATAL(want == 0 || n == want);
    return p;
}

/* `t` has send key sk, receive key rk and chaining key ck: its frames equal
 * those of a transport made from those keys and open at their mirror, and
 * it opens the mirror's frames, past a rotation (which needs the right ck)
 * each way. */
void t_bolt8_check_keys(p11n_transport *t, const uint8_t *ck, const uint8_t *sk,
    const uint8_t *rk)
{
    p11n_transport *same = NULL, *peer = NULL;
    CU_ASSERT_FATAL(p11n_transport_new(XK_PROTO, ck, sk, rk, &same) == P11N_OK);
    CU_ASSERT_FATAL(p11n_transport_new(XK_PROTO, ck, rk, sk, &peer) == P11N_OK);
    uint8_t f1[64], f2[64];
    int equal = 1, opened = 0;
    for (int i = 0; i < 501; i++) {
        size_t n1 = 0, n2 = 0, used = 0, mlen = 0;
        const uint8_t *m = NULL;
        CU_ASSERT_FATAL(p11n_transport_seal(t, (const uint8_t *)"vector", 6, f1, sizeof(f1),
            &n1) == P11N_OK);
        CU_ASSERT_FATAL(p11n_transport_seal(same, (const uint8_t *)"vector", 6, f2,
            sizeof(f2), &n2) == P11N_OK);
        equal &= n1 == n2 && memcmp(f1, f2, n1) == 0;
        opened += p11n_transport_feed(peer, f1, n1, &used, &m, &mlen) == 1;
        CU_ASSERT_FATAL(p11n_transport_seal(peer, (const uint8_t *)"mirror", 6, f2,
            sizeof(f2), &n2) == P11N_OK);
        opened += p11n_transport_feed(t, f2, n2, &used, &m, &mlen) == 1
            && mlen == 6 && memcmp(m, "mirror", 6) == 0;
    }
    CU_ASSERT(equal);
    CU_ASSERT(opened == 2 * 501);
    p11n_transport_free(same);
    p11n_transport_free(peer);
}

void t_bolt8_run_case(json_t *c, p11n_key *local, const uint8_t *ck,
    const uint8_t *initiator_pub)
{
    int initiator = strcmp(json_string_value(json_object_get(c, "role")), "initiator") == 0;
    uint8_t pub[P11N_PUBKEY_LEN], *ls_pub = t_hex_field(c, "ls_pub", P11N_PUBKEY_LEN);
    size_t publen = 0;
    CU_ASSERT_FATAL(p11n_key_public(local, pub, sizeof(pub), &publen) == P11N_OK);
    CU_ASSERT(publen == P11N_PUBKEY_LEN && memcmp(pub, ls_pub, P11N_PUBKEY_LEN) == 0);
    free(ls_pub);
    uint8_t *eph = t_hex_field(c, "e_priv", 32);
    uint8_t *rs = initiator ? t_hex_field(c, "rs_pub", P11N_PUBKEY_LEN) : NULL;
    p11n_handshake_config cfg = { .size = sizeof(p11n_handshake_config),
        .pattern = "XK", .local = local, .test_ephemeral = eph,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])rs, .nremote = initiator ? 1 : 0,
    };
    p11n_handshake *hs = NULL;
    int rc = initiator ? p11n_handshake_initiate(&cfg, &hs) : p11n_handshake_respond(&cfg, &hs);
    CU_ASSERT_FATAL(rc == P11N_OK);
    memset(eph, 0, 32);   /* the config was copied */

    int last = P11N_OK, finished = 0;
    size_t i;
    json_t *step;
    json_array_foreach(json_object_get(c, "steps"), i, step) {
        const char *w = json_string_value(json_object_get(step, "write"));
        const char *r = json_string_value(json_object_get(step, "read"));
        const char *e = json_string_value(json_object_get(step, "error"));
        json_t *keys = json_object_get(step, "keys");
        if (w != NULL) {
            size_t wlen, outlen = 0;
            uint8_t *want = t_unhex(w, &wlen), out[MAX_ACT];
            CU_ASSERT(p11n_handshake_want(hs) == 0);
            CU_ASSERT_FATAL(p11n_handshake_write(hs, out, sizeof(out), &outlen) == P11N_OK);
            CU_ASSERT(outlen == wlen && memcmp(out, want, wlen) == 0);
            free(want);
        } else if (r != NULL) {
            size_t rlen;
            uint8_t *in = t_unhex(r, &rlen);
            size_t want = p11n_handshake_want(hs);
            CU_ASSERT(want == 50 || want == 66);
            last = p11n_handshake_read(hs, in, rlen);
            free(in);
        } else if (e != NULL) {
            CU_ASSERT(last == t_bolt8_error(e));
            /* Dead from now on. */
            uint8_t out[MAX_ACT];
            size_t outlen;
            p11n_transport *t = NULL;
            CU_ASSERT(p11n_handshake_want(hs) == 0);
            CU_ASSERT(p11n_handshake_write(hs, out, sizeof(out), &outlen) == P11N_ERR_STATE);
            CU_ASSERT(p11n_handshake_read(hs, out, 50) == P11N_ERR_STATE);
            CU_ASSERT(p11n_handshake_finish(hs, &t) == P11N_ERR_STATE && t == NULL);
            CU_ASSERT(!p11n_handshake_done(hs));
            finished = 1;
        } else if (keys != NULL) {
            CU_ASSERT_FATAL(last == P11N_OK);
            CU_ASSERT(p11n_handshake_done(hs));
            uint8_t *sk = t_hex_field(keys, "sk", 32), *rk = t_hex_field(keys, "rk", 32);
            uint8_t peer[P11N_PUBKEY_LEN];
            CU_ASSERT(p11n_handshake_remote(hs, peer) == P11N_OK);
            if (initiator) {
                CU_ASSERT(memcmp(peer, rs, P11N_PUBKEY_LEN) == 0);
            } else {
                CU_ASSERT(memcmp(peer, initiator_pub, P11N_PUBKEY_LEN) == 0);
            }
            p11n_transport *t = NULL;
            CU_ASSERT_FATAL(p11n_handshake_finish(hs, &t) == P11N_OK);
            t_bolt8_check_keys(t, ck, sk, rk);
            p11n_transport *again = NULL;
            CU_ASSERT(p11n_handshake_finish(hs, &again) == P11N_ERR_STATE && again == NULL);
            p11n_transport_free(t);
            free(sk);
            free(rk);
            finished = 1;
        }
    }
    CU_ASSERT(finished);
    p11n_handshake_free(hs);
    free(eph);
    free(rs);
}
