/*
 * p11noise figures through the public API with the bench's own blocking
 * sockets: the sans-I/O transport and handshake driven exactly as the TLS
 * reference drives OpenSSL (one write per message, large reads), so the
 * two differ only in the protocol code.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11noise.h"
#include "bench.h"

#define PROTO "Noise_XK_secp256k1_ChaChaPoly_SHA256"
#define RX_CHUNK (1 << 18)

/* Both ends of one direction must agree: the client sends with k1 and
 * receives with k2, the server the other way round. */
static int transport_pair_end(int server, p11n_transport **out)
{
    uint8_t ck[32], k1[32], k2[32];
    memset(ck, 0xc1, sizeof(ck));
    memset(k1, 0x51, sizeof(k1));
    memset(k2, 0x52, sizeof(k2));
    return p11n_transport_new(PROTO, ck, server ? k2 : k1, server ? k1 : k2, out);
}

/* ---- in memory: the transport's own cost per message, one core ---- */

static int seal_run(p11n_transport *t, const uint8_t *msg, size_t size, uint8_t *frame,
    size_t count, double *secs)
{
    size_t outlen;
    double t0 = bench_now();
    for (size_t i = 0; i < count; i++)
        if (p11n_transport_seal(t, msg, size, frame, P11N_MAX_FRAME, &outlen) != P11N_OK)
            return -1;
    *secs = bench_now() - t0;
    return 0;
}

int bench_p11n_seal(const bench_opts *o, size_t size, bench_stat *out)
{
    p11n_transport *t = NULL;
    uint8_t *msg = calloc(1, size), *frame = malloc(P11N_MAX_FRAME);
    size_t count;
    double secs;
    int rc = -1;

    if (msg == NULL || frame == NULL || transport_pair_end(0, &t) != P11N_OK)
        goto done;
    count = bench_count_for(o, size, 50.0);
    if (seal_run(t, msg, size, frame, count, &secs) != 0)
        goto done;
    count = bench_count_for(o, size, (double)size * (double)count / secs / 1e6);
    for (int r = 0; r < o->reps; r++) {
        if (seal_run(t, msg, size, frame, count, &secs) != 0)
            goto done;
        bench_stat_add(out, (double)size * (double)count / secs / 1e6);
    }
    bench_stat_finish(out);
    rc = 0;
done:
    p11n_transport_free(t);
    free(msg);
    free(frame);
    return rc;
}

/* ---- over loopback, two processes ---- */

struct serve_arg {
    int lfd;
};

/* Receive messages until `want` payload bytes have arrived. Leftover bytes
 * of the next frame stay in `rx` (at *off, *len). */
static int recv_payload(int fd, p11n_transport *t, uint8_t *rx, size_t *off, size_t *len,
    uint64_t want, uint8_t *copy_to, size_t copy_cap)
{
    uint64_t got = 0;
    while (got < want) {
        if (*len == 0) {
            ssize_t n = read(fd, rx, RX_CHUNK);
            if (n <= 0)
                return -1;
            *off = 0;
            *len = (size_t)n;
        }
        while (*len > 0 && got < want) {
            const uint8_t *m;
            size_t used, mlen;
            int rc = p11n_transport_feed(t, rx + *off, *len, &used, &m, &mlen);
            *off += used;
            *len -= used;
            if (rc < 0)
                return -1;
            if (rc == 1) {
                if (copy_to != NULL && got + mlen <= copy_cap)
                    memcpy(copy_to + got, m, mlen);
                got += mlen;
            }
        }
    }
    return 0;
}

static int send_msg(int fd, p11n_transport *t, const void *msg, size_t len, uint8_t *frame)
{
    size_t flen;
    if (p11n_transport_seal(t, msg, len, frame, P11N_MAX_FRAME, &flen) != P11N_OK)
        return -1;
    return bench_write_all(fd, frame, flen);
}

/* Server: each request (count, size) is followed by count messages; it
 * answers with a one-byte message once all have been decrypted. */
static int tput_serve(void *arg)
{
    struct serve_arg *s = arg;
    int fd = bench_accept(s->lfd);
    p11n_transport *t = NULL;
    uint8_t *rx = malloc(RX_CHUNK), *frame = malloc(P11N_MAX_FRAME);
    size_t off = 0, len = 0;
    uint64_t req[2];
    int rc = -1;

    if (fd < 0 || rx == NULL || frame == NULL || transport_pair_end(1, &t) != P11N_OK)
        goto done;
    for (;;) {
        if (recv_payload(fd, t, rx, &off, &len, sizeof(req), (uint8_t *)req, sizeof(req)) != 0)
            goto done;
        if (req[0] == 0)
            break;
        if (recv_payload(fd, t, rx, &off, &len, req[0] * req[1], NULL, 0) != 0
            || send_msg(fd, t, "k", 1, frame) != 0)
            goto done;
    }
    rc = 0;
done:
    p11n_transport_free(t);
    free(rx);
    free(frame);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int tput_rep(int fd, p11n_transport *t, const uint8_t *msg, size_t size, size_t count,
    uint8_t *frame, uint8_t *rx, double *secs)
{
    uint64_t req[2] = { count, size };
    size_t off = 0, len = 0;
    double t0 = bench_now();

    if (send_msg(fd, t, req, sizeof(req), frame) != 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (send_msg(fd, t, msg, size, frame) != 0)
            return -1;
    if (recv_payload(fd, t, rx, &off, &len, 1, NULL, 0) != 0)
        return -1;
    *secs = bench_now() - t0;
    return 0;
}

int bench_p11n_throughput(const bench_opts *o, size_t size, bench_stat *out)
{
    struct serve_arg srv;
    uint16_t port;
    pid_t pid = -1;
    int fd = -1, rc = -1;
    p11n_transport *t = NULL;
    uint8_t *msg = calloc(1, size), *frame = malloc(P11N_MAX_FRAME), *rx = malloc(RX_CHUNK);
    uint64_t stop[2] = { 0, 0 };
    size_t count;
    double secs;

    srv.lfd = bench_listen(&port, 16);
    if (msg == NULL || frame == NULL || rx == NULL || srv.lfd < 0)
        goto done;
    pid = bench_fork(tput_serve, &srv);
    fd = pid > 0 ? bench_connect(port) : -1;
    if (fd < 0 || transport_pair_end(0, &t) != P11N_OK)
        goto done;
    count = bench_count_for(o, size, 20.0);
    if (tput_rep(fd, t, msg, size, count, frame, rx, &secs) != 0)
        goto done;
    count = bench_count_for(o, size, (double)size * (double)count / secs / 1e6);
    for (int r = 0; r < o->reps; r++) {
        if (tput_rep(fd, t, msg, size, count, frame, rx, &secs) != 0)
            goto done;
        bench_stat_add(out, (double)size * (double)count / secs / 1e6);
    }
    bench_stat_finish(out);
    rc = send_msg(fd, t, stop, sizeof(stop), frame);
done:
    p11n_transport_free(t);
    if (fd >= 0)
        close(fd);
    if (srv.lfd >= 0)
        close(srv.lfd);
    bench_child_stop(pid);
    free(msg);
    free(frame);
    free(rx);
    return rc;
}
