#include "netutil.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <CUnit/CUnit.h>

#include "testutil.h"

/* ---- logs ---- */

static char *logbuf;
static size_t loglen, logcap;

void t_log_cb(int level, const char *line, void *name)
{
    char tmp[700];
    int n = snprintf(tmp, sizeof(tmp), "[%s] %d %s\n", (const char *)name, level, line);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(tmp))
        n = (int)sizeof(tmp) - 1;
    if (loglen + (size_t)n + 1 > logcap) {
        logcap = (logcap + (size_t)n + 1) * 2;
        if ((logbuf = realloc(logbuf, logcap)) == NULL)
            abort();
    }
    memcpy(logbuf + loglen, tmp, (size_t)n + 1);
    loglen += (size_t)n;
    if (getenv("P11N_TEST_VERBOSE"))
        fputs(tmp, stderr);
}

size_t t_log_mark(void)
{
    return loglen;
}

const char *t_log_text(void)
{
    return logbuf != NULL ? logbuf : "";
}

/* Calls fn on each line since `mark` (copied, without its newline) and
 * counts the lines it accepts; stop_at_first stops at the first. */
static size_t each_line(size_t mark, int (*fn)(const char *line, const void *arg), const void *arg,
    int stop_at_first)
{
    size_t hits = 0;
    if (logbuf == NULL)
        return 0;
    for (const char *p = logbuf + mark; *p != '\0';) {
        const char *end = strchr(p, '\n');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char line[700];
        if (len >= sizeof(line))
            len = sizeof(line) - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        if (fn(line, arg)) {
            hits++;
            if (stop_at_first)
                break;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return hits;
}

struct both {
    const char *a, *b;
};

static int has_both(const char *line, const void *arg)
{
    const struct both *w = arg;
    return strstr(line, w->a) != NULL && (w->b == NULL || strstr(line, w->b) != NULL);
}

int t_log_has(size_t mark, const char *a, const char *b)
{
    struct both w = { a, b };
    return each_line(mark, has_both, &w, 1) > 0;
}

size_t t_log_count(size_t mark, const char *a)
{
    struct both w = { a, NULL };
    return each_line(mark, has_both, &w, 0);
}

void t_log_free(void)
{
    free(logbuf);
    logbuf = NULL;
    loglen = logcap = 0;
}

/* ---- loop ---- */

#define PUMP_FDS 4096

void t_pump(p11n_ctx *const *ctxs, size_t n, int max_wait)
{
    static struct pollfd fds[PUMP_FDS];
    size_t start[16 + 1], total = 0;
    int wait = max_wait;
    if (n > 16)
        abort();
    for (size_t i = 0; i < n; i++) {
        start[i] = total;
        if (ctxs[i] == NULL)
            continue;
        size_t got = 0;
        int t = -1;
        if (p11n_poll_fds(ctxs[i], fds + total, PUMP_FDS - total, &got, &t) != P11N_OK)
            abort();
        total += got;
        if (t >= 0 && (wait < 0 || t < wait))
            wait = t;
    }
    start[n] = total;
    if (poll(fds, total, wait) < 0 && errno != EINTR)
        abort();
    for (size_t i = 0; i < n; i++)
        if (ctxs[i] != NULL)
            (void)p11n_process(ctxs[i], fds + start[i], start[i + 1] - start[i]);
}

p11n_ctx_options t_ctx_options(const char *name)
{
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.log = t_log_cb;
    o.log_arg = (void *)name;
    o.log_level = P11N_LOG_DEBUG;
    return o;
}

/* ---- one connection's view ---- */

void t_side_up(p11n_conn *c, const char *peer, void *arg)
{
    t_side *s = arg;
    s->established++;
    s->conn = c;
    snprintf(s->peer, sizeof(s->peer), "%s", peer);
}

static void side_msg(p11n_conn *c, const uint8_t *m, size_t len, void *arg)
{
    t_side *s = arg;
    s->msgs++;
    if (s->on_message != NULL)
        s->on_message(s, c, m, len);
    else if (s->echo && p11n_send(c, m, len) != P11N_OK)
        abort();
}

static void side_closed(p11n_conn *c, int reason, const char *text, int final, void *arg)
{
    t_side *s = arg;
    (void)c;
    s->closed++;
    s->reason = reason;
    s->final = final;
    s->unavailable += reason == P11N_ERR_TOKEN_UNAVAILABLE;
    snprintf(s->text, sizeof(s->text), "%s", text);
    if (final)
        s->conn = NULL;
}

const p11n_callbacks t_side_cb = { .established = t_side_up, .message = side_msg,
    .closed = side_closed };

p11n_conn *t_dial_with(p11n_ctx *ctx, const char *host, uint16_t port, const char *peer,
    p11n_connect_options *co, t_side *s)
{
    memset(s, 0, sizeof(*s));
    p11n_callbacks *cb = &co->ch.cb;
    if (cb->established == NULL)
        cb->established = t_side_cb.established;
    if (cb->message == NULL)
        cb->message = t_side_cb.message;
    if (cb->closed == NULL)
        cb->closed = t_side_cb.closed;
    cb->arg = s;
    p11n_conn *c = NULL;
    CU_ASSERT_FATAL(p11n_connect(ctx, host, port, peer, co, &c) == P11N_OK);
    s->conn = c;
    return c;
}

p11n_conn *t_dial(p11n_ctx *ctx, const char *host, uint16_t port, const char *peer,
    const char *pattern, p11n_key *key, t_side *s)
{
    p11n_connect_options co = P11N_CONNECT_OPTIONS_INIT;
    co.ch.key = key;
    co.ch.pattern = pattern;
    return t_dial_with(ctx, host, port, peer, &co, s);
}

p11n_listener *t_listen(p11n_ctx *ctx, p11n_key *key, const char *pattern,
    const char *const *ids, size_t nids, const p11n_callbacks *cb, void *arg)
{
    p11n_listen_options lo = P11N_LISTEN_OPTIONS_INIT;
    lo.ch.key = key;
    lo.ch.pattern = pattern;
    lo.ch.cb = *cb;
    lo.ch.cb.arg = arg;
    lo.peers = ids;
    lo.npeers = nids;
    p11n_listener *l = NULL;
    CU_ASSERT_FATAL(p11n_listen(ctx, "127.0.0.1", 0, &lo, &l) == P11N_OK);
    return l;
}

/* ---- DNS ---- */

enum { DNS_HEADER = 12, DNS_A = 1, DNS_AAAA = 28 };

/* The reply to query `q`, or 0 for a query it does not understand. */
static size_t dns_answer(const t_dns *d, const uint8_t *q, size_t qlen, uint8_t *r, size_t cap)
{
    if (qlen < DNS_HEADER || (q[4] << 8 | q[5]) != 1)
        return 0;
    char name[256];
    size_t nlen = 0, i = DNS_HEADER;
    while (i < qlen && q[i] != 0) {
        size_t l = q[i];
        if (l > 63 || i + 1 + l >= qlen || nlen + l + 2 > sizeof(name))
            return 0;
        if (nlen > 0)
            name[nlen++] = '.';
        memcpy(name + nlen, q + i + 1, l);
        nlen += l;
        i += 1 + l;
    }
    name[nlen] = '\0';
    size_t qend = i + 5; /* the root label, type, class */
    if (qend > qlen)
        return 0;
    unsigned type = (unsigned)(q[i + 1] << 8 | q[i + 2]);
    int match = strcasecmp(name, d->name) == 0;
    const uint8_t *addr = NULL;
    size_t alen = 0;
    if (match && type == DNS_A && d->has_a4) {
        addr = d->a4;
        alen = 4;
    } else if (match && type == DNS_AAAA && d->has_a6) {
        addr = d->a6;
        alen = 16;
    }
    if (qend + 12 + alen > cap)
        return 0;
    memcpy(r, q, qend);
    r[2] = (uint8_t)(0x84 | (q[2] & 0x01)); /* response, authoritative, RD copied */
    r[3] = match ? 0x80 : 0x83;             /* recursion available; NXDOMAIN */
    r[6] = 0;
    r[7] = addr != NULL;                    /* answers */
    memset(r + 8, 0, 4);                    /* no authority or additional records */
    if (addr == NULL)
        return qend;
    uint8_t *a = r + qend;
    const uint8_t rr[10] = { 0xc0, DNS_HEADER, (uint8_t)(type >> 8), (uint8_t)type, 0, 1,
        0, 0, 0, 60 };                     /* name = the question's, IN, TTL 60 s */
    memcpy(a, rr, sizeof(rr));
    a[10] = 0;
    a[11] = (uint8_t)alen;
    memcpy(a + 12, addr, alen);
    return qend + 12 + alen;
}

static void *dns_main(void *arg)
{
    t_dns *d = arg;
    uint8_t q[512], r[600];
    while (!__atomic_load_n(&d->stop, __ATOMIC_SEQ_CST)) {
        struct pollfd p = { .fd = d->fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            continue;
        struct sockaddr_storage from;
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(d->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n < DNS_HEADER)
            continue;
        unsigned seen = __atomic_fetch_add(&d->queries, 1, __ATOMIC_SEQ_CST);
        if (d->drop_first && seen == 0)
            continue;
        size_t len = dns_answer(d, q, (size_t)n, r, sizeof(r));
        if (len > 0)
            (void)sendto(d->fd, r, len, 0, (struct sockaddr *)&from, flen);
    }
    return NULL;
}

int t_dns_start(t_dns *d, const char *name, const char *ipv4, const char *ipv6,
    int drop_first)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->drop_first = drop_first;
    d->has_a4 = ipv4 != NULL && inet_pton(AF_INET, ipv4, d->a4) == 1;
    d->has_a6 = ipv6 != NULL && inet_pton(AF_INET6, ipv6, d->a6) == 1;
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t len = sizeof(sa);
    if (d->fd < 0 || bind(d->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0
        || getsockname(d->fd, (struct sockaddr *)&sa, &len) != 0) {
        perror("t_dns_start");
        if (d->fd >= 0)
            close(d->fd);
        return -1;
    }
    d->port = ntohs(sa.sin_port);
    if (pthread_create(&d->thread, NULL, dns_main, d) != 0) {
        fprintf(stderr, "t_dns_start: cannot start the thread\n");
        close(d->fd);
        return -1;
    }
    return 0;
}

void t_dns_stop(t_dns *d)
{
    __atomic_store_n(&d->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(d->thread, NULL);
    close(d->fd);
}

void t_soft_keys(uint64_t seed, p11n_key **keys, uint8_t (*pubs)[P11N_PUBKEY_LEN], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t priv[32];
        size_t len = 0;
        t_fill(priv, sizeof(priv), &seed);
        int rc = p11n_key_from_private("secp256k1", priv, sizeof(priv), &keys[i]);
        memset(priv, 0, sizeof(priv));
        if (rc != P11N_OK || p11n_key_public(keys[i], pubs[i], P11N_PUBKEY_LEN, &len) != P11N_OK)
            abort();
    }
}
