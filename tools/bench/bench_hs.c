/*
 * p11noise handshakes per second through the public sans-I/O handshake,
 * client and server in separate processes over 127.0.0.1, one handshake at
 * a time (as the TLS reference runs them). A handshake counts once the
 * client has read one transport message from the server: by then both
 * sides have authenticated each other, as in the TLS figure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "p11noise.h"
#include "bench.h"

/* Drive a handshake to completion over a blocking socket. */
static int drive(int fd, p11n_handshake *hs)
{
    uint8_t buf[128];
    while (!p11n_handshake_done(hs)) {
        size_t want = p11n_handshake_want(hs), len;
        if (want == 0) {
            if (p11n_handshake_write(hs, buf, sizeof(buf), &len) != P11N_OK
                || bench_write_all(fd, buf, len) != 0)
                return -1;
        } else if (want > sizeof(buf) || bench_read_all(fd, buf, want) != 0
                   || p11n_handshake_read(hs, buf, want) != P11N_OK) {
            return -1;
        }
    }
    return 0;
}

static int side_key(const bench_hs_side *s, p11n_key **key)
{
    if (s->uri != NULL) {
        int rc;
        if (s->token != NULL)
            bench_token_use(s->token);
        rc = p11n_key_load(s->uri, key);
        if (rc != P11N_OK)
            fprintf(stderr, "bench: opening the token key: %s\n", p11n_strerror(rc));
        return rc == P11N_OK ? 0 : -1;
    }
    *key = s->key;
    return 0;
}

/* The configuration of `self`'s end with `peer`: pattern, key and the one
 * remote key (an XK responder learns it in act three and checks it). */
static void side_config(p11n_handshake_config *cfg, const char *pattern, p11n_key *key,
    const bench_hs_side *peer)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->size = sizeof(*cfg);
    cfg->pattern = pattern;
    cfg->local = key;
    cfg->remote = &peer->pub;
    cfg->nremote = 1;
}

struct hs_server {
    const char *pattern;
    const bench_hs_side *self, *peer;
};

static int hs_serve(int lfd, void *arg)
{
    struct hs_server *s = arg;
    p11n_key *key = NULL;
    p11n_handshake_config cfg;
    uint8_t frame[64];

    if (side_key(s->self, &key) != 0)
        return -1;
    side_config(&cfg, s->pattern, key, s->peer);
    for (;;) {
        p11n_handshake *hs = NULL;
        p11n_transport *t = NULL;
        uint8_t remote[P11N_PUBKEY_LEN];
        size_t flen;
        int fd = bench_accept(lfd);

        if (fd < 0)
            return -1;
        /* XK: the initiator's key arrives in act three; a real server
         * would look it up in its peer store, here it must be the one. */
        if (p11n_handshake_respond(&cfg, &hs) == P11N_OK && drive(fd, hs) == 0
            && p11n_handshake_remote(hs, remote) == P11N_OK
            && memcmp(remote, s->peer->pub, P11N_PUBKEY_LEN) == 0
            && p11n_handshake_finish(hs, &t) == P11N_OK
            && p11n_transport_seal(t, (const uint8_t *)"k", 1, frame, sizeof(frame), &flen)
                   == P11N_OK)
            (void)bench_write_all(fd, frame, flen);
        p11n_transport_free(t);
        p11n_handshake_free(hs);
        close(fd);
    }
}

struct hs_client {
    uint16_t port;
    p11n_handshake_config cfg;
};

static int hs_one(void *arg)
{
    struct hs_client *c = arg;
    int fd = bench_connect(c->port), rc = -1;
    p11n_handshake *hs = NULL;
    p11n_transport *t = NULL;
    uint8_t frame[1 + P11N_FRAME_OVERHEAD];
    const uint8_t *m;
    size_t used, mlen;

    if (fd >= 0 && p11n_handshake_initiate(&c->cfg, &hs) == P11N_OK && drive(fd, hs) == 0
        && p11n_handshake_finish(hs, &t) == P11N_OK
        && bench_read_all(fd, frame, sizeof(frame)) == 0
        && p11n_transport_feed(t, frame, sizeof(frame), &used, &m, &mlen) == 1)
        rc = 0;
    p11n_transport_free(t);
    p11n_handshake_free(hs);
    if (fd >= 0)
        bench_close_abort(fd);
    return rc;
}

int bench_p11n_handshakes(const bench_opts *o, const char *pattern,
    const bench_hs_side *server, const bench_hs_side *client, bench_stat *out)
{
    struct hs_server srv = { .pattern = pattern, .self = server, .peer = client };
    struct hs_client cli;
    bench_server bs;
    p11n_key *key = NULL;
    int rc = -1;

    /* Fork before the client opens its key: a token session must not be
     * shared across fork(). */
    if (bench_server_start(&bs, 64, hs_serve, &srv) != 0)
        return -1;
    if (side_key(client, &key) == 0) {
        cli.port = bs.port;
        side_config(&cli.cfg, pattern, key, server);
        rc = bench_rate_reps(o, hs_one, &cli, out);
    }
    if (client->uri != NULL)
        p11n_key_free(key);
    bench_server_stop(&bs);
    return rc;
}

/* ---- both sides in one process, no sockets ---- */

/* One handshake with both ends driven here: what the library itself costs,
 * without connections, round trips or process wake-ups. */
int bench_hs_in_memory(const p11n_handshake_config *ci, const p11n_handshake_config *cr)
{
    p11n_handshake *hi = NULL, *hr = NULL;
    uint8_t buf[128];
    size_t len;
    int rc = -1;

    if (p11n_handshake_initiate(ci, &hi) != P11N_OK || p11n_handshake_respond(cr, &hr) != P11N_OK)
        goto done;
    while (!p11n_handshake_done(hi) || !p11n_handshake_done(hr)) {
        int i_writes = !p11n_handshake_done(hi) && p11n_handshake_want(hi) == 0;
        p11n_handshake *w = i_writes ? hi : hr, *r = i_writes ? hr : hi;
        if (p11n_handshake_write(w, buf, sizeof(buf), &len) != P11N_OK
            || p11n_handshake_read(r, buf, len) != P11N_OK)
            goto done;
    }
    rc = 0;
done:
    p11n_handshake_free(hi);
    p11n_handshake_free(hr);
    return rc;
}

struct hs_local {
    p11n_handshake_config ci, cr;
};

static int local_one(void *arg)
{
    struct hs_local *l = arg;
    return bench_hs_in_memory(&l->ci, &l->cr);
}

int bench_p11n_handshakes_local(const bench_opts *o, const char *pattern,
    const bench_hs_side *server, const bench_hs_side *client, bench_stat *out)
{
    struct hs_local l;
    p11n_key *skey = NULL, *ckey = NULL;
    int rc = -1;

    if (side_key(server, &skey) == 0 && side_key(client, &ckey) == 0) {
        side_config(&l.ci, pattern, ckey, server);
        side_config(&l.cr, pattern, skey, client);
        rc = bench_rate_reps(o, local_one, &l, out);
    }
    if (server->uri != NULL)
        p11n_key_free(skey);
    if (client->uri != NULL)
        p11n_key_free(ckey);
    return rc;
}
