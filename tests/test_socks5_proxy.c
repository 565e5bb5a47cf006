/* The SOCKS5 state machine against a real proxy (microsocks on 127.0.0.1),
 * driven over plain blocking sockets: the bytes it emits must satisfy a
 * real server, and it must understand the real server's answers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "p11noise.h"
#include "proxyutil.h"
#include "socks5.h"
#include "testutil.h"

/* Guards against a hang if something goes wrong (not timing assertions). */
static void set_guard_timeout(int fd)
{
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int send_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_exact(int fd, uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Called once the CONNECT request is out, before its reply is read. */
typedef void (*connect_hook)(void *arg);

/* Negotiate over `fd`. Returns 1 (tunnel up) or the error; bytes from the
 * target that came in the same read as the reply go to `early`. */
static int negotiate(int fd, p11n_socks5 *st, connect_hook hook, void *arg,
    uint8_t *early, size_t cap, size_t *early_len)
{
    uint8_t buf[512];
    int hooked = 0;
    *early_len = 0;
    for (;;) {
        const uint8_t *p;
        size_t n;
        p11n_socks5_output(st, &p, &n);
        if (n > 0) {
            if (send_all(fd, p, n) != 0)
                return P11N_ERR_IO;
            p11n_socks5_consumed(st, n);
        }
        if (!hooked && hook != NULL && p11n_socks5_phase(st) == P11N_SOCKS5_CONNECT) {
            hook(arg);
            hooked = 1;
        }
        ssize_t got = recv(fd, buf, sizeof(buf), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return P11N_ERR_IO;
        if (got == 0)
            return p11n_socks5_eof(st);
        size_t used;
        int rc = p11n_socks5_feed(st, buf, (size_t)got, &used);
        if (rc == 1) {
            size_t rest = (size_t)got - used;
            CU_ASSERT_FATAL(rest <= cap);
            memcpy(early, buf + used, rest);
            *early_len = rest;
        }
        if (rc != 0)
            return rc;
    }
}

/* The target side: accept the proxy's connection and speak first. */
typedef struct {
    int listener;
    int conn;
    const char *greeting;
} target;

static void target_accept_and_greet(void *arg)
{
    target *t = arg;
    t->conn = accept(t->listener, NULL, NULL);
    CU_ASSERT_FATAL(t->conn >= 0);
    set_guard_timeout(t->conn);
    CU_ASSERT(send_all(t->conn, (const uint8_t *)t->greeting, strlen(t->greeting)) == 0);
}

/* CONNECT through the proxy to a loopback listener and move bytes both
 * ways, including the target's greeting that may ride on the reply. */
static void round_trip(const t_proxy *px, const char *user, const char *pass)
{
    target t = { -1, -1, "target speaks first" };
    uint16_t tport;
    t.listener = t_listen_loopback(&tport);
    CU_ASSERT_FATAL(t.listener >= 0);
    set_guard_timeout(t.listener);

    int fd = t_connect_loopback(px->port);
    CU_ASSERT_FATAL(fd >= 0);
    set_guard_timeout(fd);

    p11n_socks5 st;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", tport, user, pass), P11N_OK);
    uint8_t early[512];
    size_t early_len;
    int rc = negotiate(fd, &st, target_accept_and_greet, &t, early, sizeof(early), &early_len);
    CU_ASSERT_EQUAL_FATAL(rc, 1);

    /* Bound address: microsocks reports its side of the target connection. */
    uint8_t atyp;
    const uint8_t *addr;
    size_t alen;
    uint16_t bport;
    char text[300];
    CU_ASSERT_EQUAL(p11n_socks5_bound(&st, &atyp, &addr, &alen, &bport), P11N_OK);
    CU_ASSERT_EQUAL(atyp, P11N_SOCKS5_ATYP_IPV4);
    CU_ASSERT_EQUAL(p11n_socks5_bound_text(&st, text, sizeof(text)), P11N_OK);

    /* The greeting, however it was split between the reply's read and
     * later reads. */
    size_t glen = strlen(t.greeting);
    uint8_t greeting[64];
    CU_ASSERT_FATAL(early_len <= glen);
    memcpy(greeting, early, early_len);
    CU_ASSERT(recv_exact(fd, greeting + early_len, glen - early_len) == 0);
    CU_ASSERT(memcmp(greeting, t.greeting, glen) == 0);

    uint8_t buf[4];
    CU_ASSERT(send_all(fd, (const uint8_t *)"ping", 4) == 0);
    CU_ASSERT(recv_exact(t.conn, buf, 4) == 0);
    CU_ASSERT(memcmp(buf, "ping", 4) == 0);
    CU_ASSERT(send_all(t.conn, (const uint8_t *)"pong", 4) == 0);
    CU_ASSERT(recv_exact(fd, buf, 4) == 0);
    CU_ASSERT(memcmp(buf, "pong", 4) == 0);

    close(fd);
    close(t.conn);
    close(t.listener);
}

/* Negotiate to `port` and return the outcome (the tunnel is dropped). */
static int attempt(const t_proxy *px, uint16_t port, const char *user, const char *pass)
{
    int fd = t_connect_loopback(px->port);
    CU_ASSERT_FATAL(fd >= 0);
    set_guard_timeout(fd);
    p11n_socks5 st;
    CU_ASSERT_EQUAL_FATAL(p11n_socks5_init(&st, "127.0.0.1", port, user, pass), P11N_OK);
    uint8_t early[512];
    size_t early_len;
    int rc = negotiate(fd, &st, NULL, NULL, early, sizeof(early), &early_len);
    close(fd);
    return rc;
}

static void test_noauth_round_trip(void)
{
    t_proxy px;
    CU_ASSERT_EQUAL_FATAL(t_proxy_start(&px, NULL, NULL), 0);
    round_trip(&px, NULL, NULL);
    /* Credentials offered to a proxy that wants none: it picks no-auth. */
    round_trip(&px, "user", "pass");
    t_proxy_stop(&px);
}

static void test_userpass_round_trip(void)
{
    t_proxy px;
    CU_ASSERT_EQUAL_FATAL(t_proxy_start(&px, "alice", "correct horse"), 0);
    round_trip(&px, "alice", "correct horse");
    t_proxy_stop(&px);
}

static void test_wrong_password(void)
{
    t_proxy px;
    uint16_t tport;
    int listener = t_listen_loopback(&tport);
    CU_ASSERT_FATAL(listener >= 0);
    CU_ASSERT_EQUAL_FATAL(t_proxy_start(&px, "alice", "correct horse"), 0);
    CU_ASSERT_EQUAL(attempt(&px, tport, "alice", "wrong horse"), P11N_ERR_SOCKS_AUTH);
    CU_ASSERT_EQUAL(attempt(&px, tport, "mallory", "correct horse"), P11N_ERR_SOCKS_AUTH);
    /* No credentials at all: the proxy accepts none of our methods. */
    CU_ASSERT_EQUAL(attempt(&px, tport, NULL, NULL), P11N_ERR_SOCKS_NO_METHOD);
    t_proxy_stop(&px);
    close(listener);
}

static void test_refused_target(void)
{
    t_proxy px;
    uint16_t closed = t_closed_port();
    CU_ASSERT_FATAL(closed != 0);
    CU_ASSERT_EQUAL_FATAL(t_proxy_start(&px, NULL, NULL), 0);
    int rc = attempt(&px, closed, NULL, NULL);
    /* microsocks maps the target's ECONNREFUSED to REP 0x05. */
    CU_ASSERT_EQUAL(rc, P11N_ERR_SOCKS_REFUSED);
    if (rc != P11N_ERR_SOCKS_REFUSED)
        fprintf(stderr, "refused target reported as %d (%s)\n", rc, p11n_strerror(rc));
    t_proxy_stop(&px);
}

static void test_proxy_gone(void)
{
    /* A proxy that dies leaves a port that refuses: the caller sees a
     * failed connect (SOCKS_UNREACHABLE is the caller's to report). */
    t_proxy px;
    CU_ASSERT_EQUAL_FATAL(t_proxy_start(&px, NULL, NULL), 0);
    uint16_t port = px.port;
    t_proxy_kill(&px);
    CU_ASSERT_EQUAL(px.pid, 0);
    CU_ASSERT(t_connect_loopback(port) < 0);
    t_proxy_stop(&px); /* harmless when already stopped */
}

static const p11n_test tests[] = {
    { "no auth: CONNECT and round trip", test_noauth_round_trip },
    { "username/password: CONNECT and round trip", test_userpass_round_trip },
    { "wrong password, no credentials", test_wrong_password },
    { "refused target", test_refused_target },
    { "proxy killed", test_proxy_gone },
    { NULL, NULL },
};

int main(void)
{
    if (!t_proxy_available()) {
        fprintf(stderr, "microsocks not found: install the Debian package microsocks\n");
        return 77; /* skipped */
    }
    return p11n_test_main("socks5 via microsocks", tests);
}
