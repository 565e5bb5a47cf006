/* Fuzz the SOCKS5 client with arbitrary proxy replies.
 *
 * Input: one configuration byte, then segments, each a length byte and
 * that many bytes (the last may be short); a segment is what one read()
 * from the proxy returns. Bits of the configuration byte pick the target
 * address type, whether credentials are offered, and how our output is
 * drained.
 *
 * Besides memory safety, the harness checks the contract: a segment fed
 * whole and the same segment fed one byte at a time reach the same result,
 * consume the same bytes and report the same bound address; a feed that
 * asks for more input has consumed everything it was given. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "socks5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

typedef struct {
    int rc;
    size_t consumed; /* total over all segments */
    int phase;
    uint8_t out[4096];
    size_t out_len;  /* everything we sent, capped */
} result;

static void drain(p11n_socks5 *st, size_t piece, result *r)
{
    const uint8_t *p;
    size_t n;
    for (;;) {
        p11n_socks5_output(st, &p, &n);
        if (n == 0)
            return;
        CHECK(n <= P11N_SOCKS5_OUT_MAX);
        size_t take = n < piece ? n : piece;
        if (r->out_len + take <= sizeof(r->out)) {
            memcpy(r->out + r->out_len, p, take);
            r->out_len += take;
        }
        p11n_socks5_consumed(st, take);
    }
}

/* Feed one segment, whole or byte by byte; returns the feed result. */
static int feed_segment(p11n_socks5 *st, const uint8_t *seg, size_t len, int bytewise,
    size_t *consumed)
{
    size_t off = 0;
    int rc = p11n_socks5_feed(st, seg, 0, consumed);
    CHECK(*consumed == 0);
    if (rc != 0)
        return rc;
    while (off < len) {
        size_t give = bytewise ? 1 : len - off;
        size_t used = (size_t)-1;
        rc = p11n_socks5_feed(st, seg + off, give, &used);
        CHECK(used <= give);
        off += used;
        if (rc != 0)
            break;
        CHECK(used == give);
    }
    *consumed = off;
    return rc;
}

static void run(const uint8_t *data, size_t size, int bytewise, p11n_socks5 *st, result *r)
{
    static const char *hosts[] = { "127.0.0.1", "::1", "peer.example.onion", "localhost" };
    uint8_t cfg = data[0];
    const char *host = hosts[cfg & 3];
    int creds = (cfg >> 2) & 1;
    size_t piece = ((cfg >> 3) & 7) + 1;
    size_t off = 1;

    memset(r, 0, sizeof(*r));
    int rc = p11n_socks5_init(st, host, 1080, creds ? "user" : NULL, creds ? "pass" : NULL);
    CHECK(rc == P11N_OK);

    r->rc = 0;
    while (off < size && r->rc == 0) {
        size_t len = data[off++];
        if (len > size - off)
            len = size - off;
        size_t used;
        drain(st, piece, r);
        r->rc = feed_segment(st, data + off, len, bytewise, &used);
        r->consumed += used;
        off += len;
    }
    r->phase = p11n_socks5_phase(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    p11n_socks5 a, b;
    result ra, rb;

    if (size < 1)
        return 0;
    run(data, size, 0, &a, &ra);
    run(data, size, 1, &b, &rb);

    CHECK(ra.rc == rb.rc && ra.consumed == rb.consumed && ra.phase == rb.phase);
    CHECK(ra.out_len == rb.out_len && memcmp(ra.out, rb.out, ra.out_len) == 0);
    CHECK(p11n_socks5_phase_text(&a) != NULL);

    if (ra.rc < 0) {
        CHECK(ra.phase == P11N_SOCKS5_FAILED && p11n_socks5_error(&a) == ra.rc);
        CHECK(strcmp(p11n_strerror(ra.rc), "unknown error") != 0);
    } else if (ra.rc == 1) {
        uint8_t ta, tb;
        const uint8_t *aa, *ab;
        size_t la, lb;
        uint16_t pa, pb;
        char text[300];
        CHECK(p11n_socks5_bound(&a, &ta, &aa, &la, &pa) == P11N_OK);
        CHECK(p11n_socks5_bound(&b, &tb, &ab, &lb, &pb) == P11N_OK);
        CHECK(ta == tb && la == lb && pa == pb && memcmp(aa, ab, la) == 0);
        CHECK(p11n_socks5_bound_text(&a, text, sizeof(text)) == P11N_OK);
        CHECK(strlen(text) < sizeof(text));
        CHECK(p11n_socks5_eof(&a) == 0);
    } else {
        /* Out of input mid-negotiation: the proxy closing now is an error. */
        CHECK(p11n_socks5_eof(&a) == P11N_ERR_SOCKS_MALFORMED);
    }
    /* Credentials never linger once the conversation is over or failed.
     * (Only our own buffers are searched: the proxy's bytes may say
     * anything.) */
    if (ra.rc != 0) {
        static const uint8_t zero[sizeof(a.pass)];
        CHECK(a.pass_len == 0 && memcmp(a.pass, zero, sizeof(zero)) == 0);
        CHECK(memmem(a.out, sizeof(a.out), "pass", 4) == NULL);
    }
    p11n_socks5_clear(&a);
    p11n_socks5_clear(&b);
    return 0;
}
