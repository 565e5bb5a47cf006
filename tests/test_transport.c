/* BOLT #8 transport: vectors, rotation in both directions, the incremental
 * decoder under every chunking, tampering and size limits; the receive
 * buffer's trimming, growth and failed allocation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "p11noise.h"
#include "testutil.h"
#include "transport.h"

#define PROTO "Noise_XK_secp256k1_ChaChaPoly_SHA256"

static const uint8_t key_ck[32] = { 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5 };
static const uint8_t key_a[32] = { 0xa0, 0xa1, 0xa2, 0xa3, 0xa4 };
static const uint8_t key_b[32] = { 0xb0, 0xb1, 0xb2, 0xb3, 0xb4 };

/* A growable byte string: a simulated socket or a list of frames. */
typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const uint8_t *p, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    if (len > 0)
        memcpy(b->p + b->len, p, len);
    b->len += len;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Whether testutil's OpenSSL allocator hooks (count and fail allocations)
 * are in: installed first thing in main. */
static int alloc_hooked;

static p11n_transport *make(const uint8_t *ck, const uint8_t *sk, const uint8_t *rk)
{
    p11n_transport *t = NULL;
    CU_ASSERT_FATAL(p11n_transport_new(PROTO, ck, sk, rk, &t) == P11N_OK);
    CU_ASSERT_FATAL(t != NULL);
    return t;
}

/* Seal `msg` and append the frame to `out`. */
static void seal_to(p11n_transport *t, const uint8_t *msg, size_t len, buf_t *out)
{
    static uint8_t frame[P11N_MAX_FRAME];
    size_t flen = 0;
    CU_ASSERT_FATAL(p11n_transport_seal(t, msg, len, frame, sizeof(frame), &flen) == P11N_OK);
    CU_ASSERT_FATAL(flen == len + P11N_FRAME_OVERHEAD);
    buf_put(out, frame, flen);
}

/* A test message whose contents and length follow from its index. */
static size_t message_for(uint32_t dir, uint32_t i, uint8_t *out)
{
    uint64_t seed = ((uint64_t)dir << 32 | i) * 0x9e3779b97f4a7c15ULL + 1;
    size_t len = t_rand(&seed) % 300;
    t_fill(out, len, &seed);
    if (len >= 8) {
        memcpy(out, &dir, 4);
        memcpy(out + 4, &i, 4);
    }
    return len;
}

/* How a receiver splits its input into feed() calls. */
enum chunking { WHOLE, BYTEWISE, RANDOM };

/* Decode all of `in` and append each message, length-prefixed, to `out`.
 * Returns the number of messages. */
static size_t decode_all(p11n_transport *t, const uint8_t *in, size_t len,
    enum chunking how, uint64_t seed, buf_t *out)
{
    size_t pos = 0, count = 0, end = 0;
    while (pos < len) {
        if (end <= pos) {
            size_t step = how == WHOLE ? len - pos
                : how == BYTEWISE ? 1 : 1 + t_rand(&seed) % 200;
            end = pos + step < len ? pos + step : len;
        }
        const uint8_t *msg = NULL;
        size_t msglen = 0, used = 0;
        int rc = p11n_transport_feed(t, in + pos, end - pos, &used, &msg, &msglen);
        CU_ASSERT_FATAL(rc == 0 || rc == 1);
        CU_ASSERT_FATAL(used <= end - pos);
        pos += used;
        if (rc == 1) {
            uint32_t l = (uint32_t)msglen;
            buf_put(out, (const uint8_t *)&l, sizeof(l));
            buf_put(out, msg, msglen);
            count++;
        } else {
            CU_ASSERT_FATAL(pos == end);   /* 0 means all input was taken */
        }
    }
    return count;
}

static void test_vectors(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(t_vector_path("bolt8.json"), 0, &jerr);
    CU_ASSERT_FATAL(root != NULL);
    json_t *c = NULL, *cases = json_object_get(root, "cases");
    size_t i;
    json_t *item;
    json_array_foreach(cases, i, item) {
        const char *name = json_string_value(json_object_get(item, "name"));
        if (name != NULL && strcmp(name, "transport-message test") == 0)
            c = item;
    }
    CU_ASSERT_FATAL(c != NULL);

    size_t n;
    uint8_t *ck = t_unhex(json_string_value(json_object_get(c, "ck")), &n);
    CU_ASSERT_FATAL(n == 32);
    uint8_t *sk = t_unhex(json_string_value(json_object_get(c, "sk")), &n);
    CU_ASSERT_FATAL(n == 32);
    uint8_t *rk = t_unhex(json_string_value(json_object_get(c, "rk")), &n);
    CU_ASSERT_FATAL(n == 32);
    size_t ptlen;
    uint8_t *pt = t_unhex(json_string_value(json_object_get(c, "plaintext_hex")), &ptlen);
    json_t *outputs = json_object_get(c, "outputs");
    CU_ASSERT_FATAL(json_object_size(outputs) == 6);

    p11n_transport *snd = make(ck, sk, rk);
    p11n_transport *rcv = make(ck, rk, sk);   /* the peer: receives with sk */
    size_t checked = 0;
    for (int idx = 0; idx <= 1001; idx++) {
        uint8_t frame[64];
        size_t flen = 0;
        CU_ASSERT_FATAL(p11n_transport_seal(snd, pt, ptlen, frame, sizeof(frame), &flen)
            == P11N_OK);
        char key[16];
        snprintf(key, sizeof(key), "%d", idx);
        const char *want = json_string_value(json_object_get(outputs, key));
        if (want != NULL) {
            size_t wlen;
            uint8_t *w = t_unhex(want, &wlen);
            CU_ASSERT(wlen == flen && memcmp(w, frame, flen) == 0);
            free(w);
            checked++;
        }
        const uint8_t *msg = NULL;
        size_t msglen = 0, used = 0;
        CU_ASSERT_FATAL(p11n_transport_feed(rcv, frame, flen, &used, &msg, &msglen) == 1);
        CU_ASSERT(used == flen);
        CU_ASSERT(msglen == ptlen && memcmp(msg, pt, ptlen) == 0);
    }
    CU_ASSERT(checked == 6);

    p11n_transport_free(snd);
    p11n_transport_free(rcv);
    free(ck);
    free(sk);
    free(rk);
    free(pt);
    json_decref(root);
}

/*
 * Two peers exchange messages at different rates while each reads the
 * other's stream with a lag, so rotations of the two directions interleave
 * differently on each side. Every frame is also compared with one from a
 * send-only transport: a direction whose rotation depends on the other
 * direction would diverge from it.
 */
static void test_paired_rotation(void)
{
    p11n_transport *a = make(key_ck, key_a, key_b);
    p11n_transport *b = make(key_ck, key_b, key_a);
    p11n_transport *ref_a = make(key_ck, key_a, key_b);
    p11n_transport *ref_b = make(key_ck, key_b, key_a);
    buf_t ab = { 0 }, ba = { 0 }, ref = { 0 };
    size_t ab_read = 0, ba_read = 0;
    uint32_t a_sent = 0, b_sent = 0, a_got = 0, b_got = 0;
    uint64_t seed = 7;
    uint8_t m[300], want[300];

    for (uint32_t round = 0; round < 4800; round++) {
        size_t len = message_for(0, a_sent, m);
        seal_to(a, m, len, &ab);
        ref.len = 0;
        seal_to(ref_a, m, len, &ref);
        CU_ASSERT_FATAL(memcmp(ab.p + ab.len - ref.len, ref.p, ref.len) == 0);
        a_sent++;
        if (round % 3 != 0) {
            len = message_for(1, b_sent, m);
            seal_to(b, m, len, &ba);
            ref.len = 0;
            seal_to(ref_b, m, len, &ref);
            CU_ASSERT_FATAL(memcmp(ba.p + ba.len - ref.len, ref.p, ref.len) == 0);
            b_sent++;
        }
        /* Each side drains its input only now and then. */
        for (int side = 0; side < 2; side++) {
            if (t_rand(&seed) % 7 != 0)
                continue;
            p11n_transport *t = side == 0 ? b : a;
            buf_t *in = side == 0 ? &ab : &ba;
            size_t *rd = side == 0 ? &ab_read : &ba_read;
            uint32_t *got = side == 0 ? &b_got : &a_got;
            while (*rd < in->len) {
                const uint8_t *msg = NULL;
                size_t msglen = 0, used = 0;
                int rc = p11n_transport_feed(t, in->p + *rd, in->len - *rd, &used, &msg,
                    &msglen);
                CU_ASSERT_FATAL(rc == 1);
                *rd += used;
                size_t wl = message_for((uint32_t)side, *got, want);
                CU_ASSERT_FATAL(msglen == wl && memcmp(msg, want, wl) == 0);
                (*got)++;
            }
        }
    }
    /* Drain what is left. */
    buf_t rest = { 0 };
    CU_ASSERT(decode_all(b, ab.p + ab_read, ab.len - ab_read, WHOLE, 0, &rest)
        == a_sent - b_got);
    buf_free(&rest);
    CU_ASSERT(decode_all(a, ba.p + ba_read, ba.len - ba_read, WHOLE, 0, &rest)
        == b_sent - a_got);
    CU_ASSERT(a_sent == 4800 && b_sent == 3200);

    buf_free(&rest);
    buf_free(&ab);
    buf_free(&ba);
    buf_free(&ref);
    p11n_transport_free(a);
    p11n_transport_free(b);
    p11n_transport_free(ref_a);
    p11n_transport_free(ref_b);
}

/* A stream crossing rotations, with empty and maximum-size messages, yields
 * the same messages however it is cut into feed() calls. */
static void test_chunking(void)
{
    p11n_transport *snd = make(key_ck, key_a, key_b);
    buf_t stream = { 0 }, sent = { 0 };
    static uint8_t big[P11N_MAX_MESSAGE];
    uint64_t seed = 99;
    t_fill(big, sizeof(big), &seed);
    size_t nmsg = 0;
    for (uint32_t i = 0; i < 1100; i++) {
        uint8_t m[300];
        size_t len = message_for(2, i, m);
        const uint8_t *p = m;
        if (i % 400 == 5) {
            p = big;
            len = sizeof(big);
        } else if (i % 97 == 0) {
            len = 0;
        }
        seal_to(snd, p, len, &stream);
        uint32_t l = (uint32_t)len;
        buf_put(&sent, (const uint8_t *)&l, sizeof(l));
        buf_put(&sent, p, len);
        nmsg++;
    }

    const enum chunking hows[] = { WHOLE, BYTEWISE, RANDOM, RANDOM };
    for (size_t h = 0; h < sizeof(hows) / sizeof(hows[0]); h++) {
        p11n_transport *rcv = make(key_ck, key_b, key_a);
        buf_t got = { 0 };
        CU_ASSERT(decode_all(rcv, stream.p, stream.len, hows[h], 1000 + h, &got) == nmsg);
        CU_ASSERT(got.len == sent.len && memcmp(got.p, sent.p, sent.len) == 0);
        buf_free(&got);
        p11n_transport_free(rcv);
    }
    buf_free(&stream);
    buf_free(&sent);
    p11n_transport_free(snd);
}

/* Feeding several frames at once stops after the first message. */
static void test_one_message_per_call(void)
{
    p11n_transport *snd = make(key_ck, key_a, key_b);
    p11n_transport *rcv = make(key_ck, key_b, key_a);
    buf_t s = { 0 };
    seal_to(snd, (const uint8_t *)"one", 3, &s);
    seal_to(snd, (const uint8_t *)"two!", 4, &s);
    const uint8_t *msg = NULL;
    size_t msglen = 0, used = 0;
    CU_ASSERT(p11n_transport_feed(rcv, s.p, s.len, &used, &msg, &msglen) == 1);
    CU_ASSERT(used == 3 + P11N_FRAME_OVERHEAD);
    CU_ASSERT(msglen == 3 && memcmp(msg, "one", 3) == 0);
    size_t off = used;
    CU_ASSERT(p11n_transport_feed(rcv, s.p + off, s.len - off, &used, &msg, &msglen) == 1);
    CU_ASSERT(used == 4 + P11N_FRAME_OVERHEAD);
    CU_ASSERT(msglen == 4 && memcmp(msg, "two!", 4) == 0);
    /* No input: nothing happens. */
    CU_ASSERT(p11n_transport_feed(rcv, NULL, 0, &used, &msg, &msglen) == 0);
    CU_ASSERT(used == 0 && msg == NULL && msglen == 0);
    buf_free(&s);
    p11n_transport_free(snd);
    p11n_transport_free(rcv);
}

/* Every single-bit change of a frame is caught, and the transport then
 * refuses all use. The frame follows another so nonces are not zero. */
static void test_bit_flips(void)
{
    p11n_transport *snd = make(key_ck, key_a, key_b);
    buf_t s = { 0 };
    seal_to(snd, (const uint8_t *)"first", 5, &s);
    size_t first = s.len;
    seal_to(snd, (const uint8_t *)"second", 6, &s);
    size_t flen = s.len - first;
    size_t caught = 0;

    for (size_t bit = 0; bit < flen * 8; bit++) {
        p11n_transport *rcv = make(key_ck, key_b, key_a);
        const uint8_t *msg = NULL;
        size_t msglen = 0, used = 0;
        CU_ASSERT_FATAL(p11n_transport_feed(rcv, s.p, first, &used, &msg, &msglen) == 1);
        uint8_t frame[64];
        memcpy(frame, s.p + first, flen);
        frame[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        /* Fed in two pieces, so both the buffered and direct paths run. */
        size_t cut = (bit * 7) % flen;
        int rc = p11n_transport_feed(rcv, frame, cut, &used, &msg, &msglen);
        if (rc == 0) {
            CU_ASSERT(used == cut);
            rc = p11n_transport_feed(rcv, frame + cut, flen - cut, &used, &msg, &msglen);
        }
        CU_ASSERT(rc == P11N_ERR_BAD_TAG);
        CU_ASSERT(msg == NULL && msglen == 0);
        if (rc == P11N_ERR_BAD_TAG)
            caught++;
        CU_ASSERT(p11n_transport_feed(rcv, frame, flen, &used, &msg, &msglen)
            == P11N_ERR_STATE);
        CU_ASSERT(used == 0);
        uint8_t out[64];
        size_t outlen = 1;
        CU_ASSERT(p11n_transport_seal(rcv, (const uint8_t *)"x", 1, out, sizeof(out), &outlen)
            == P11N_ERR_STATE);
        CU_ASSERT(outlen == 0);
        p11n_transport_free(rcv);
    }
    CU_ASSERT(caught == flen * 8);
    buf_free(&s);
    p11n_transport_free(snd);
}

static void test_sizes(void)
{
    p11n_transport *snd = make(key_ck, key_a, key_b);
    p11n_transport *rcv = make(key_ck, key_b, key_a);
    static uint8_t msg[P11N_MAX_MESSAGE + 1];
    static uint8_t frame[P11N_MAX_FRAME + 1];
    uint64_t seed = 5;
    t_fill(msg, sizeof(msg), &seed);
    size_t flen = 0;

    /* Too large: refused, nothing written, the transport still works. */
    memset(frame, 0xee, sizeof(frame));
    flen = 1;
    CU_ASSERT(p11n_transport_seal(snd, msg, P11N_MAX_MESSAGE + 1, frame, sizeof(frame), &flen)
        == P11N_ERR_MESSAGE_TOO_LARGE);
    CU_ASSERT(flen == 0);
    int untouched = 1;
    for (size_t i = 0; i < sizeof(frame); i++)
        untouched &= frame[i] == 0xee;
    CU_ASSERT(untouched);
    CU_ASSERT(p11n_transport_seal(snd, msg, 10, frame, 10 + P11N_FRAME_OVERHEAD - 1, &flen)
        == P11N_ERR_BUFFER_TOO_SMALL);

    /* The largest message, then an empty one. */
    CU_ASSERT_FATAL(p11n_transport_seal(snd, msg, P11N_MAX_MESSAGE, frame, P11N_MAX_FRAME,
        &flen) == P11N_OK);
    CU_ASSERT(flen == P11N_MAX_FRAME);
    const uint8_t *out = NULL;
    size_t outlen = 0, used = 0;
    CU_ASSERT(p11n_transport_feed(rcv, frame, flen, &used, &out, &outlen) == 1);
    CU_ASSERT(used == flen && outlen == P11N_MAX_MESSAGE);
    CU_ASSERT(memcmp(out, msg, P11N_MAX_MESSAGE) == 0);

    CU_ASSERT_FATAL(p11n_transport_seal(snd, NULL, 0, frame, sizeof(frame), &flen) == P11N_OK);
    CU_ASSERT(flen == P11N_FRAME_OVERHEAD);
    CU_ASSERT(p11n_transport_feed(rcv, frame, flen, &used, &out, &outlen) == 1);
    CU_ASSERT(used == flen && outlen == 0 && out != NULL);

    p11n_transport_free(snd);
    p11n_transport_free(rcv);
}

/* Feed `len` bytes expecting exactly `want`'s frame to complete. */
static void feed_expect(p11n_transport *t, const uint8_t *in, size_t len,
    const uint8_t *want, size_t wantlen)
{
    const uint8_t *msg = NULL;
    size_t msglen = 0, used = 0;
    CU_ASSERT_FATAL(p11n_transport_feed(t, in, len, &used, &msg, &msglen) == 1);
    CU_ASSERT(used == len);
    CU_ASSERT_FATAL(msglen == wantlen);
    CU_ASSERT(memcmp(msg, want, wantlen) == 0);
}

/* Feed `len` bytes that end inside a frame. */
static void feed_partial(p11n_transport *t, const uint8_t *in, size_t len)
{
    const uint8_t *msg = NULL;
    size_t msglen = 0, used = 0;
    CU_ASSERT_FATAL(p11n_transport_feed(t, in, len, &used, &msg, &msglen) == 0);
    CU_ASSERT(used == len && msg == NULL);
}

/* Between messages the buffer goes, and the next message brings it back. */
static void test_trim_idle(void)
{
    p11n_transport *snd = make(key_ck, key_a, key_b);
    p11n_transport *rcv = make(key_ck, key_b, key_a);
    buf_t s = { 0 };
    CU_ASSERT(p11n_transport_trim(rcv) == 0);   /* nothing received: no buffer */
    seal_to(snd, (const uint8_t *)"hello", 5, &s);
    feed_expect(rcv, s.p, s.len, (const uint8_t *)"hello", 5);
    CU_ASSERT(p11n_transport_trim(rcv) == 1);
    CU_ASSERT(p11n_transport_trim(rcv) == 0);

    /* After a trim: a whole frame, then one split bytewise. */
    for (uint32_t i = 0; i < 2; i++) {
        uint8_t m[300];
        size_t len = message_for(7, i, m);
        s.len = 0;
        seal_to(snd, m, len, &s);
        if (i == 0) {
            feed_expect(rcv, s.p, s.len, m, len);
        } else {
            for (size_t k = 0; k + 1 < s.len; k++)
                feed_partial(rcv, s.p + k, 1);
            feed_expect(rcv, s.p + s.len - 1, 1, m, len);
        }
        CU_ASSERT(p11n_transport_trim(rcv) == 1);
    }
    buf_free(&s);
    p11n_transport_free(snd);
    p11n_transport_free(rcv);
}

/* A trim in the middle of a frame keeps what the frame still needs: part
 * of a body keeps the buffer; a partial header, or a decoded header with
 * none of its body yet, does not need it. Each frame then completes. */
static void test_trim_partial(void)
{
    p11n_transport *snd = make(key_ck, key_a, key_b);
    p11n_transport *rcv = make(key_ck, key_b, key_a);
    static uint8_t m[3000];
    uint64_t seed = 17;
    t_fill(m, sizeof(m), &seed);
    buf_t s = { 0 };
    const size_t cuts[] = {
        P11N_HEADER_LEN + 1000,   /* inside the body */
        P11N_HEADER_LEN - 5,      /* inside the header */
        P11N_HEADER_LEN,          /* header decoded, body not started */
    };
    const int freed[] = { 0, 1, 1 };

    /* A first message, so a buffer exists to be trimmed or kept. */
    seal_to(snd, m, 10, &s);
    feed_expect(rcv, s.p, s.len, m, 10);
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        size_t len = sizeof(m) - i;
        s.len = 0;
        seal_to(snd, m, len, &s);
        feed_partial(rcv, s.p, cuts[i]);
        CU_ASSERT(p11n_transport_trim(rcv) == freed[i]);
        CU_ASSERT(p11n_transport_trim(rcv) == 0);
        feed_expect(rcv, s.p + cuts[i], s.len - cuts[i], m, len);
    }
    buf_free(&s);
    p11n_transport_free(snd);
    p11n_transport_free(rcv);
}

/* Seal messages of the given sizes (bytes from `src`) into one stream. */
static void seal_sizes(p11n_transport *snd, const uint8_t *src, const size_t *sizes,
    size_t n, buf_t *stream)
{
    for (size_t i = 0; i < n; i++)
        seal_to(snd, src, sizes[i], stream);
}

/* The buffer grows in at most five steps to the largest body, and from
 * then on receiving allocates nothing. */
static void test_growth_then_no_alloc(void)
{
    CU_ASSERT_FATAL(alloc_hooked);
    p11n_transport *snd = make(key_ck, key_a, key_b);
    p11n_transport *rcv = make(key_ck, key_b, key_a);
    static uint8_t m[P11N_MAX_MESSAGE];
    uint64_t seed = 23;
    t_fill(m, sizeof(m), &seed);
    const size_t growing[] = { 10, 4080, 5000, 3, 10000, 20000, 40000, 100, P11N_MAX_MESSAGE };
    const size_t n = sizeof(growing) / sizeof(growing[0]);
    buf_t s = { 0 };
    seal_sizes(snd, m, growing, n, &s);

    unsigned long before = t_ossl_allocs;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t flen = growing[i] + P11N_FRAME_OVERHEAD;
        feed_expect(rcv, s.p + off, flen, m, growing[i]);
        off += flen;
    }
    /* 4096 (10, 4080), 8192 (5000), 16384, 32768, then the largest. */
    CU_ASSERT(t_ossl_allocs - before == 5);

    /* Steady state: random sizes, whole and split, allocate nothing.
     * Fewer than 500 frames, so no key rotation runs HKDF. */
    s.len = 0;
    size_t sizes[300];
    for (size_t i = 0; i < 300; i++)
        sizes[i] = t_rand(&seed) % (P11N_MAX_MESSAGE + 1);
    seal_sizes(snd, m, sizes, 300, &s);
    before = t_ossl_allocs;
    off = 0;
    for (size_t i = 0; i < 300; i++) {
        size_t flen = sizes[i] + P11N_FRAME_OVERHEAD;
        size_t cut = i % 2 ? flen / 2 : 0;
        if (cut > 0)
            feed_partial(rcv, s.p + off, cut);
        feed_expect(rcv, s.p + off + cut, flen - cut, m, sizes[i]);
        off += flen;
    }
    CU_ASSERT(t_ossl_allocs == before);
    buf_free(&s);
    p11n_transport_free(snd);
    p11n_transport_free(rcv);
}

/* A failed buffer allocation is NOMEM after the header is taken; the
 * transport stays usable and feeding the rest again delivers the frame.
 * Both the first allocation and a growth are failed. */
static void test_alloc_failure(void)
{
    CU_ASSERT_FATAL(alloc_hooked);
    p11n_transport *snd = make(key_ck, key_a, key_b);
    p11n_transport *rcv = make(key_ck, key_b, key_a);
    static uint8_t m[20000];
    uint64_t seed = 29;
    t_fill(m, sizeof(m), &seed);
    const size_t sizes[] = { 100, sizeof(m), 50 };
    buf_t s = { 0 };

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        s.len = 0;
        seal_to(snd, m, sizes[i], &s);
        const uint8_t *msg = (const uint8_t *)"x";
        size_t msglen = 1, used = 1;
        int fail = i < 2;   /* 100: first buffer; 20000: growth; 50: fits */
        t_ossl_fail_countdown = fail ? 1 : 0;
        int rc = p11n_transport_feed(rcv, s.p, s.len, &used, &msg, &msglen);
        CU_ASSERT(t_ossl_fail_countdown == 0);
        t_ossl_fail_countdown = 0;
        if (fail) {
            CU_ASSERT(rc == P11N_ERR_NOMEM);
            CU_ASSERT(used == P11N_HEADER_LEN);
            CU_ASSERT(msg == NULL && msglen == 0);
            CU_ASSERT(p11n_transport_trim(rcv) == 0);   /* no buffer left */
            feed_expect(rcv, s.p + used, s.len - used, m, sizes[i]);
        } else {
            CU_ASSERT(rc == 1 && used == s.len && msglen == sizes[i]);
        }
    }
    CU_ASSERT(p11n_transport_trim(rcv) == 1);
    buf_free(&s);
    p11n_transport_free(snd);
    p11n_transport_free(rcv);
}

static void test_bad_arguments(void)
{
    p11n_transport *t = (p11n_transport *)&t;
    CU_ASSERT(p11n_transport_new("Noise_XK_secp256k1_Nope_SHA256", key_ck, key_a, key_b, &t)
        == P11N_ERR_UNSUPPORTED);
    CU_ASSERT(t == NULL);
    CU_ASSERT(p11n_transport_new("Noise_XK_secp256k1_ChaChaPoly_SHA512", key_ck, key_a,
        key_b, &t) == P11N_ERR_UNSUPPORTED);
    CU_ASSERT(p11n_transport_new(PROTO, NULL, key_a, key_b, &t) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_transport_new(PROTO, key_ck, key_a, key_b, NULL) == P11N_ERR_INVALID_ARG);

    t = make(key_ck, key_a, key_b);
    uint8_t out[64];
    size_t n = 0;
    const uint8_t *msg;
    CU_ASSERT(p11n_transport_seal(t, NULL, 3, out, sizeof(out), &n) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_transport_feed(t, NULL, 3, &n, &msg, &n) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_transport_feed(t, out, 3, NULL, &msg, &n) == P11N_ERR_INVALID_ARG);
    p11n_transport_free(t);
    p11n_transport_free(NULL);
}

int main(void)
{
    static const p11n_test tests[] = {
        { "BOLT 8 transport vectors (sealing and receiving)", test_vectors },
        { "paired transports, rotations interleaved both ways", test_paired_rotation },
        { "whole, bytewise and random chunking agree", test_chunking },
        { "one message per feed call", test_one_message_per_call },
        { "every bit flip is BAD_TAG, then STATE", test_bit_flips },
        { "65535 ok, 65536 refused, empty ok", test_sizes },
        { "bad arguments", test_bad_arguments },
        { "trim between messages frees; feeding after a trim works", test_trim_idle },
        { "trim inside a frame keeps what it needs; the frame completes", test_trim_partial },
        { "buffer grows in five steps, then no allocation", test_growth_then_no_alloc },
        { "failed buffer allocation is NOMEM, a later feed succeeds", test_alloc_failure },
        { NULL, NULL },
    };
    alloc_hooked = t_hook_openssl_alloc();
    return p11n_test_main("transport", tests);
}
