/*
 * The handshake floor: the cost of the secp256k1 scalar multiplications a
 * handshake needs, measured with libsecp256k1 in the same run. A key
 * generation is k·G plus serialization; an ECDH is parsing the peer's
 * compressed point plus k·P hashed (the DH of the wire protocol).
 */
#include <secp256k1.h>
#include <secp256k1_ecdh.h>
#include <string.h>

#include "bench.h"

/* Distinct valid scalars without a random source in the loop. */
static void scalar_for(uint8_t k[32], uint32_t i)
{
    memset(k, 0x11, 32);
    memcpy(k + 28, &i, sizeof(i));
}

static int keygen_run(const secp256k1_context *ctx, size_t n, double (*clock)(void),
    double *secs)
{
    uint8_t k[32], out[33];
    secp256k1_pubkey pk;
    size_t len;
    double t0 = clock();

    for (size_t i = 0; i < n; i++) {
        scalar_for(k, (uint32_t)i);
        len = sizeof(out);
        if (!secp256k1_ec_pubkey_create(ctx, &pk, k)
            || !secp256k1_ec_pubkey_serialize(ctx, out, &len, &pk, SECP256K1_EC_COMPRESSED))
            return -1;
    }
    *secs = clock() - t0;
    return 0;
}

static int ecdh_run(const secp256k1_context *ctx, const uint8_t peer[33], size_t n,
    double (*clock)(void), double *secs)
{
    uint8_t k[32], out[32];
    secp256k1_pubkey pk;
    double t0 = clock();

    for (size_t i = 0; i < n; i++) {
        scalar_for(k, (uint32_t)i);
        if (!secp256k1_ec_pubkey_parse(ctx, &pk, peer, 33)
            || !secp256k1_ecdh(ctx, out, &pk, k, NULL, NULL))
            return -1;
    }
    *secs = clock() - t0;
    return 0;
}

int bench_ecc_costs(const bench_opts *o, bench_stat *keygen_us, bench_stat *ecdh_us)
{
    return bench_ecc_costs_by(o, bench_now, keygen_us, ecdh_us);
}

int bench_ecc_costs_by(const bench_opts *o, double (*clock)(void), bench_stat *keygen_us,
    bench_stat *ecdh_us)
{
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    uint8_t k[32], peer[33];
    secp256k1_pubkey pk;
    size_t len = sizeof(peer), n;
    double t;
    int rc = -1;

    if (ctx == NULL)
        return -1;
    scalar_for(k, 0xffffffffu);
    if (!secp256k1_ec_pubkey_create(ctx, &pk, k)
        || !secp256k1_ec_pubkey_serialize(ctx, peer, &len, &pk, SECP256K1_EC_COMPRESSED))
        goto done;
    /* ~40 µs per operation: size each repetition to rep_seconds. */
    n = (size_t)(o->rep_seconds / 40e-6);
    if (n < 50)
        n = 50;
    for (int r = 0; r < o->reps; r++) {
        if (keygen_run(ctx, n, clock, &t) != 0)
            goto done;
        bench_stat_add(keygen_us, t / (double)n * 1e6);
        if (ecdh_run(ctx, peer, n, clock, &t) != 0)
            goto done;
        bench_stat_add(ecdh_us, t / (double)n * 1e6);
    }
    bench_stat_finish(keygen_us);
    bench_stat_finish(ecdh_us);
    rc = 0;
done:
    secp256k1_context_destroy(ctx);
    return rc;
}
