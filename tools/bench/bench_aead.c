/*
 * The physical limit of the transport: raw ChaCha20-Poly1305 through
 * OpenSSL EVP on one core, with the key schedule done once and only the IV
 * changing per message, as a transport with no framing at all would do.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

struct aead_job {
    EVP_CIPHER_CTX *ctx;
    uint8_t *buf;
    size_t size;
};

static int seal_run(void *arg, size_t count, double *seconds)
{
    struct aead_job *j = arg;
    uint8_t iv[12] = { 0 }, tag[16];
    int outl;
    double t0 = bench_now();

    for (size_t i = 0; i < count; i++) {
        uint64_t n = i;
        memcpy(iv + 4, &n, sizeof(n));
        if (EVP_EncryptInit_ex(j->ctx, NULL, NULL, NULL, iv) != 1
            || EVP_EncryptUpdate(j->ctx, j->buf, &outl, j->buf, (int)j->size) != 1
            || EVP_EncryptFinal_ex(j->ctx, j->buf + outl, &outl) != 1
            || EVP_CIPHER_CTX_ctrl(j->ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
            return -1;
    }
    *seconds = bench_now() - t0;
    return 0;
}

int bench_aead_raw(const bench_opts *o, size_t size, bench_stat *out)
{
    static const uint8_t key[32] = { 1 };
    struct aead_job j = { EVP_CIPHER_CTX_new(), calloc(1, size), size };
    int rc = -1;

    if (j.ctx != NULL && j.buf != NULL
        && EVP_EncryptInit_ex(j.ctx, EVP_chacha20_poly1305(), NULL, key, NULL) == 1)
        rc = bench_mbps_reps(o, size, 50.0, seal_run, &j, out);
    EVP_CIPHER_CTX_free(j.ctx);
    free(j.buf);
    return rc;
}
