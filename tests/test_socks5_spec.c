/* Parsing "[USER:PASS@]HOST:PORT" proxy specs. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <string.h>

#include "p11noise.h"
#include "socks5_spec.h"
#include "testutil.h"

static void test_plain(void)
{
    p11n_socks5_proxy p;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_proxy_parse("127.0.0.1:1080", &p), P11N_OK);
    CU_ASSERT_STRING_EQUAL(p.host, "127.0.0.1");
    CU_ASSERT_EQUAL(p.port, 1080);
    CU_ASSERT_EQUAL(p.has_auth, 0);
    CU_ASSERT_STRING_EQUAL(p.user, "");

    CU_ASSERT_EQUAL_FATAL(p11n_socks5_proxy_parse("proxy.sync.lan:65535", &p), P11N_OK);
    CU_ASSERT_STRING_EQUAL(p.host, "proxy.sync.lan");
    CU_ASSERT_EQUAL(p.port, 65535);

    CU_ASSERT_EQUAL_FATAL(p11n_socks5_proxy_parse("[::1]:9050", &p), P11N_OK);
    CU_ASSERT_STRING_EQUAL(p.host, "::1");
    CU_ASSERT_EQUAL(p.port, 9050);
}

static void test_credentials(void)
{
    p11n_socks5_proxy p;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_proxy_parse("alice:s3cret@127.0.0.1:1", &p), P11N_OK);
    CU_ASSERT_EQUAL(p.has_auth, 1);
    CU_ASSERT_STRING_EQUAL(p.user, "alice");
    CU_ASSERT_STRING_EQUAL(p.pass, "s3cret");
    CU_ASSERT_STRING_EQUAL(p.host, "127.0.0.1");
    CU_ASSERT_EQUAL(p.port, 1);

    /* The password may hold ':' and '@'; the last '@' ends it. */
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_proxy_parse("bob:a:b@c@[fe80::1]:1080", &p), P11N_OK);
    CU_ASSERT_STRING_EQUAL(p.user, "bob");
    CU_ASSERT_STRING_EQUAL(p.pass, "a:b@c");
    CU_ASSERT_STRING_EQUAL(p.host, "fe80::1");

    p11n_socks5_proxy_clear(&p);
    CU_ASSERT(memmem(&p, sizeof(p), "a:b@c", 5) == NULL);
}

static void test_syntax_errors(void)
{
    static const char *bad[] = {
        "", "127.0.0.1", "127.0.0.1:", ":1080", "host:0", "host:65536", "host:12a",
        "host:123456", "host:-1", "host: 80", "::1:1080", "[::1]", "[::1]1080",
        "[::1:1080", "[]:1080", "[127.0.0.1]:1080", "@host:1", "user@host:1",
        ":pass@host:1", "user:@host:1", "user:pass@", "user:pass@host",
        /* a port is digits alone; brackets are for IPv6 alone */
        "proxy:+1080", "[proxy]:1080",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p11n_socks5_proxy p;
        int rc = p11n_socks5_proxy_parse(bad[i], &p);
        CU_ASSERT_EQUAL(rc, P11N_ERR_PARSE);
        if (rc != P11N_ERR_PARSE)
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
    }
    p11n_socks5_proxy p;
    CU_ASSERT_EQUAL(p11n_socks5_proxy_parse(NULL, &p), P11N_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(p11n_socks5_proxy_parse("h:1", NULL), P11N_ERR_INVALID_ARG);
}

/* HOST:PORT alone, as the command line uses it: the same host forms,
 * port 0 left to the caller, a host that does not fit said so. */
static void test_hostport(void)
{
    static const struct {
        const char *in, *host;
        uint16_t port;
        int rc;
    } rows[] = {
        { "127.0.0.1:1080", "127.0.0.1", 1080, P11N_OK },
        { "[::1]:0", "::1", 0, P11N_OK },
        { "node.example:65535", "node.example", 65535, P11N_OK },
        { "proxy:+1080", NULL, 0, P11N_ERR_PARSE },
        { "[proxy]:1080", NULL, 0, P11N_ERR_PARSE },
        { "::1:80", NULL, 0, P11N_ERR_PARSE },
        { "host:65536", NULL, 0, P11N_ERR_PARSE },
        { ":80", NULL, 0, P11N_ERR_PARSE },
        { "host", NULL, 0, P11N_ERR_PARSE },
        { "a-very-long-host-name:1", NULL, 0, P11N_ERR_BUFFER_TOO_SMALL },
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char host[16] = "";
        uint16_t port = 7;
        int rc = p11n_hostport_parse(rows[i].in, host, sizeof(host), &port);
        CU_ASSERT_EQUAL(rc, rows[i].rc);
        if (rc != rows[i].rc)
            fprintf(stderr, "%s: got %s\n", rows[i].in, p11n_strerror(rc));
        if (rows[i].rc == P11N_OK)
            CU_ASSERT(strcmp(host, rows[i].host) == 0 && port == rows[i].port);
    }
    char host[16];
    uint16_t port;
    CU_ASSERT_EQUAL(p11n_hostport_parse(NULL, host, sizeof(host), &port), P11N_ERR_INVALID_ARG);
    /* The proxy spec keeps refusing port 0. */
    p11n_socks5_proxy p;
    CU_ASSERT_EQUAL(p11n_socks5_proxy_parse("[::1]:0", &p), P11N_ERR_PARSE);
}

static int all_zero(const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

/* Parse "u..u:p..p@h..h:1" with fields of the given lengths. */
static int parse_sized(size_t ul, size_t pl, size_t hl, p11n_socks5_proxy *p)
{
    char spec[1024];
    size_t n = 0;
    memset(spec + n, 'u', ul);
    n += ul;
    spec[n++] = ':';
    memset(spec + n, 'p', pl);
    n += pl;
    spec[n++] = '@';
    memset(spec + n, 'h', hl);
    n += hl;
    memcpy(spec + n, ":1", 3);
    return p11n_socks5_proxy_parse(spec, p);
}

static void test_lengths(void)
{
    p11n_socks5_proxy p;
    CU_ASSERT_EQUAL_FATAL(parse_sized(255, 255, 255, &p), P11N_OK);
    CU_ASSERT_EQUAL(strlen(p.user), 255);
    CU_ASSERT_EQUAL(strlen(p.pass), 255);
    CU_ASSERT_EQUAL(strlen(p.host), 255);

    /* Over-long credentials get their own error; on any error nothing
     * is kept (a bad host after good credentials included). */
    CU_ASSERT_EQUAL(parse_sized(256, 1, 1, &p), P11N_ERR_SOCKS_CREDENTIALS);
    CU_ASSERT(all_zero(&p, sizeof(p)));
    CU_ASSERT_EQUAL(parse_sized(1, 256, 1, &p), P11N_ERR_SOCKS_CREDENTIALS);
    CU_ASSERT(all_zero(&p, sizeof(p)));
    CU_ASSERT_EQUAL(parse_sized(1, 1, 256, &p), P11N_ERR_PARSE);
    CU_ASSERT(all_zero(&p, sizeof(p)));
}

static const p11n_test tests[] = {
    { "host:port forms", test_plain },
    { "credentials", test_credentials },
    { "syntax errors", test_syntax_errors },
    { "field lengths", test_lengths },
    { "HOST:PORT alone (p11n_hostport_parse)", test_hostport },
    { NULL, NULL },
};

int main(void)
{
    return p11n_test_main("socks5 proxy spec", tests);
}
