/*
 * The reference users would otherwise pick: mutual TLS 1.3 with OpenSSL,
 * CHACHA20-POLY1305 only, ECDSA P-256 certificates made in memory (a CA
 * and one leaf per side, each side verifying the other's chain), no
 * resumption of any kind. Client and server are separate processes joined
 * over 127.0.0.1.
 */
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

typedef struct tls_world {
    SSL_CTX *server, *client;
} tls_world;

static EVP_PKEY *p256_key(void)
{
    return EVP_EC_gen("P-256");
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return 0;
    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* A certificate for `key` named `cn`, signed by `ca_key` (self-signed when
 * `ca` is NULL): a leaf for TLS, or (ca NULL, leaf 0) a CA. */
static X509 *make_cert_as(const char *cn, EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key,
    int serial, int leaf)
{
    X509 *cert = X509_new();
    X509_NAME *name;

    if (cert == NULL)
        return NULL;
    name = X509_get_subject_name(cert);
    if (X509_set_version(cert, 2) != 1
        || ASN1_INTEGER_set(X509_get_serialNumber(cert), serial) != 1
        || X509_gmtime_adj(X509_getm_notBefore(cert), -3600) == NULL
        || X509_gmtime_adj(X509_getm_notAfter(cert), 86400) == NULL
        || X509_set_pubkey(cert, key) != 1
        || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
               (const unsigned char *)cn, -1, -1, 0) != 1
        || X509_set_issuer_name(cert, ca ? X509_get_subject_name(ca) : name) != 1
        || !add_ext(cert, ca ? ca : cert, NID_basic_constraints,
               leaf ? "critical,CA:FALSE" : "critical,CA:TRUE")
        || !add_ext(cert, ca ? ca : cert, NID_key_usage,
               leaf ? "critical,digitalSignature" : "critical,keyCertSign")
        || X509_sign(cert, ca_key, EVP_sha256()) == 0) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key,
    int serial)
{
    return make_cert_as(cn, key, ca, ca_key, serial, ca != NULL);
}

/* ---- pinned self-signed certificates: the analogue of a ceremony ---- */

/* Each process holds both contexts; the certificate each side pins. */
static X509 *pin_of_server, *pin_of_client;

/* No chain: the peer's certificate must be exactly the pinned one (its
 * self-signature is what the chain check complains about, and ignored). */
static int pin_verify(int preverify_ok, X509_STORE_CTX *x)
{
    (void)preverify_ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    X509 *pin = ssl != NULL && SSL_is_server(ssl) ? pin_of_client : pin_of_server;
    return X509_STORE_CTX_get_error_depth(x) == 0 && cert != NULL && pin != NULL &&
        X509_cmp(cert, pin) == 0;
}

/* A TLS 1.3-only context with CHACHA20-POLY1305, full handshakes only,
 * the peer's certificate required: verified against the CA `ca`, or with
 * `ca` NULL pinned (pin_verify). */
static SSL_CTX *make_ctx(int server, X509 *ca, X509 *cert, EVP_PKEY *key)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1
        || SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1
        || SSL_CTX_set_ciphersuites(ctx, "TLS_CHACHA20_POLY1305_SHA256") != 1
        || SSL_CTX_use_certificate(ctx, cert) != 1
        || SSL_CTX_use_PrivateKey(ctx, key) != 1
        || SSL_CTX_check_private_key(ctx) != 1
        || (ca != NULL && X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca) != 1)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Every handshake is a full one: no tickets, no session cache. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
        ca != NULL ? NULL : pin_verify);
    return ctx;
}

static void world_free(tls_world *w)
{
    SSL_CTX_free(w->server);
    SSL_CTX_free(w->client);
    w->server = w->client = NULL;
}

/* A CA and one leaf per side, made in memory. */
typedef struct tls_pki {
    EVP_PKEY *ca_key, *s_key, *c_key;
    X509 *ca, *s_cert, *c_cert;
} tls_pki;

static void pki_free(tls_pki *p)
{
    X509_free(p->ca);
    X509_free(p->s_cert);
    X509_free(p->c_cert);
    EVP_PKEY_free(p->ca_key);
    EVP_PKEY_free(p->s_key);
    EVP_PKEY_free(p->c_key);
    memset(p, 0, sizeof(*p));
}

static int pki_init(tls_pki *p)
{
    memset(p, 0, sizeof(*p));
    p->ca_key = p256_key();
    p->s_key = p256_key();
    p->c_key = p256_key();
    if (p->ca_key != NULL && p->s_key != NULL && p->c_key != NULL)
        p->ca = make_cert("bench CA", p->ca_key, NULL, p->ca_key, 1);
    if (p->ca != NULL) {
        p->s_cert = make_cert("bench server", p->s_key, p->ca, p->ca_key, 2);
        p->c_cert = make_cert("bench client", p->c_key, p->ca, p->ca_key, 3);
    }
    if (p->s_cert != NULL && p->c_cert != NULL)
        return 0;
    pki_free(p);
    return -1;
}

static int world_init(tls_world *w)
{
    tls_pki p;
    memset(w, 0, sizeof(*w));
    if (pki_init(&p) != 0)
        return -1;
    w->server = make_ctx(1, p.ca, p.s_cert, p.s_key);
    w->client = make_ctx(0, p.ca, p.c_cert, p.c_key);
    pki_free(&p);
    if (w->server != NULL && w->client != NULL)
        return 0;
    world_free(w);
    return -1;
}

/* A self-signed P-256 leaf per side, each pinned by the other. */
static int world_init_pinned(tls_world *w)
{
    EVP_PKEY *sk = p256_key(), *ck = p256_key();
    memset(w, 0, sizeof(*w));
    X509_free(pin_of_server);
    X509_free(pin_of_client);
    pin_of_server = sk != NULL ? make_cert_as("bench server", sk, NULL, sk, 2, 1) : NULL;
    pin_of_client = ck != NULL ? make_cert_as("bench client", ck, NULL, ck, 3, 1) : NULL;
    if (pin_of_server != NULL && pin_of_client != NULL) {
        w->server = make_ctx(1, NULL, pin_of_server, sk);
        w->client = make_ctx(0, NULL, pin_of_client, ck);
    }
    EVP_PKEY_free(sk);
    EVP_PKEY_free(ck);
    if (w->server != NULL && w->client != NULL)
        return 0;
    world_free(w);
    return -1;
}

/* DIR/NAME: the certificate, then the private key when there is one. */
static int write_pem(const char *dir, const char *name, X509 *cert, EVP_PKEY *key)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int ok = PEM_write_X509(f, cert) == 1
        && (key == NULL || PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
    return fclose(f) == 0 && ok ? 0 : -1;
}

int bench_tls_write_pems(const char *dir)
{
    tls_pki p;
    if (pki_init(&p) != 0)
        return -1;
    int rc = write_pem(dir, "ca.pem", p.ca, NULL) == 0
        && write_pem(dir, "server.pem", p.s_cert, p.s_key) == 0
        && write_pem(dir, "client.pem", p.c_cert, p.c_key) == 0 ? 0 : -1;
    pki_free(&p);
    return rc;
}

static SSL *tls_open(SSL_CTX *ctx, int fd, int server)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1 || (server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static int ssl_read_all(SSL *ssl, void *p, size_t len)
{
    uint8_t *b = p;
    while (len > 0) {
        size_t got;
        if (SSL_read_ex(ssl, b, len, &got) != 1)
            return -1;
        b += got;
        len -= got;
    }
    return 0;
}

/* ---- throughput ---- */

/* Serve one connection: for each request (count, size), read count * size
 * bytes of application data in large reads, then send one byte back. */
static int tput_serve(int lfd, void *arg)
{
    tls_world *w = arg;
    int fd = bench_accept(lfd);
    SSL *ssl = fd >= 0 ? tls_open(w->server, fd, 1) : NULL;
    size_t cap = 1 << 17;
    uint8_t *buf = malloc(cap);
    uint64_t req[2];
    int rc = -1;

    if (ssl == NULL || buf == NULL)
        goto done;
    while (ssl_read_all(ssl, req, sizeof(req)) == 0 && req[0] != 0) {
        uint64_t left = req[0] * req[1];
        size_t got;
        while (left > 0) {
            if (SSL_read_ex(ssl, buf, left < cap ? (size_t)left : cap, &got) != 1)
                goto done;
            left -= got;
        }
        if (SSL_write(ssl, "k", 1) != 1)
            goto done;
    }
    rc = 0;
done:
    SSL_free(ssl);
    free(buf);
    return rc;
}

struct tput_client {
    SSL *ssl;
    const uint8_t *msg;
    size_t size;
};

static int tput_rep(void *arg, size_t count, double *secs)
{
    struct tput_client *c = arg;
    uint64_t req[2] = { count, c->size };
    uint8_t ack;
    double t0 = bench_now();

    if (SSL_write(c->ssl, req, sizeof(req)) != (int)sizeof(req))
        return -1;
    for (size_t i = 0; i < count; i++)
        if (SSL_write(c->ssl, c->msg, (int)c->size) != (int)c->size)
            return -1;
    if (ssl_read_all(c->ssl, &ack, 1) != 0)
        return -1;
    *secs = bench_now() - t0;
    return 0;
}

int bench_tls_throughput(const bench_opts *o, size_t size, bench_stat *out)
{
    tls_world w;
    bench_server srv = { .lfd = -1, .pid = -1 };
    struct tput_client c = { .size = size };
    uint8_t *msg = calloc(1, size);
    uint64_t stop[2] = { 0, 0 };
    int fd = -1, rc = -1;

    if (msg == NULL || world_init(&w) != 0) {
        free(msg);
        return -1;
    }
    c.msg = msg;
    if (bench_server_start(&srv, 16, tput_serve, &w) == 0)
        fd = bench_connect(srv.port);
    c.ssl = fd >= 0 ? tls_open(w.client, fd, 0) : NULL;
    if (c.ssl != NULL && bench_mbps_reps(o, size, 20.0, tput_rep, &c, out) == 0) {
        (void)SSL_write(c.ssl, stop, sizeof(stop));
        rc = 0;
    }
    SSL_free(c.ssl);
    if (fd >= 0)
        close(fd);
    bench_server_stop(&srv);
    world_free(&w);
    free(msg);
    return rc;
}

/* ---- handshakes ---- */

/* Accept connections forever: full handshake, then one byte of application
 * data so the client knows the server verified its certificate too. */
static int hs_serve(int lfd, void *arg)
{
    tls_world *w = arg;
    for (;;) {
        int fd = bench_accept(lfd);
        SSL *ssl;
        if (fd < 0)
            return -1;
        ssl = tls_open(w->server, fd, 1);
        if (ssl != NULL)
            (void)SSL_write(ssl, "k", 1);
        SSL_free(ssl);
        close(fd);
    }
}

struct hs_client {
    SSL_CTX *ctx;
    uint16_t port;
};

static int hs_one(void *arg)
{
    struct hs_client *c = arg;
    int fd = bench_connect(c->port);
    SSL *ssl = fd >= 0 ? tls_open(c->ctx, fd, 0) : NULL;
    uint8_t ack;
    int rc = ssl != NULL && ssl_read_all(ssl, &ack, 1) == 0 ? 0 : -1;

    SSL_free(ssl);
    if (fd >= 0)
        bench_close_abort(fd);
    return rc;
}

static int tls_handshakes(const bench_opts *o, int pinned, bench_stat *out)
{
    tls_world w;
    bench_server srv;
    int rc = -1;

    if ((pinned ? world_init_pinned(&w) : world_init(&w)) != 0)
        return -1;
    if (bench_server_start(&srv, 64, hs_serve, &w) == 0) {
        struct hs_client c = { w.client, srv.port };
        rc = bench_rate_reps(o, hs_one, &c, out);
        bench_server_stop(&srv);
    }
    world_free(&w);
    return rc;
}

int bench_tls_handshakes(const bench_opts *o, bench_stat *out)
{
    return tls_handshakes(o, 0, out);
}

int bench_tls_handshakes_pinned(const bench_opts *o, bench_stat *out)
{
    return tls_handshakes(o, 1, out);
}

int bench_tls_pinned_ctxs(void **server, void **client)
{
    tls_world w;
    if (world_init_pinned(&w) != 0)
        return -1;
    *server = w.server;
    *client = w.client;
    return 0;
}
