/*
 * BOLT #8 transport: framing, per-direction key rotation, and an
 * incremental decoder that accepts received bytes in chunks of any size.
 *
 * A frame is AEAD(len as 2 bytes big-endian) followed by AEAD(body), both
 * under the sending direction's key with consecutive nonces and empty
 * associated data. Each direction owns its chaining key: rotating one
 * direction must never disturb the other.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>

#include "p11noise.h"
#include "crypto.h"
#include "noise.h"
#include "secure.h"
#include "transport.h"

/* One direction's cipher state. */
struct direction {
    p11n_aead aead;           /* keyed with k; re-keyed only on rotation */
    uint64_t n;               /* always < P11N_ROTATE_AT */
    uint8_t ck[P11N_MAXHASHLEN];
    uint8_t k[P11N_KEYLEN];
    uint64_t rotations;       /* for status only: kept when the keys are cleared */
    uint64_t rotated_ms;      /* wall clock of the last rotation, 0: none */
};

enum rx_stage { RX_HEADER, RX_BODY };

/* The receive buffer starts small enough for most messages and doubles up
 * to the largest body, so a connection that only sees short messages never
 * holds a 64 KiB buffer; reaching the largest takes five allocations. */
#define RX_MIN 4096
#define RX_MAX (P11N_MAX_MESSAGE + P11N_TAG_LEN)

struct p11n_transport {
    const p11n_hash_alg *hash;
    struct direction send;
    struct direction recv;
    int dead;                 /* a receive or crypto error: refuse everything */

    /* Decoder. Bytes are buffered only when a piece (header or body)
     * arrives split across calls; a piece that is whole in the caller's
     * input is decrypted straight from there into `body`. `body` is
     * allocated when a body first needs it, kept while messages flow,
     * and released by p11n_transport_trim: an idle transport holds none. */
    enum rx_stage stage;
    size_t have;              /* buffered bytes of the current piece */
    size_t body_len;          /* plaintext length announced by the header */
    uint8_t header[P11N_HEADER_LEN];
    uint8_t *body;            /* NULL until needed and after a trim */
    size_t body_cap;

    uint8_t hs_hash[P11N_MAXHASHLEN]; /* the handshake's h, for channel binding */
    size_t hs_hash_len;       /* 0: none kept */
};

/* `dirs` is P11N_AEAD_SEAL or P11N_AEAD_OPEN: a direction only ever does
 * one, so it holds one EVP context. */
static int direction_init(struct direction *d, const p11n_hash_alg *hash,
    const p11n_cipher_alg *cipher, int dirs, const uint8_t *ck, const uint8_t k[P11N_KEYLEN])
{
    int rc = p11n_aead_init_dir(&d->aead, cipher, dirs);
    if (rc != P11N_OK)
        return rc;
    memcpy(d->ck, ck, hash->hashlen);
    memcpy(d->k, k, P11N_KEYLEN);
    d->n = 0;
    return p11n_aead_setkey(&d->aead, d->k);
}

static void direction_clear(struct direction *d)
{
    p11n_aead_clear(&d->aead);
    p11n_wipe(d->ck, sizeof(d->ck));
    p11n_wipe(d->k, sizeof(d->k));
    d->n = 0;
}

/* ck', k' = HKDF(ck, k); the old key and chaining key are overwritten. */
static int direction_rotate(struct direction *d, const p11n_hash_alg *hash)
{
    uint8_t ck[P11N_MAXHASHLEN], k[P11N_MAXHASHLEN];
    int rc = p11n_hkdf(hash, d->ck, d->k, P11N_KEYLEN, 2, ck, k, NULL);
    if (rc == P11N_OK) {
        memcpy(d->ck, ck, hash->hashlen);
        memcpy(d->k, k, P11N_KEYLEN);   /* a longer hash output is truncated, as in Split() */
        d->n = 0;
        rc = p11n_aead_setkey(&d->aead, d->k);
    }
    if (rc == P11N_OK) {
        /* Read here, once per 500 messages, because seal and feed take no
         * time from their caller; status reports it as a date. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        d->rotations++;
        d->rotated_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    }
    p11n_wipe(ck, sizeof(ck));
    p11n_wipe(k, sizeof(k));
    return rc;
}

/* Count one use of the key, rotating when the nonce reaches the limit. */
static int direction_advance(struct direction *d, const p11n_hash_alg *hash)
{
    if (++d->n < P11N_ROTATE_AT)
        return P11N_OK;
    return direction_rotate(d, hash);
}

static int direction_seal(struct direction *d, const p11n_hash_alg *hash,
    const uint8_t *in, size_t len, uint8_t *out)
{
    int rc = p11n_aead_seal(&d->aead, d->n, NULL, 0, in, len, out);
    return rc == P11N_OK ? direction_advance(d, hash) : rc;
}

/* `in` is ciphertext || tag; `out` (may equal `in`) gets len - tag bytes,
 * or is wiped when the tag does not verify. */
static int direction_open(struct direction *d, const p11n_hash_alg *hash,
    const uint8_t *in, size_t len, uint8_t *out)
{
    int rc = p11n_aead_open(&d->aead, d->n, NULL, 0, in, len, out);
    return rc == P11N_OK ? direction_advance(d, hash) : rc;
}

/* The buffer may hold a message's plaintext or a body's ciphertext:
 * wiped before it goes. OpenSSL's allocator pairs freeing with wiping, and
 * lets the tests fail the allocation. */
static void body_release(p11n_transport *t)
{
    OPENSSL_clear_free(t->body, t->body_cap);
    t->body = NULL;
    t->body_cap = 0;
}

/* Room for a body of `need` bytes. Called before any of the body is
 * gathered, so growing copies nothing: what the old buffer holds is the
 * previous message, which the caller may no longer use. On failure there
 * is no buffer, the decoder's position is unchanged, and the next call
 * tries again. */
static int body_reserve(p11n_transport *t, size_t need)
{
    if (t->body_cap >= need)
        return P11N_OK;
    size_t cap = t->body_cap ? 2 * t->body_cap : RX_MIN;
    while (cap < need)
        cap *= 2;
    if (cap > RX_MAX / 2)   /* past half the largest: all of it, not 15 bytes short */
        cap = RX_MAX;
    body_release(t);
    t->body = OPENSSL_malloc(cap);
    if (t->body == NULL)
        return P11N_ERR_NOMEM;
    t->body_cap = cap;
    return P11N_OK;
}

/* After any failure the transport is unusable; drop what it still holds.
 * Runs once per transport. */
static void transport_kill(p11n_transport *t)
{
    t->dead = 1;
    direction_clear(&t->send);
    direction_clear(&t->recv);
    body_release(t);
    t->have = 0;
}

int p11n_transport_create(const p11n_hash_alg *hash, const p11n_cipher_alg *cipher,
    const uint8_t *ck, const uint8_t sk[P11N_KEYLEN], const uint8_t rk[P11N_KEYLEN],
    p11n_transport **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (hash == NULL || cipher == NULL || ck == NULL || sk == NULL || rk == NULL
        || hash->hashlen > P11N_MAXHASHLEN)
        return P11N_ERR_INVALID_ARG;

    p11n_transport *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return P11N_ERR_NOMEM;
    t->hash = hash;
    t->stage = RX_HEADER;
    int rc = direction_init(&t->send, hash, cipher, P11N_AEAD_SEAL, ck, sk);
    if (rc == P11N_OK)
        rc = direction_init(&t->recv, hash, cipher, P11N_AEAD_OPEN, ck, rk);
    if (rc != P11N_OK) {
        p11n_transport_free(t);
        return rc;
    }
    *out = t;
    return P11N_OK;
}

int p11n_transport_new(const char *protocol_name, const uint8_t ck[32],
    const uint8_t sk[32], const uint8_t rk[32], p11n_transport **out)
{
    if (out == NULL)
        return P11N_ERR_INVALID_ARG;
    *out = NULL;
    if (protocol_name == NULL || ck == NULL || sk == NULL || rk == NULL)
        return P11N_ERR_INVALID_ARG;
    p11n_protocol proto;
    int rc = p11n_protocol_parse(protocol_name, &proto);
    if (rc != P11N_OK)
        return rc;
    /* The public signature carries a 32-byte chaining key. */
    if (proto.hash->hashlen != 32)
        return P11N_ERR_UNSUPPORTED;
    return p11n_transport_create(proto.hash, proto.cipher, ck, sk, rk, out);
}

int p11n_transport_seal(p11n_transport *t, const uint8_t *msg, size_t len,
    uint8_t *out, size_t cap, size_t *outlen)
{
    if (outlen != NULL)
        *outlen = 0;
    if (t == NULL || (msg == NULL && len > 0) || out == NULL || outlen == NULL)
        return P11N_ERR_INVALID_ARG;
    if (t->dead)
        return P11N_ERR_STATE;
    if (len > P11N_MAX_MESSAGE)
        return P11N_ERR_MESSAGE_TOO_LARGE;
    if (cap < len + P11N_FRAME_OVERHEAD)
        return P11N_ERR_BUFFER_TOO_SMALL;

    const uint8_t length[P11N_LENGTH_FIELD] = { (uint8_t)(len >> 8), (uint8_t)len };
    int rc = direction_seal(&t->send, t->hash, length, sizeof(length), out);
    if (rc == P11N_OK)
        rc = direction_seal(&t->send, t->hash, msg, len, out + P11N_HEADER_LEN);
    if (rc != P11N_OK) {
        /* The send nonce may have moved: no later frame could be trusted. */
        p11n_wipe(out, len + P11N_FRAME_OVERHEAD);
        transport_kill(t);
        return rc;
    }
    *outlen = len + P11N_FRAME_OVERHEAD;
    return P11N_OK;
}

/* Locate the next `need` bytes of the current piece: straight from the
 * input when nothing is buffered and it is all there, otherwise by
 * gathering into `buf`. Returns NULL when more input is needed. */
static const uint8_t *gather(p11n_transport *t, uint8_t *buf, size_t need,
    const uint8_t *in, size_t len, size_t *used)
{
    size_t avail = len - *used;
    if (t->have == 0 && avail >= need) {
        const uint8_t *p = in + *used;
        *used += need;
        return p;
    }
    size_t take = need - t->have;
    if (take > avail)
        take = avail;
    memcpy(buf + t->have, in + *used, take);
    t->have += take;
    *used += take;
    if (t->have < need)
        return NULL;
    t->have = 0;
    return buf;
}

int p11n_transport_feed(p11n_transport *t, const uint8_t *in, size_t len,
    size_t *consumed, const uint8_t **msg, size_t *msglen)
{
    if (consumed != NULL)
        *consumed = 0;
    if (msg != NULL)
        *msg = NULL;
    if (msglen != NULL)
        *msglen = 0;
    if (t == NULL || (in == NULL && len > 0) || consumed == NULL || msg == NULL
        || msglen == NULL)
        return P11N_ERR_INVALID_ARG;
    if (t->dead)
        return P11N_ERR_STATE;

    size_t used = 0;
    int rc = 0;
    while (used < len) {
        if (t->stage == RX_HEADER) {
            const uint8_t *ct = gather(t, t->header, P11N_HEADER_LEN, in, len, &used);
            if (ct == NULL)
                break;
            uint8_t length[P11N_LENGTH_FIELD];
            rc = direction_open(&t->recv, t->hash, ct, P11N_HEADER_LEN, length);
            if (rc != P11N_OK)
                break;
            t->body_len = (size_t)length[0] << 8 | length[1];
            t->stage = RX_BODY;
        } else {
            size_t need = t->body_len + P11N_TAG_LEN;
            if (body_reserve(t, need) != P11N_OK) {
                /* Not fatal: the header stays decoded and nothing of the
                 * body was taken, so feeding the rest again resumes. */
                *consumed = used;
                return P11N_ERR_NOMEM;
            }
            const uint8_t *ct = gather(t, t->body, need, in, len, &used);
            if (ct == NULL)
                break;
            /* Decrypting in place when gathered: a bad tag wipes `body`,
             * so no unverified plaintext is ever left behind. */
            rc = direction_open(&t->recv, t->hash, ct, need, t->body);
            if (rc != P11N_OK)
                break;
            t->stage = RX_HEADER;
            *msg = t->body;
            *msglen = t->body_len;
            rc = 1;
            break;
        }
    }
    *consumed = used;
    if (rc < 0)
        transport_kill(t);
    return rc;
}

int p11n_transport_trim(p11n_transport *t)
{
    /* Part of a body gathered across feeds is the only content still
     * needed; a partial header lives in `header`. */
    if (t == NULL || t->body == NULL || (t->stage == RX_BODY && t->have > 0))
        return 0;
    body_release(t);
    return 1;
}

void p11n_transport_set_hash(p11n_transport *t, const uint8_t *h, size_t len)
{
    if (len > sizeof(t->hs_hash))
        len = 0;  /* no hash is longer: keep none rather than part of one */
    memcpy(t->hs_hash, h, len);
    t->hs_hash_len = len;
}

int p11n_transport_hash(const p11n_transport *t, uint8_t *out, size_t cap, size_t *len)
{
    *len = t->hs_hash_len;
    if (t->hs_hash_len == 0)
        return P11N_ERR_STATE;
    if (cap < t->hs_hash_len)
        return P11N_ERR_BUFFER_TOO_SMALL;
    memcpy(out, t->hs_hash, t->hs_hash_len);
    return P11N_OK;
}

void p11n_transport_rotations(const p11n_transport *t, struct p11n_rotations *out)
{
    out->sent = t->send.rotations;
    out->received = t->recv.rotations;
    out->last_unix_ms = t->send.rotated_ms > t->recv.rotated_ms ? t->send.rotated_ms
                                                               : t->recv.rotated_ms;
}

void p11n_transport_free(p11n_transport *t)
{
    if (t == NULL)
        return;
    if (!t->dead)   /* a dead transport was cleared already */
        transport_kill(t);
    p11n_wipe(t, sizeof(*t));
    free(t);
}
