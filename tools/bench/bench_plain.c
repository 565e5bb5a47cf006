/*
 * Ceilings without any protocol: plain TCP over loopback moving the same
 * messages with no encryption (what the kernel alone costs), and the same
 * connection pattern and act sizes as a handshake with no cryptography
 * (what connect, accept and the round trips alone cost).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define RX_CHUNK (1 << 18)

/* Requests (count, size) then count * size bytes; one byte back. */
int bench_plain_sink(int lfd, void *arg)
{
    int fd = bench_accept(lfd);
    uint8_t *buf = malloc(RX_CHUNK);
    uint64_t req[2];
    int rc = -1;

    (void)arg;
    if (fd < 0 || buf == NULL)
        goto done;
    while (bench_read_all(fd, req, sizeof(req)) == 0 && req[0] != 0) {
        uint64_t left = req[0] * req[1];
        while (left > 0) {
            ssize_t n = read(fd, buf, left < RX_CHUNK ? (size_t)left : RX_CHUNK);
            if (n <= 0)
                goto done;
            left -= (uint64_t)n;
        }
        if (bench_write_all(fd, "k", 1) != 0)
            goto done;
    }
    rc = 0;
done:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

int bench_plain_rep(int fd, const uint8_t *msg, size_t size, size_t count, double *secs)
{
    uint64_t req[2] = { count, size };
    uint8_t ack;
    double t0 = bench_now();

    if (bench_write_all(fd, req, sizeof(req)) != 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (bench_write_all(fd, msg, size) != 0)
            return -1;
    if (bench_read_all(fd, &ack, 1) != 0)
        return -1;
    *secs = bench_now() - t0;
    return 0;
}

struct plain_rep {
    int fd;
    const uint8_t *msg;
    size_t size;
};

static int plain_rep(void *arg, size_t count, double *secs)
{
    struct plain_rep *p = arg;
    return bench_plain_rep(p->fd, p->msg, p->size, count, secs);
}

int bench_plain_reps(const bench_opts *o, int fd, size_t size, bench_stat *out)
{
    uint8_t *msg = calloc(1, size);
    uint64_t stop[2] = { 0, 0 };
    struct plain_rep p = { fd, msg, size };
    int rc = -1;

    if (msg != NULL && bench_mbps_reps(o, size, 50.0, plain_rep, &p, out) == 0)
        rc = bench_write_all(fd, stop, sizeof(stop));
    free(msg);
    return rc;
}

int bench_sink_throughput(const bench_opts *o, size_t size,
    int (*open_fd)(void *arg, uint16_t sink_port), void *arg, bench_stat *out)
{
    bench_server srv;
    int fd, rc = -1;

    if (bench_server_start(&srv, 16, bench_plain_sink, NULL) != 0)
        return -1;
    fd = open_fd(arg, srv.port);
    if (fd >= 0) {
        rc = bench_plain_reps(o, fd, size, out);
        close(fd);
    }
    bench_server_stop(&srv);
    return rc;
}

static int plain_open(void *arg, uint16_t port)
{
    (void)arg;
    return bench_connect(port);
}

int bench_plain_throughput(const bench_opts *o, size_t size, bench_stat *out)
{
    return bench_sink_throughput(o, size, plain_open, NULL, out);
}

/* ---- a handshake's traffic without its cryptography ---- */

/* Act sizes, initiator first, 0-terminated. */
struct null_acts {
    const size_t *acts;
    uint16_t port;
};

/* Acts alternate between the sides; the server then sends the one-byte
 * confirmation message (a 35-byte frame), like the real handshake bench. */
static int null_serve(int lfd, void *arg)
{
    struct null_acts *a = arg;
    uint8_t buf[128] = { 0 };
    for (;;) {
        int fd = bench_accept(lfd), ok = 1;
        if (fd < 0)
            return -1;
        for (int i = 0; ok && a->acts[i] != 0; i++)
            ok = (i % 2 == 0 ? bench_read_all(fd, buf, a->acts[i])
                             : bench_write_all(fd, buf, a->acts[i])) == 0;
        if (ok)
            (void)bench_write_all(fd, buf, 1 + P11N_FRAME_OVERHEAD);
        close(fd);
    }
}

static int null_one(void *arg)
{
    struct null_acts *a = arg;
    uint8_t buf[128] = { 0 };
    int fd = bench_connect(a->port), ok = fd >= 0;
    for (int i = 0; ok && a->acts[i] != 0; i++)
        ok = (i % 2 == 0 ? bench_write_all(fd, buf, a->acts[i])
                         : bench_read_all(fd, buf, a->acts[i])) == 0;
    ok = ok && bench_read_all(fd, buf, 1 + P11N_FRAME_OVERHEAD) == 0;
    if (fd >= 0)
        bench_close_abort(fd);
    return ok ? 0 : -1;
}

int bench_null_handshakes(const bench_opts *o, const char *pattern, bench_stat *out)
{
    static const size_t kk[] = { 50, 50, 0 }, xk[] = { 50, 50, 66, 0 };
    struct null_acts a = { .acts = strcmp(pattern, "XK") == 0 ? xk : kk };
    bench_server srv;
    int rc;

    if (bench_server_start(&srv, 64, null_serve, &a) != 0)
        return -1;
    a.port = srv.port;
    rc = bench_rate_reps(o, null_one, &a, out);
    bench_server_stop(&srv);
    return rc;
}
