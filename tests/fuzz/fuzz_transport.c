/* Fuzz the transport's incremental decoder.
 *
 * Input: one configuration byte, two bytes naming a byte of the stream to
 * corrupt (big-endian; 0xffff: none) and the XOR mask, then messages, each
 * a length byte and that many bytes (the last may be short). The messages
 * are sealed into one stream, which is optionally corrupted and then fed
 * in chunks whose sizes come from the configuration byte.
 *
 * Checks besides memory safety: every message before the corrupted frame
 * comes out intact, in order; the corrupted frame is BAD_TAG and the
 * transport then refuses input; an intact stream yields every message; a
 * feed that returns 0 consumed all it was given. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define PROTO "Noise_XK_secp256k1_ChaChaPoly_SHA256"
#define MAX_MESSAGES 4096

static const uint8_t ck[32] = { 1 }, k1[32] = { 2 }, k2[32] = { 3 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint8_t cfg = data[0];
    size_t corrupt_at = (size_t)data[1] << 8 | data[2];
    uint8_t mask = data[3] != 0 ? data[3] : 1;
    data += 4;
    size -= 4;

    p11n_transport *snd = NULL, *rcv = NULL;
    CHECK(p11n_transport_new(PROTO, ck, k1, k2, &snd) == P11N_OK);
    CHECK(p11n_transport_new(PROTO, ck, k2, k1, &rcv) == P11N_OK);

    /* Seal: the stream, and where each message starts in the input. */
    size_t cap = size / 1 * (1 + P11N_FRAME_OVERHEAD) + P11N_FRAME_OVERHEAD;
    uint8_t *stream = malloc(cap);
    size_t *msg_off = malloc(MAX_MESSAGES * sizeof(size_t));
    size_t *msg_len = malloc(MAX_MESSAGES * sizeof(size_t));
    size_t *frame_end = malloc(MAX_MESSAGES * sizeof(size_t));
    CHECK(stream != NULL && msg_off != NULL && msg_len != NULL && frame_end != NULL);
    size_t nmsg = 0, slen = 0, pos = 0;
    while (pos < size && nmsg < MAX_MESSAGES) {
        size_t len = data[pos++];
        if (len > size - pos)
            len = size - pos;
        size_t flen = 0;
        CHECK(p11n_transport_seal(snd, data + pos, len, stream + slen, cap - slen, &flen)
            == P11N_OK);
        CHECK(flen == len + P11N_FRAME_OVERHEAD);
        msg_off[nmsg] = pos;
        msg_len[nmsg] = len;
        slen += flen;
        frame_end[nmsg++] = slen;
        pos += len;
    }

    /* The frame holding the corrupted byte, if any. */
    size_t bad_frame = nmsg;
    if (corrupt_at < slen) {
        stream[corrupt_at] ^= mask;
        for (bad_frame = 0; frame_end[bad_frame] <= corrupt_at; bad_frame++)
            ;
    }

    size_t got = 0, in = 0;
    uint64_t seed = cfg;
    int failed = 0;
    while (in < slen && !failed) {
        /* cfg 0: whole stream; otherwise chunk sizes from a tiny PRNG. */
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t chunk = cfg == 0 ? slen - in : 1 + (size_t)(seed >> 33) % (cfg * 4u);
        if (chunk > slen - in)
            chunk = slen - in;
        size_t off = 0;
        while (off < chunk) {
            const uint8_t *m = NULL;
            size_t mlen = 0, used = 0;
            int rc = p11n_transport_feed(rcv, stream + in + off, chunk - off, &used, &m, &mlen);
            CHECK(used <= chunk - off);
            off += used;
            if (rc == 1) {
                CHECK(got < bad_frame);
                CHECK(mlen == msg_len[got] && memcmp(m, data + msg_off[got], mlen) == 0);
                CHECK(in + off == frame_end[got]);
                got++;
            } else if (rc == 0) {
                CHECK(off == chunk);
            } else {
                CHECK(rc == P11N_ERR_BAD_TAG && got == bad_frame);
                const uint8_t *m2;
                size_t u2, l2;
                CHECK(p11n_transport_feed(rcv, stream, slen, &u2, &m2, &l2) == P11N_ERR_STATE);
                failed = 1;
                break;
            }
        }
        in += off;
    }
    CHECK(failed == (bad_frame < nmsg));
    CHECK(failed || got == nmsg);

    free(stream);
    free(msg_off);
    free(msg_len);
    free(frame_end);
    p11n_transport_free(snd);
    p11n_transport_free(rcv);
    return 0;
}
