/*
 * What a service manager and an operator use: a listener on a socket
 * someone else bound (p11n_listen_fd: refused unless listening, the
 * descriptor left alone on failure, owned on success), and the walk over
 * live connections with their snapshots (p11n_conn_foreach,
 * p11n_conn_info_get), checked against two real clients over loopback.
 */
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "netutil.h"
#include "p11noise.h"
#include "testutil.h"

enum { K_SERVER, K_CLIENT, K_CLIENT2, NKEYS };
static p11n_key *keys[NKEYS];
static uint8_t pubs[NKEYS][P11N_PUBKEY_LEN];
static p11n_ctx *ctxs[3];

static void setup(void)
{
    t_soft_keys(0x737461747573, keys, pubs, NKEYS);
    for (int i = 0; i < 3; i++) {
        p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
        o.log = t_log_cb;
        o.log_arg = (void *)(i == 0 ? "srv" : "cli");
        CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctxs[i]) == P11N_OK);
    }
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[0], pubs[K_CLIENT], "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[0], pubs[K_CLIENT2], "client2", 0) == P11N_OK);
    for (int i = 1; i < 3; i++)
        CU_ASSERT_FATAL(p11n_ceremony_input(ctxs[i], pubs[K_SERVER], "server", 0) == P11N_OK);
}

static void teardown(void)
{
    for (int i = 0; i < 3; i++) {
        p11n_ctx_free(ctxs[i]);
        ctxs[i] = NULL;
    }
    for (int i = 0; i < NKEYS; i++) {
        p11n_key_free(keys[i]);
        keys[i] = NULL;
    }
}

static int established;

static void on_established(p11n_conn *c, const char *peer, void *arg)
{
    (void)c;
    (void)peer;
    (void)arg;
    established++;
}

static void on_message(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    (void)arg;
    CU_ASSERT(p11n_send(c, msg, len) == P11N_OK);  /* the server echoes */
}

static int echoed;

static void on_echo(p11n_conn *c, const uint8_t *msg, size_t len, void *arg)
{
    (void)c;
    (void)msg;
    (void)len;
    (void)arg;
    echoed++;
}

/* Pump until *counter reaches want (a hang guard, not a timing check). */
static int pump_to(const int *counter, int want)
{
    time_t guard = time(NULL) + 60;
    while (*counter < want && time(NULL) < guard)
        t_pump(ctxs, 3, 50);
    return *counter >= want;
}

static p11n_listen_options server_opts(void)
{
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = keys[K_SERVER];
    lo.ch.cb.established = on_established;
    lo.ch.cb.message = on_message;
    return lo;
}

/* A bound IPv4 loopback stream socket, listening or not. */
static int bound_socket(int listening)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0
        || (listening && listen(fd, 8) < 0))
        abort();
    return fd;
}

static uint16_t port_of(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        abort();
    return ntohs(sa.sin_port);
}

static void test_listen_fd_refused(void)
{
    setup();
    p11n_listen_options lo = server_opts();
    p11n_listener *l = (p11n_listener *)&lo;
    int fd = bound_socket(0);
    CU_ASSERT(p11n_listen_fd(ctxs[0], fd, &lo, &l) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(l == NULL);
    CU_ASSERT(fcntl(fd, F_GETFD) >= 0);  /* still open: not taken */
    close(fd);
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    CU_ASSERT(p11n_listen_fd(ctxs[0], udp, &lo, &l) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(fcntl(udp, F_GETFD) >= 0);
    close(udp);
    /* Options refused: the listening socket stays the caller's, flags
     * untouched. */
    fd = bound_socket(1);
    p11n_listen_options bad = server_opts();
    bad.ch.key = NULL;
    CU_ASSERT(p11n_listen_fd(ctxs[0], fd, &bad, &l) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(fcntl(fd, F_GETFD) >= 0);
    CU_ASSERT((fcntl(fd, F_GETFL) & O_NONBLOCK) == 0);
    CU_ASSERT(p11n_listen_fd(ctxs[0], -1, &lo, &l) == P11N_ERR_INVALID_ARG);
    close(fd);
    teardown();
}

struct seen {
    int n;
    int calls;
    int stop_after;
    p11n_conn_info info[8];
};

static int collect(p11n_conn *c, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    if (s->n < 8) {
        s->info[s->n].size = sizeof(s->info[s->n]);
        CU_ASSERT(p11n_conn_info_get(c, &s->info[s->n]) == P11N_OK);
        s->n++;
    }
    return s->stop_after != 0 && s->calls >= s->stop_after ? 7 : 0;
}

static const p11n_conn_info *by_peer(const struct seen *s, const char *peer, int incoming)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->info[i].peer, peer) == 0 && s->info[i].incoming == incoming)
            return &s->info[i];
    return NULL;
}

static void test_listen_fd_and_status(void)
{
    setup();
    int fd = bound_socket(1);
    uint16_t port = port_of(fd);
    p11n_listen_options lo = server_opts();
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen_fd(ctxs[0], fd, &lo, &l) == P11N_OK);
    CU_ASSERT(p11n_listener_port(l) == port);
    CU_ASSERT(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CU_ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    struct seen none = { 0 };
    CU_ASSERT(p11n_conn_foreach(ctxs[0], collect, &none) == 0 && none.calls == 0);

    p11n_conn *c[2];
    for (int i = 0; i < 2; i++) {
        p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
        co.ch.key = keys[i == 0 ? K_CLIENT : K_CLIENT2];
        co.ch.cb.message = on_echo;
        co.ch.cb.established = on_established;
        CU_ASSERT_FATAL(p11n_connect(ctxs[1 + i], "127.0.0.1", port, "server", &co, &c[i])
            == P11N_OK);
    }
    CU_ASSERT_FATAL(pump_to(&established, 4));  /* both ends of both */
    static const uint8_t msg[] = "seventeen bytes!!";
    CU_ASSERT(p11n_send(c[0], msg, sizeof(msg)) == P11N_OK);
    CU_ASSERT(p11n_send(c[0], msg, sizeof(msg)) == P11N_OK);
    CU_ASSERT_FATAL(pump_to(&echoed, 2));

    struct seen s = { 0 };
    CU_ASSERT(p11n_conn_foreach(ctxs[0], collect, &s) == 0);
    CU_ASSERT_FATAL(s.n == 2);
    const p11n_conn_info *one = by_peer(&s, "client", 1), *two = by_peer(&s, "client2", 1);
    CU_ASSERT_FATAL(one != NULL && two != NULL);
    CU_ASSERT_STRING_EQUAL(one->state, "established");
    CU_ASSERT_STRING_EQUAL(one->peer_id, "client");
    CU_ASSERT(strncmp(one->addr, "127.0.0.1:", 10) == 0);
    CU_ASSERT(one->msgs_in == 2 && one->msgs_out == 2);
    CU_ASSERT(one->bytes_in == 2 * sizeof(msg) && one->bytes_out == 2 * sizeof(msg));
    CU_ASSERT(two->msgs_in == 0 && two->bytes_out == 0);
    CU_ASSERT(one->id != two->id);
    /* The client's side: outgoing, the server by its identifier. */
    struct seen cs = { 0 };
    CU_ASSERT(p11n_conn_foreach(ctxs[1], collect, &cs) == 0);
    CU_ASSERT(cs.n == 1 && by_peer(&cs, "server", 0) != NULL);
    CU_ASSERT(cs.info[0].msgs_out == 2 && cs.info[0].msgs_in == 2);

    /* A non-zero return stops the walk and is returned. */
    struct seen stop = { .stop_after = 1 };
    CU_ASSERT(p11n_conn_foreach(ctxs[0], collect, &stop) == 7 && stop.calls == 1);

    /* An older caller's smaller structure: only what it knows is
     * written, `size` kept. */
    unsigned char small[offsetof(p11n_conn_info, state) + 16];
    memset(small, 0xee, sizeof(small));
    size_t sz = offsetof(p11n_conn_info, state);
    memcpy(small, &sz, sizeof(sz));
    CU_ASSERT(p11n_conn_info_get(c[0], (p11n_conn_info *)small) == P11N_OK);
    size_t back;
    memcpy(&back, small, sizeof(back));
    CU_ASSERT(back == sz);
    CU_ASSERT(small[sz] == 0xee);
    p11n_conn_info zero = { 0 };
    CU_ASSERT(p11n_conn_info_get(c[0], &zero) == P11N_ERR_INVALID_ARG);
    CU_ASSERT(p11n_conn_foreach(NULL, collect, &s) == P11N_ERR_INVALID_ARG);
    p11n_listener_close(l);
    teardown();
}

struct records {
    int n, listening, lines;
    uint64_t unix_ms;
    char text[160];
};

static void on_record(const p11n_log_record *r, void *arg)
{
    struct records *rs = arg;
    rs->n++;
    if (r->size >= sizeof(*r) && r->event != NULL && strcmp(r->event, "listening") == 0) {
        rs->listening++;
        rs->unix_ms = r->unix_ms;
        snprintf(rs->text, sizeof(rs->text), "%s", r->text);
        CU_ASSERT(r->level == P11N_LOG_INFO && r->conn_id == 0);
    }
}

static void on_line(int level, const char *line, void *arg)
{
    (void)level;
    (void)line;
    ((struct records *)arg)->lines++;
}

/* Records replace lines; the listener names its event; the default level
 * applies without a `log` callback. */
static void test_log_record(void)
{
    setup();
    struct records rs = { 0 };
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log_record = on_record;
    o.log = on_line;
    o.log_arg = &rs;
    p11n_ctx *ctx = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctx) == P11N_OK);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    p11n_listen_options lo = server_opts();
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_ceremony_input(ctx, pubs[K_CLIENT], "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    CU_ASSERT(rs.listening == 1 && rs.lines == 0);
    CU_ASSERT(rs.unix_ms >= before && rs.unix_ms < before + 3600 * 1000);
    CU_ASSERT(strncmp(rs.text, "listening on 127.0.0.1:", 23) == 0);
    p11n_ctx_free(ctx);
    CU_ASSERT(rs.n >= 2);  /* the listener's close too */

    /* Without a level, a record callback alone still gets the info lines. */
    struct records quiet = { 0 };
    p11n_ctx_options q = P11N_CTX_OPTIONS_INIT;
    q.log_record = on_record;
    q.log_arg = &quiet;
    CU_ASSERT_FATAL(p11n_ctx_new(&q, &ctx) == P11N_OK);
    CU_ASSERT_FATAL(p11n_ceremony_input(ctx, pubs[K_CLIENT], "client", 0) == P11N_OK);
    CU_ASSERT_FATAL(p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    CU_ASSERT(quiet.listening == 1);
    p11n_ctx_free(ctx);
    teardown();
}

int main(void)
{
    static const p11n_test tests[] = {
        { "p11n_listen_fd refuses what is not a listening socket, keeps it open",
            test_listen_fd_refused },
        { "p11n_listen_fd, then the connections walked and described", test_listen_fd_and_status },
        { "log records: event, time, text; instead of lines", test_log_record },
        { NULL, NULL },
    };
    int rc = p11n_test_main("netstatus", tests);
    t_log_free();
    return rc;
}
