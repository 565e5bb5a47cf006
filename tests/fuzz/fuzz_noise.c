/* Fuzz the generic Noise engine: protocol names, and handshakes of every
 * pattern whose messages are corrupted on the wire.
 *
 * Input: byte 0 = 0xff: the rest is a protocol name (must parse or be
 * UNSUPPORTED). Otherwise byte 0 picks the pattern, byte 1 the DH (bits
 * 0-1), cipher (bit 2), hash (bits 3-4) and a psk0 modifier (bit 5); then,
 * for each message as it crosses the wire, one byte of new length (0: keep
 * it, else truncate to byte - 1 or append) and XOR masks over its bytes.
 * Keys and ephemerals are fixed, so every input replays the same way.
 *
 * Checks besides memory safety: a reader's error is one the engine
 * documents for input and leaves it refusing everything; an untouched run
 * completes; a completed pair agrees on the handshake hash and talks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define BUF 1024

static const char *const dhs[] = { "secp256k1", "25519", "448", "secp256k1" };
static const char *const hashes[] = { "SHA256", "SHA512", "BLAKE2s", "BLAKE2b" };

static int input_error(int rc)
{
    return rc == P11N_ERR_SHORT_MESSAGE || rc == P11N_ERR_BAD_PUBKEY ||
        rc == P11N_ERR_BAD_CIPHERTEXT || rc == P11N_ERR_BAD_TAG;
}

static void fuzz_name(const uint8_t *data, size_t size)
{
    char name[256];
    size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
    memcpy(name, data, n);
    name[n] = '\0';
    p11n_noise *hs = NULL;
    int rc = p11n_noise_new(name, 1, &hs);
    CHECK(rc == P11N_OK || rc == P11N_ERR_UNSUPPORTED);
    CHECK((rc == P11N_OK) == (hs != NULL));
    p11n_noise_free(hs);
}

static p11n_key *key_of(const char *dh, size_t len, uint8_t fill)
{
    uint8_t priv[P11N_MAXPRIVLEN];
    memset(priv, fill, sizeof(priv));
    p11n_key *k = NULL;
    CHECK(p11n_key_from_private(dh, priv, len, &k) == P11N_OK);
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] == 0xff) {
        fuzz_name(data + 1, size - 1);
        return 0;
    }
    if (size < 2)
        return 0;
    size_t npat = 0;
    while (p11n_patterns[npat] != NULL)
        npat++;
    const p11n_pattern *pat = p11n_patterns[data[0] % npat];
    uint8_t cfg = data[1];
    char name[128];
    snprintf(name, sizeof(name), "Noise_%s%s_%s_%s_%s", pat->name, (cfg & 0x20) ? "psk0" : "",
        dhs[cfg & 3], (cfg & 4) ? "AESGCM" : "ChaChaPoly", hashes[(cfg >> 3) & 3]);
    data += 2;
    size -= 2;

    p11n_protocol p;
    CHECK(p11n_protocol_parse(name, &p) == P11N_OK);
    size_t privlen = p.dh->privlen;
    p11n_key *s[2] = { key_of(p.dh->name, privlen, 0x11), key_of(p.dh->name, privlen, 0x22) };
    p11n_noise *hs[2] = { NULL, NULL };
    static const uint8_t psk[32] = { 0x33 };
    for (int k = 0; k < 2; k++) {
        uint8_t e[P11N_MAXPRIVLEN];
        memset(e, k ? 0x55 : 0x44, sizeof(e));
        CHECK(p11n_noise_new(name, k == 0, &hs[k]) == P11N_OK);
        CHECK(p11n_noise_set_prologue(hs[k], (const uint8_t *)"fuzz", 4) == P11N_OK);
        CHECK(p11n_noise_set_local_static(hs[k], s[k]) == P11N_OK);
        CHECK(p11n_noise_set_ephemeral(hs[k], e, privlen) == P11N_OK);
        if (p.pre[1 - k] & P11N_PRE_S)
            CHECK(p11n_noise_set_remote_static(hs[k], s[1 - k]->pub, p.dh->publen) == P11N_OK);
        for (unsigned i = 0; i < p.npsk; i++)
            CHECK(p11n_noise_add_psk(hs[k], psk, sizeof(psk)) == P11N_OK);
        CHECK(p11n_noise_start(hs[k]) == P11N_OK);
    }

    int touched = 0, failed = 0;
    for (unsigned i = 0; i < p.nmsg && !failed; i++) {
        p11n_noise *tx = hs[i % 2], *rx = hs[1 - i % 2];
        uint8_t msg[BUF], got[BUF];
        size_t len, glen;
        CHECK(p11n_noise_write_message(tx, (const uint8_t *)"payload", 7, msg, sizeof(msg),
            &len) == P11N_OK);
        if (size > 0) {
            size_t want = data[0];
            data++;
            size--;
            if (want > 0 && want - 1 != len) {
                /* appended bytes are zeros, then masked like the rest */
                if (want - 1 > len)
                    memset(msg + len, 0, want - 1 - len);
                len = want - 1;
                touched = 1;
            }
            for (size_t j = 0; j < len && size > 0; j++, data++, size--) {
                msg[j] ^= data[0];
                touched |= data[0] != 0;
            }
        }
        int rc = p11n_noise_read_message(rx, msg, len, got, sizeof(got), &glen);
        if (rc != P11N_OK) {
            CHECK(input_error(rc));
            CHECK(touched);
            CHECK(p11n_noise_action(rx) == P11N_NOISE_FAILED);
            CHECK(p11n_noise_read_message(rx, msg, len, got, sizeof(got), &glen) ==
                P11N_ERR_STATE);
            failed = 1;
        }
    }
    if (!failed) {
        /* a corrupted message that still reads (an unencrypted payload,
         * a changed but valid key) must break the last authenticated
         * message; reaching the end means nothing that mattered changed */
        uint8_t h[2][P11N_MAXHASHLEN];
        size_t hl[2];
        p11n_cipher *send[2] = { NULL, NULL }, *recv[2] = { NULL, NULL };
        for (int k = 0; k < 2; k++) {
            CHECK(p11n_noise_handshake_hash(hs[k], h[k], sizeof(h[k]), &hl[k]) == P11N_OK);
            CHECK(p11n_noise_split(hs[k], &send[k], &recv[k]) == P11N_OK);
        }
        CHECK(hl[0] == hl[1] && memcmp(h[0], h[1], hl[0]) == 0);
        uint8_t ct[64], pt[64];
        size_t clen, plen;
        CHECK(p11n_cipher_encrypt(send[0], NULL, 0, (const uint8_t *)"x", 1, ct, sizeof(ct),
            &clen) == P11N_OK);
        CHECK(p11n_cipher_decrypt(recv[1], NULL, 0, ct, clen, pt, sizeof(pt), &plen) ==
            P11N_OK);
        CHECK(plen == 1 && pt[0] == 'x');
        for (int k = 0; k < 2; k++) {
            p11n_cipher_free(send[k]);
            p11n_cipher_free(recv[k]);
        }
    }
    for (int k = 0; k < 2; k++) {
        p11n_noise_free(hs[k]);
        p11n_key_free(s[k]);
    }
    return 0;
}
