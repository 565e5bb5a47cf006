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

struct seal_job {
    p11n_transport *t;
    const uint8_t *msg;
    size_t size;
    uint8_t *frame;
};

static int seal_run(void *arg, size_t count, double *secs)
{
    struct seal_job *j = arg;
    size_t outlen;
    double t0 = bench_now();
    for (size_t i = 0; i < count; i++)
        if (p11n_transport_seal(j->t, j->msg, j->size, j->frame, P11N_MAX_FRAME, &outlen)
            != P11N_OK)
            return -1;
    *secs = bench_now() - t0;
    return 0;
}

int bench_p11n_seal(const bench_opts *o, size_t size, bench_stat *out)
{
    struct seal_job j = { .size = size };
    uint8_t *msg = calloc(1, size), *frame = malloc(P11N_MAX_FRAME);
    int rc = -1;

    j.msg = msg;
    j.frame = frame;
    if (msg != NULL && frame != NULL && transport_pair_end(0, &j.t) == P11N_OK)
        rc = bench_mbps_reps(o, size, 50.0, seal_run, &j, out);
    p11n_transport_free(j.t);
    free(msg);
    free(frame);
    return rc;
}

/* ---- over loopback, two processes ---- */

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
static int tput_serve(int lfd, void *arg)
{
    int fd = bench_accept(lfd);
    p11n_transport *t = NULL;
    uint8_t *rx = malloc(RX_CHUNK), *frame = malloc(P11N_MAX_FRAME);
    size_t off = 0, len = 0;
    uint64_t req[2];
    int rc = -1;

    (void)arg;
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

struct tput_client {
    int fd;
    p11n_transport *t;
    const uint8_t *msg;
    size_t size;
    uint8_t *frame, *rx;
};

static int tput_rep(void *arg, size_t count, double *secs)
{
    struct tput_client *c = arg;
    uint64_t req[2] = { count, c->size };
    size_t off = 0, len = 0;
    double t0 = bench_now();

    if (send_msg(c->fd, c->t, req, sizeof(req), c->frame) != 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        if (send_msg(c->fd, c->t, c->msg, c->size, c->frame) != 0)
            return -1;
    if (recv_payload(c->fd, c->t, c->rx, &off, &len, 1, NULL, 0) != 0)
        return -1;
    *secs = bench_now() - t0;
    return 0;
}

int bench_p11n_throughput(const bench_opts *o, size_t size, bench_stat *out)
{
    bench_server srv = { .lfd = -1, .pid = -1 };
    uint8_t *msg = calloc(1, size), *frame = malloc(P11N_MAX_FRAME), *rx = malloc(RX_CHUNK);
    struct tput_client c = { .fd = -1, .msg = msg, .size = size, .frame = frame, .rx = rx };
    uint64_t stop[2] = { 0, 0 };
    int rc = -1;

    if (msg != NULL && frame != NULL && rx != NULL
        && bench_server_start(&srv, 16, tput_serve, NULL) == 0)
        c.fd = bench_connect(srv.port);
    if (c.fd >= 0 && transport_pair_end(0, &c.t) == P11N_OK
        && bench_mbps_reps(o, size, 20.0, tput_rep, &c, out) == 0)
        rc = send_msg(c.fd, c.t, stop, sizeof(stop), frame);
    p11n_transport_free(c.t);
    if (c.fd >= 0)
        close(c.fd);
    bench_server_stop(&srv);
    free(msg);
    free(frame);
    free(rx);
    return rc;
}
