/* SOCKS5 state machine driven by scripted proxy conversations. Every
 * script runs three ways: replies fed whole, one byte at a time, and in
 * 3-byte pieces (our output is also taken one byte at a time in the
 * byte-wise run), and all three must agree. */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "socks5.h"
#include "testutil.h"

/* One exchange: the request we must emit (hex), then the proxy's reply
 * (hex; the last reply may carry trailing target bytes). */
typedef struct {
    const char *request;
    const char *reply;
} step;

typedef struct {
    int rc;            /* final feed result */
    size_t leftover;   /* bytes of the last reply left unconsumed */
    size_t steps_run;  /* steps whose request matched */
} outcome;

static const size_t chunkings[] = { (size_t)-1, 1, 3 };

/* Run a script; return the outcome. Asserts that each request matches and
 * that feed never leaves bytes unconsumed while asking for more. */
static outcome run(p11n_socks5 *st, const step *steps, size_t nsteps, size_t chunk)
{
    outcome o = { 0, 0, 0 };

    for (size_t i = 0; i < nsteps; i++) {
        size_t want_len, reply_len;
        uint8_t *want = t_unhex(steps[i].request, &want_len);
        uint8_t *reply = t_unhex(steps[i].reply, &reply_len);
        const uint8_t *p;
        size_t n;

        /* Collect the output the way a socket with small writes would. */
        uint8_t got[P11N_SOCKS5_OUT_MAX];
        size_t got_len = 0;
        for (;;) {
            p11n_socks5_output(st, &p, &n);
            if (n == 0)
                break;
            size_t take = n < chunk ? n : chunk;
            CU_ASSERT_FATAL(got_len + take <= sizeof(got));
            memcpy(got + got_len, p, take);
            got_len += take;
            p11n_socks5_consumed(st, take);
        }
        CU_ASSERT_EQUAL(got_len, want_len);
        CU_ASSERT(got_len == want_len && memcmp(got, want, want_len) == 0);
        if (got_len == want_len && memcmp(got, want, want_len) == 0)
            o.steps_run++;

        size_t off = 0;
        o.rc = 0;
        while (off < reply_len && o.rc == 0) {
            size_t len = reply_len - off < chunk ? reply_len - off : chunk;
            size_t used = 12345;
            o.rc = p11n_socks5_feed(st, reply + off, len, &used);
            CU_ASSERT(used <= len);
            if (o.rc == 0)
                CU_ASSERT_EQUAL(used, len);
            off += used;
        }
        o.leftover = reply_len - off;
        /* Once done, further target bytes are left alone. */
        if (o.rc == 1 && o.leftover > 0) {
            size_t used = 12345;
            CU_ASSERT_EQUAL(p11n_socks5_feed(st, reply + off, reply_len - off, &used), 1);
            CU_ASSERT_EQUAL(used, 0);
        }
        free(want);
        free(reply);
        if (o.rc != 0)
            break;
    }
    return o;
}

/* Run the script in every chunking and check all reach `rc` after
 * `nsteps_ok` matched requests, leaving `leftover` bytes. */
static void expect(const char *host, uint16_t port, const char *user, const char *pass,
    const step *steps, size_t nsteps, int rc, size_t leftover)
{
    for (size_t c = 0; c < sizeof(chunkings) / sizeof(chunkings[0]); c++) {
        p11n_socks5 st;
        CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, host, port, user, pass), P11N_OK);
        outcome o = run(&st, steps, nsteps, chunkings[c]);
        CU_ASSERT_EQUAL(o.rc, rc);
        CU_ASSERT_EQUAL(o.steps_run, nsteps);
        CU_ASSERT_EQUAL(o.leftover, leftover);
        if (rc < 0) {
            CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_FAILED);
            CU_ASSERT_EQUAL(p11n_socks5_error(&st), rc);
            /* Stays failed, consumes nothing, outputs nothing. */
            size_t used = 7;
            const uint8_t *p;
            size_t n;
            CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x00", 2, &used), rc);
            CU_ASSERT_EQUAL(used, 0);
            p11n_socks5_output(&st, &p, &n);
            CU_ASSERT_EQUAL(n, 0);
        } else if (rc == 1) {
            CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_DONE);
            CU_ASSERT_EQUAL(p11n_socks5_error(&st), 0);
        }
        p11n_socks5_clear(&st);
    }
}

#define NSTEPS(a) (sizeof(a) / sizeof((a)[0]))

/* Requests we send for a CONNECT to 127.0.0.1:8080. */
#define NOAUTH_OFFER "050100"
#define BOTH_OFFER "05020002"
#define CONNECT_V4 "050100017f0000011f90"
#define AUTH_REQ "0104" "75736572" "04" "70617373" /* user / pass */
#define OK_V4 "05000001" "0a000001" "0050"       /* bound 10.0.0.1:80 */

static void test_noauth_ipv4(void)
{
    const step s[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, OK_V4 } };
    expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), 1, 0);
}

static void test_userpass_ok(void)
{
    const step s[] = {
        { BOTH_OFFER, "0502" }, { AUTH_REQ, "0100" }, { CONNECT_V4, OK_V4 },
    };
    expect("127.0.0.1", 8080, "user", "pass", s, NSTEPS(s), 1, 0);
}

static void test_credentials_offered_noauth_chosen(void)
{
    /* The proxy may skip authentication even when we offer it. */
    const step s[] = { { BOTH_OFFER, "0500" }, { CONNECT_V4, OK_V4 } };
    expect("127.0.0.1", 8080, "user", "pass", s, NSTEPS(s), 1, 0);
}

static void test_auth_rejected(void)
{
    const step s[] = { { BOTH_OFFER, "0502" }, { AUTH_REQ, "0101" } };
    expect("127.0.0.1", 8080, "user", "pass", s, NSTEPS(s), P11N_ERR_SOCKS_AUTH, 0);
    const step s2[] = { { BOTH_OFFER, "0502" }, { AUTH_REQ, "01ff" } };
    expect("127.0.0.1", 8080, "user", "pass", s2, NSTEPS(s2), P11N_ERR_SOCKS_AUTH, 0);
}

static void test_no_acceptable_method(void)
{
    const step s[] = { { NOAUTH_OFFER, "05ff" } };
    expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), P11N_ERR_SOCKS_NO_METHOD, 0);
    const step s2[] = { { BOTH_OFFER, "05ff" } };
    expect("127.0.0.1", 8080, "user", "pass", s2, NSTEPS(s2), P11N_ERR_SOCKS_NO_METHOD, 0);
}

static void test_method_not_offered(void)
{
    /* 0x02 without credentials, and GSSAPI (0x01) which we never offer. */
    const step s[] = { { NOAUTH_OFFER, "0502" } };
    expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), P11N_ERR_SOCKS_MALFORMED, 0);
    const step s2[] = { { BOTH_OFFER, "0501" } };
    expect("127.0.0.1", 8080, "user", "pass", s2, NSTEPS(s2), P11N_ERR_SOCKS_MALFORMED, 0);
}

static void test_rep_codes(void)
{
    static const struct {
        const char *reply;
        int err;
    } reps[] = {
        { "05010001000000000000", P11N_ERR_SOCKS_GENERAL },
        { "05020001000000000000", P11N_ERR_SOCKS_NOT_ALLOWED },
        { "05030001000000000000", P11N_ERR_SOCKS_NET_UNREACH },
        { "05040001000000000000", P11N_ERR_SOCKS_HOST_UNREACH },
        { "05050001000000000000", P11N_ERR_SOCKS_REFUSED },
        { "05060001000000000000", P11N_ERR_SOCKS_TTL },
        { "05070001000000000000", P11N_ERR_SOCKS_COMMAND },
        { "05080001000000000000", P11N_ERR_SOCKS_ATYP },
        { "05090001000000000000", P11N_ERR_SOCKS_REPLY },
        { "05ff0001000000000000", P11N_ERR_SOCKS_REPLY },
    };
    for (size_t i = 0; i < NSTEPS(reps); i++) {
        const step s[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, reps[i].reply } };
        /* The failure is reported as soon as REP arrives; the rest of the
         * reply is not consumed (the connection is dead anyway). */
        expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), reps[i].err, 8);
    }
    CU_ASSERT_STRING_EQUAL(p11n_strerror(P11N_ERR_SOCKS_REFUSED),
        "connection refused by target, reported by proxy");
}

static void test_rep_reported_even_if_truncated(void)
{
    /* Some proxies send only VER REP before closing. */
    const step s[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, "0505" } };
    expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), P11N_ERR_SOCKS_REFUSED, 0);
}

static void test_wrong_versions(void)
{
    const step m[] = { { NOAUTH_OFFER, "0400" } };
    expect("127.0.0.1", 8080, NULL, NULL, m, NSTEPS(m), P11N_ERR_SOCKS_VERSION, 1);
    const step a[] = { { BOTH_OFFER, "0502" }, { AUTH_REQ, "0500" } };
    expect("127.0.0.1", 8080, "user", "pass", a, NSTEPS(a), P11N_ERR_SOCKS_VERSION, 1);
    const step c[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, "04000001000000000000" } };
    expect("127.0.0.1", 8080, NULL, NULL, c, NSTEPS(c), P11N_ERR_SOCKS_VERSION, 9);
    /* A SOCKS4 server answering our greeting. */
    const step s4[] = { { NOAUTH_OFFER, "005a" } };
    expect("127.0.0.1", 8080, NULL, NULL, s4, NSTEPS(s4), P11N_ERR_SOCKS_VERSION, 1);
}

static void test_bad_atyp_and_reserved(void)
{
    const char *bad[] = {
        "05000002000000000000", /* ATYP 2 does not exist */
        "05000000000000000000", /* ATYP 0 */
        "050000ff000000000000", /* ATYP 0xff */
        "05000101000000000000", /* RSV not zero */
    };
    for (size_t i = 0; i < NSTEPS(bad); i++) {
        const step s[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, bad[i] } };
        size_t left = i == 3 ? 7 : 6;
        expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), P11N_ERR_SOCKS_MALFORMED, left);
    }
}

/* Drive a no-auth CONNECT whose reply is `reply` to completion. */
static void connect_with_reply(p11n_socks5 *st, const char *reply, size_t chunk)
{
    const step s[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, reply } };
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(st, "127.0.0.1", 8080, NULL, NULL), P11N_OK);
    outcome o = run(st, s, NSTEPS(s), chunk);
    CU_ASSERT_EQUAL_FATAL(o.rc, 1);
}

static void test_bound_ipv4(void)
{
    for (size_t c = 0; c < NSTEPS(chunkings); c++) {
        p11n_socks5 st;
        uint8_t atyp;
        const uint8_t *addr;
        size_t alen;
        uint16_t port;
        char text[300];
        connect_with_reply(&st, "05000001c0a80102d431", chunkings[c]);
        CU_ASSERT_EQUAL(p11n_socks5_bound(&st, &atyp, &addr, &alen, &port), P11N_OK);
        CU_ASSERT_EQUAL(atyp, P11N_SOCKS5_ATYP_IPV4);
        CU_ASSERT_EQUAL(alen, 4);
        CU_ASSERT(memcmp(addr, "\xc0\xa8\x01\x02", 4) == 0);
        CU_ASSERT_EQUAL(port, 0xd431);
        CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, sizeof(text)), P11N_OK);
        CU_ASSERT_STRING_EQUAL(text, "192.168.1.2:54321");
    }
}

static void test_bound_ipv6(void)
{
    for (size_t c = 0; c < NSTEPS(chunkings); c++) {
        p11n_socks5 st;
        uint8_t atyp;
        const uint8_t *addr;
        size_t alen;
        uint16_t port;
        char text[300];
        connect_with_reply(&st, "05000004" "20010db8000000000000000000000001" "0102",
            chunkings[c]);
        CU_ASSERT_EQUAL(p11n_socks5_bound(&st, &atyp, &addr, &alen, &port), P11N_OK);
        CU_ASSERT_EQUAL(atyp, P11N_SOCKS5_ATYP_IPV6);
        CU_ASSERT_EQUAL(alen, 16);
        CU_ASSERT_EQUAL(addr[0], 0x20);
        CU_ASSERT_EQUAL(addr[15], 0x01);
        CU_ASSERT_EQUAL(port, 0x0102);
        CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, sizeof(text)), P11N_OK);
        CU_ASSERT_STRING_EQUAL(text, "[2001:db8::1]:258");
    }
}

static void test_bound_domain(void)
{
    for (size_t c = 0; c < NSTEPS(chunkings); c++) {
        p11n_socks5 st;
        uint8_t atyp;
        const uint8_t *addr;
        size_t alen;
        uint16_t port;
        char text[300];
        /* "proxy.lan" then a name with a newline, shown as '?' in logs */
        connect_with_reply(&st, "05000003" "09" "70726f78792e6c616e" "0438", chunkings[c]);
        CU_ASSERT_EQUAL(p11n_socks5_bound(&st, &atyp, &addr, &alen, &port), P11N_OK);
        CU_ASSERT_EQUAL(atyp, P11N_SOCKS5_ATYP_DOMAIN);
        CU_ASSERT_EQUAL(alen, 9);
        CU_ASSERT(memcmp(addr, "proxy.lan", 9) == 0);
        CU_ASSERT_EQUAL(port, 1080);
        CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, sizeof(text)), P11N_OK);
        CU_ASSERT_STRING_EQUAL(text, "proxy.lan:1080");

        connect_with_reply(&st, "05000003" "03" "610a62" "0001", chunkings[c]);
        CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, sizeof(text)), P11N_OK);
        CU_ASSERT_STRING_EQUAL(text, "a?b:1");
        /* Truncated to the caller's buffer, still terminated. */
        CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, 3), P11N_OK);
        CU_ASSERT_STRING_EQUAL(text, "a?");

        connect_with_reply(&st, "05000003" "00" "0001", chunkings[c]);
        CU_ASSERT_EQUAL(p11n_socks5_bound(&st, &atyp, &addr, &alen, &port), P11N_OK);
        CU_ASSERT_EQUAL(alen, 0);
        CU_ASSERT_EQUAL(port, 1);
    }
}

static void test_bound_before_done(void)
{
    p11n_socks5 st;
    uint8_t atyp;
    const uint8_t *addr;
    size_t alen;
    uint16_t port;
    char text[8] = "xxxxxxx";
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, NULL, NULL), P11N_OK);
    CU_ASSERT_EQUAL(p11n_socks5_bound(&st, &atyp, &addr, &alen, &port), P11N_ERR_STATE);
    CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, sizeof(text)), P11N_ERR_STATE);
    CU_ASSERT_STRING_EQUAL(text, "");
}

static void test_target_bytes_left_unconsumed(void)
{
    /* The proxy's reply and the target's first bytes in one read. */
    const step s[] = { { NOAUTH_OFFER, "0500" }, { CONNECT_V4, OK_V4 "00010203aabb" } };
    expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), 1, 6);
    const step d[] = {
        { NOAUTH_OFFER, "0500" },
        { CONNECT_V4, "05000003" "03" "616263" "0050" "ff" },
    };
    expect("127.0.0.1", 8080, NULL, NULL, d, NSTEPS(d), 1, 1);

    /* Exactly the reply's length is consumed from a single feed. */
    p11n_socks5 st;
    size_t len, used = 0;
    const uint8_t *p;
    size_t n;
    uint8_t *bytes = t_unhex("0500", &len);
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 8080, NULL, NULL), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, bytes, len, &used), 0);
    free(bytes);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    bytes = t_unhex("05000004" "00000000000000000000000000000001" "1f90" "5a5a5a", &len);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, bytes, len, &used), 1);
    CU_ASSERT_EQUAL(used, len - 3);
    free(bytes);
}

static void test_extra_bytes_before_our_request(void)
{
    /* Anything after the method reply arrives before our next request:
     * no conforming proxy does that. */
    const step s[] = { { NOAUTH_OFFER, "050005" } };
    expect("127.0.0.1", 8080, NULL, NULL, s, NSTEPS(s), P11N_ERR_SOCKS_MALFORMED, 1);

    /* Reply bytes while our own request is still being sent. */
    p11n_socks5 st;
    size_t used = 9;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 8080, NULL, NULL), P11N_OK);
    p11n_socks5_consumed(&st, 1);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x00", 2, &used),
        P11N_ERR_SOCKS_MALFORMED);
    CU_ASSERT_EQUAL(used, 0);
    /* An empty feed is harmless at any time. */
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 8080, NULL, NULL), P11N_OK);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, NULL, 0, &used), 0);
    CU_ASSERT_EQUAL(used, 0);
}

static void test_request_ipv6(void)
{
    const step s[] = {
        { NOAUTH_OFFER, "0500" },
        { "05010004" "00000000000000000000000000000001" "0016", OK_V4 },
    };
    expect("::1", 22, NULL, NULL, s, NSTEPS(s), 1, 0);
    const step s2[] = {
        { NOAUTH_OFFER, "0500" },
        { "05010004" "fe800000000000000000000000000abc" "ffff", OK_V4 },
    };
    expect("fe80::abc", 65535, NULL, NULL, s2, NSTEPS(s2), 1, 0);
}

static void test_request_domain(void)
{
    /* "peer.example.onion" (18 bytes) is passed unresolved. */
    const step s[] = {
        { NOAUTH_OFFER, "0500" },
        { "05010003" "12" "706565722e6578616d706c652e6f6e696f6e" "2382", OK_V4 },
    };
    expect("peer.example.onion", 9090, NULL, NULL, s, NSTEPS(s), 1, 0);
    /* Shorthand that inet_aton() would accept is not a literal here: it
     * goes to the proxy as a name, never silently reinterpreted. */
    const step s2[] = {
        { NOAUTH_OFFER, "0500" },
        { "05010003" "05" "312e322e33" "0001", OK_V4 },
    };
    expect("1.2.3", 1, NULL, NULL, s2, NSTEPS(s2), 1, 0);
}

static void test_hostname_limits(void)
{
    p11n_socks5 st;
    char host[257];
    const uint8_t *p;
    size_t n;

    memset(host, 'h', 255);
    host[255] = '\0';
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, host, 443, NULL, NULL), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    size_t used;
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x00", 2, &used), 0);
    p11n_socks5_output(&st, &p, &n);
    CU_ASSERT_EQUAL_FATAL(n, 4 + 1 + 255 + 2);
    CU_ASSERT_EQUAL(p[3], P11N_SOCKS5_ATYP_DOMAIN);
    CU_ASSERT_EQUAL(p[4], 255);
    CU_ASSERT_EQUAL(p[5], 'h');
    CU_ASSERT_EQUAL(p[259], 'h');
    CU_ASSERT_EQUAL(p[260], 0x01);
    CU_ASSERT_EQUAL(p[261], 0xbb);

    host[255] = 'h';
    host[256] = '\0';
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, host, 443, NULL, NULL), P11N_ERR_INVALID_ARG);
    p11n_socks5_output(&st, &p, &n);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "", 443, NULL, NULL), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, NULL, 443, NULL, NULL), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 0, NULL, NULL), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_init(NULL, "127.0.0.1", 1, NULL, NULL), P11N_ERR_INVALID_ARG);
}

static void test_credential_limits(void)
{
    p11n_socks5 st;
    char long_field[257], max_field[256];
    const uint8_t *p;
    size_t n;

    memset(long_field, 'u', 256);
    long_field[256] = '\0';
    memset(max_field, 'p', 255);
    max_field[255] = '\0';

    /* 256 bytes: refused before anything is output. */
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 80, long_field, "pw"),
        P11N_ERR_SOCKS_CREDENTIALS);
    p11n_socks5_output(&st, &p, &n);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(p11n_socks5_error(&st), P11N_ERR_SOCKS_CREDENTIALS);
    CU_ASSERT(memmem(&st, sizeof(st), "uuuuuuuu", 8) == NULL);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 80, "user", long_field),
        P11N_ERR_SOCKS_CREDENTIALS);
    p11n_socks5_output(&st, &p, &n);
    CU_ASSERT_EQUAL(n, 0);

    /* Incomplete or empty credentials (RFC 1929 needs 1-255 bytes each). */
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 80, "user", NULL), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 80, NULL, "pw"), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 80, "", "pw"), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_init(&st, "127.0.0.1", 80, "user", ""), P11N_ERR_INVALID_ARG);

    /* 255 bytes each: the longest request, emitted exactly. */
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, max_field, max_field), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    size_t used;
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x02", 2, &used), 0);
    p11n_socks5_output(&st, &p, &n);
    CU_ASSERT_EQUAL_FATAL(n, P11N_SOCKS5_OUT_MAX);
    CU_ASSERT_EQUAL(p[0], 0x01);
    CU_ASSERT_EQUAL(p[1], 255);
    CU_ASSERT_EQUAL(p[2 + 255], 255);
    CU_ASSERT_EQUAL(p[n - 1], 'p');
    p11n_socks5_clear(&st);
}

/* The password must not survive in the state once it has been sent, on
 * success and failure alike. */
static void test_password_wiped(void)
{
    static const char pass[] = "s3cret-Pa55word";
    const char *replies[] = { "0100", "0101" };
    for (size_t i = 0; i < NSTEPS(replies); i++) {
        p11n_socks5 st;
        const uint8_t *p;
        size_t n, used;
        CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, "alice", pass), P11N_OK);
        CU_ASSERT(memmem(&st, sizeof(st), pass, strlen(pass)) != NULL); /* test is live */
        p11n_socks5_output(&st, &p, &n);
        p11n_socks5_consumed(&st, n);
        CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x02", 2, &used), 0);
        /* Sent in two pieces, as a short write would. */
        p11n_socks5_output(&st, &p, &n);
        CU_ASSERT(memmem(p, n, pass, strlen(pass)) != NULL);
        p11n_socks5_consumed(&st, 10);
        p11n_socks5_output(&st, &p, &n);
        p11n_socks5_consumed(&st, n + 100); /* clamped */
        p11n_socks5_output(&st, &p, &n);
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT(memmem(&st, sizeof(st), pass, strlen(pass)) == NULL);
        CU_ASSERT(memmem(&st, sizeof(st), "s3cret", 6) == NULL);

        uint8_t *r = t_unhex(replies[i], &n);
        int rc = p11n_socks5_feed(&st, r, n, &used);
        free(r);
        CU_ASSERT_EQUAL(rc, i == 0 ? 0 : P11N_ERR_SOCKS_AUTH);
        CU_ASSERT(memmem(&st, sizeof(st), "s3cret", 6) == NULL);
    }

    /* Failing before authentication wipes the stored credentials. */
    p11n_socks5 st;
    const uint8_t *p;
    size_t n, used;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, "alice", pass), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\xff", 2, &used),
        P11N_ERR_SOCKS_NO_METHOD);
    CU_ASSERT(memmem(&st, sizeof(st), "s3cret", 6) == NULL);
    CU_ASSERT(memmem(&st, sizeof(st), "alice", 5) == NULL);
    /* No-auth chosen although offered: credentials dropped too. */
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, "alice", pass), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x00", 2, &used), 0);
    CU_ASSERT(memmem(&st, sizeof(st), "s3cret", 6) == NULL);
    /* Abandoning the state wipes everything. */
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, "alice", pass), P11N_OK);
    p11n_socks5_clear(&st);
    CU_ASSERT(memmem(&st, sizeof(st), "s3cret", 6) == NULL);
}

static void test_phase_texts(void)
{
    p11n_socks5 st;
    const uint8_t *p;
    size_t n, used;
    const char *seen[8];
    size_t nseen = 0;

    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, "alice", "hunter2"), P11N_OK);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_METHOD);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x02", 2, &used), 0);
    CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_AUTH);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x01\x00", 2, &used), 0);
    CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_CONNECT);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    CU_ASSERT_STRING_EQUAL(seen[nseen - 1], "waiting for the SOCKS5 CONNECT reply");
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st,
        (const uint8_t *)"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50", 10, &used), 1);
    seen[nseen++] = p11n_socks5_phase_text(&st);
    CU_ASSERT_EQUAL(p11n_socks5_eof(&st), 0); /* closing after success is not ours */
    CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_DONE);
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, NULL, NULL), P11N_OK);
    CU_ASSERT_EQUAL(p11n_socks5_eof(&st), P11N_ERR_SOCKS_MALFORMED);
    seen[nseen++] = p11n_socks5_phase_text(&st);

    for (size_t i = 0; i < nseen; i++) {
        CU_ASSERT(strstr(seen[i], "SOCKS5") != NULL);
        CU_ASSERT(strstr(seen[i], "alice") == NULL);
        CU_ASSERT(strstr(seen[i], "hunter2") == NULL);
        for (size_t j = 0; j < i; j++)
            CU_ASSERT(strcmp(seen[i], seen[j]) != 0); /* every phase is told apart */
    }
}

static void test_eof_mid_reply(void)
{
    p11n_socks5 st;
    const uint8_t *p;
    size_t n, used;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, NULL, NULL), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x00", 2, &used), 0);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\x00\x00\x01\x7f", 5, &used), 0);
    CU_ASSERT_EQUAL(used, 5);
    CU_ASSERT_EQUAL(p11n_socks5_eof(&st), P11N_ERR_SOCKS_MALFORMED);
    CU_ASSERT_EQUAL(p11n_socks5_error(&st), P11N_ERR_SOCKS_MALFORMED);
    /* An earlier, more specific error is kept. */
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, NULL, NULL), P11N_OK);
    p11n_socks5_output(&st, &p, &n);
    p11n_socks5_consumed(&st, n);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"\x05\xff", 2, &used),
        P11N_ERR_SOCKS_NO_METHOD);
    CU_ASSERT_EQUAL(p11n_socks5_eof(&st), P11N_ERR_SOCKS_NO_METHOD);
}

static void test_feed_bad_args(void)
{
    p11n_socks5 st;
    size_t used = 3;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", 80, NULL, NULL), P11N_OK);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, NULL, 1, &used), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT_EQUAL(p11n_socks5_feed(&st, (const uint8_t *)"x", 1, NULL), P11N_ERR_INVALID_ARG);
    /* Argument errors do not kill the state. */
    CU_ASSERT_EQUAL(p11n_socks5_phase(&st), P11N_SOCKS5_METHOD);
}

static const p11n_test tests[] = {
    { "no auth, IPv4 target", test_noauth_ipv4 },
    { "username/password accepted", test_userpass_ok },
    { "credentials offered, no auth chosen", test_credentials_offered_noauth_chosen },
    { "authentication rejected", test_auth_rejected },
    { "no acceptable method (0xFF)", test_no_acceptable_method },
    { "method we did not offer", test_method_not_offered },
    { "REP codes 1-8 and unknown", test_rep_codes },
    { "REP reported from a truncated reply", test_rep_reported_even_if_truncated },
    { "wrong version bytes", test_wrong_versions },
    { "bad ATYP and reserved byte", test_bad_atyp_and_reserved },
    { "bound IPv4", test_bound_ipv4 },
    { "bound IPv6", test_bound_ipv6 },
    { "bound domain", test_bound_domain },
    { "bound before done", test_bound_before_done },
    { "target bytes left unconsumed", test_target_bytes_left_unconsumed },
    { "bytes before our request", test_extra_bytes_before_our_request },
    { "CONNECT request IPv6", test_request_ipv6 },
    { "CONNECT request domain", test_request_domain },
    { "hostname limits", test_hostname_limits },
    { "credential limits", test_credential_limits },
    { "password wiped once sent", test_password_wiped },
    { "phase texts", test_phase_texts },
    { "EOF mid-reply", test_eof_mid_reply },
    { "feed argument errors", test_feed_bad_args },
    { NULL, NULL },
};

int main(void)
{
    return p11n_test_main("socks5", tests);
}
