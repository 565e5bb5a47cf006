/*
 * The physical limit of the transport: raw ChaCha20-Poly1305 through
 * OpenSSL EVP on one core, with the key schedule done once and only the IV
 * changing per message, as a transport with no framing at all would do.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static int seal_run(EVP_CIPHER_CTX *ctx, uint8_t *buf, size_t size, size_t count,
    double *seconds)
{
    uint8_t iv[12] = { 0 }, tag[16];
    int outl;
    double t0 = bench_now();

    for (size_t i = 0; i < count; i++) {
        uint64_t n = i;
        memcpy(iv + 4, &n, sizeof(n));
        if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, iv) != 1
            || EVP_EncryptUpdate(ctx, buf, &outl, buf, (int)size) != 1
            || EVP_EncryptFinal_ex(ctx, buf + outl, &outl) != 1
            || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
            return -1;
    }
    *seconds = bench_now() - t0;
    return 0;
}

int bench_aead_raw(const bench_opts *o, size_t size, bench_stat *out)
{
    static const uint8_t key[32] = { 1 };
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    uint8_t *buf = calloc(1, size);
    size_t count;
    double t;
    int rc = -1;

    if (ctx == NULL || buf == NULL
        || EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, NULL) != 1)
        goto done;
    /* Calibrate on a short run so every repetition lasts rep_seconds. */
    count = bench_count_for(o, size, 50.0);
    if (seal_run(ctx, buf, size, count, &t) != 0)
        goto done;
    count = bench_count_for(o, size, (double)size * (double)count / t / 1e6);
    for (int r = 0; r < o->reps; r++) {
        if (seal_run(ctx, buf, size, count, &t) != 0)
            goto done;
        bench_stat_add(out, (double)size * (double)count / t / 1e6);
    }
    bench_stat_finish(out);
    rc = 0;
done:
    EVP_CIPHER_CTX_free(ctx);
    free(buf);
    return rc;
}
