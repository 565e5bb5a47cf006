/* Fuzz the trust rules for ceremony objects (pkcs11/ceremony_obj.c): up to
 * 16 objects, each with arbitrary attributes, judged one by one, then as a
 * set, then split into peers and ignored objects.
 *
 * Input: per object a flags byte, then length-prefixed fields (a length
 * byte, then that many bytes, cut at the end of the input): CKA_ID after
 * the prefix, CKA_LABEL unless it is the identifier, CKA_EC_PARAMS unless
 * it is secp256k1's, CKA_EC_POINT. A point length of 0xf0 or more takes a
 * known valid point instead (so that shared keys are found quickly).
 *
 * Checks besides memory safety: an object is valid only if it is private
 * (attribute and search), not modifiable, an EC public key, labelled with
 * its valid identifier and on secp256k1; a reason is given exactly when it
 * is not trusted; the shown identifier is printable; no two trusted
 * objects share an identifier or a key, and every valid object that shares
 * neither is trusted; the split returns exactly the trusted ones. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ceremony_obj.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MAX_OBJS 16

enum {
    F_PRIV_SET = 1, F_PRIV_TRUE = 2, F_MOD_SET = 4, F_MOD_TRUE = 8,
    F_EC_PUB = 16, F_FOUND_PRIVATE = 32, F_SECP256K1 = 64, F_LABEL_IS_ID = 128,
};

static const uint8_t secp256k1_oid[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a };
static const uint8_t yes = 1, no = 0;

/* Compressed points of 1·G .. 4·G. */
static const uint8_t known[4][P11N_PUBKEY_LEN] = {
    { 0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87,
      0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16,
      0xf8, 0x17, 0x98 },
    { 0x02, 0xc6, 0x04, 0x7f, 0x94, 0x41, 0xed, 0x7d, 0x6d, 0x30, 0x45, 0x40, 0x6e, 0x95, 0xc0,
      0x7c, 0xd8, 0x5c, 0x77, 0x8e, 0x4b, 0x8c, 0xef, 0x3c, 0xa7, 0xab, 0xac, 0x09, 0xb9, 0x5c,
      0x70, 0x9e, 0xe5 },
    { 0x02, 0xf9, 0x30, 0x8a, 0x01, 0x92, 0x58, 0xc3, 0x10, 0x49, 0x34, 0x4f, 0x85, 0xf8, 0x9d,
      0x52, 0x29, 0xb5, 0x31, 0xc8, 0x45, 0x83, 0x6f, 0x99, 0xb0, 0x86, 0x01, 0xf1, 0x13, 0xbc,
      0xe0, 0x36, 0xf9 },
    { 0x02, 0xe4, 0x93, 0xdb, 0xf1, 0xc1, 0x0d, 0x80, 0xf3, 0x58, 0x1e, 0x49, 0x04, 0x93, 0x0b,
      0x14, 0x04, 0xcc, 0x6c, 0x13, 0x90, 0x0e, 0xe0, 0x75, 0x84, 0x74, 0xfa, 0x94, 0xab, 0xe8,
      0xc4, 0xcd, 0x13 },
};

/* The next length-prefixed field. */
static const uint8_t *field(const uint8_t **d, size_t *n, size_t *len)
{
    if (*n == 0) {
        *len = 0;
        return NULL;
    }
    size_t want = (*d)[0];
    (*d)++;
    (*n)--;
    const uint8_t *p = *d;
    *len = want < *n ? want : *n;
    *d += *len;
    *n -= *len;
    return p;
}

/* One object's attributes from the input; 0 when the input is used up. */
static int next_attrs(const uint8_t **d, size_t *n, struct p11n_cer_attrs *a, uint8_t *flags)
{
    if (*n == 0)
        return 0;
    uint8_t f = *flags = (*d)[0];
    (*d)++;
    (*n)--;
    memset(a, 0, sizeof(*a));
    a->priv = f & F_PRIV_SET ? (f & F_PRIV_TRUE ? &yes : &no) : NULL;
    a->privlen = a->priv != NULL;
    a->modifiable = f & F_MOD_SET ? (f & F_MOD_TRUE ? &yes : &no) : NULL;
    a->modifiablelen = a->modifiable != NULL;
    a->ec_public_key = (f & F_EC_PUB) != 0;
    a->found_private = (f & F_FOUND_PRIVATE) != 0;
    a->id = field(d, n, &a->idlen);
    if (a->id == NULL)
        a->id = (const uint8_t *)"";
    if (f & F_LABEL_IS_ID) {
        a->label = a->id;
        a->labellen = a->idlen;
    } else {
        a->label = field(d, n, &a->labellen);
    }
    if (f & F_SECP256K1) {
        a->params = secp256k1_oid;
        a->paramslen = sizeof(secp256k1_oid);
    } else {
        a->params = field(d, n, &a->paramslen);
    }
    if (*n > 0 && (*d)[0] >= 0xf0) {
        a->point = known[(*d)[0] & 3];
        a->pointlen = P11N_PUBKEY_LEN;
        (*d)++;
        (*n)--;
    } else {
        a->point = field(d, n, &a->pointlen);
    }
    return 1;
}

static void check_decoded(const struct p11n_cer_attrs *a, uint8_t f, const struct p11n_cer_obj *o)
{
    CHECK(memchr(o->shown, '\0', sizeof(o->shown)) != NULL);
    for (const char *c = o->shown; *c != '\0'; c++)
        CHECK(*c > 0x20 && *c < 0x7f);
    CHECK(memchr(o->reason, '\0', sizeof(o->reason)) != NULL);
    CHECK(o->valid == (o->reason[0] == '\0') && !o->trusted);
    size_t n = strlen(o->ident);
    CHECK(n == 0 || (p11n_identifier_valid(o->ident) && n == a->idlen &&
                     memcmp(o->ident, a->id, n) == 0));
    if (!o->valid)
        return;
    /* The rule that matters most: only what needed the PIN. */
    CHECK((f & (F_PRIV_SET | F_PRIV_TRUE | F_FOUND_PRIVATE)) ==
          (F_PRIV_SET | F_PRIV_TRUE | F_FOUND_PRIVATE));
    CHECK((f & (F_MOD_SET | F_MOD_TRUE)) == F_MOD_SET && (f & F_EC_PUB));
    CHECK(n > 0 && a->labellen == n && memcmp(a->label, o->ident, n) == 0);
    CHECK(a->paramslen == sizeof(secp256k1_oid) &&
          memcmp(a->params, secp256k1_oid, sizeof(secp256k1_oid)) == 0);
    CHECK(o->pub[0] == 0x02 || o->pub[0] == 0x03);
}

/* No two trusted objects share an identifier or a key, and a valid object
 * that shares neither with another valid one is trusted. */
static void check_resolved(const struct p11n_cer_obj *o, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(!o[i].trusted || o[i].valid);
        CHECK(o[i].trusted == (o[i].valid && o[i].reason[0] == '\0'));
        CHECK(i == 0 || strcmp(o[i - 1].ident, o[i].ident) <= 0);
        int shared = 0;
        for (size_t j = 0; j < n; j++)
            shared |= j != i && o[i].valid && o[j].valid &&
                      (strcmp(o[i].ident, o[j].ident) == 0 ||
                       memcmp(o[i].pub, o[j].pub, P11N_PUBKEY_LEN) == 0);
        CHECK(!o[i].valid || o[i].trusted == !shared);
    }
}

static void check_split(const struct p11n_cer_obj *o, size_t n)
{
    p11n_peer_entry *e;
    p11n_ceremony_ignored *ig;
    size_t ne, ni;
    CHECK(p11n_cer_split(o, n, &e, &ne, &ig, &ni) == P11N_OK);
    CHECK(ne + ni == n);
    size_t ie = 0, ii = 0;
    for (size_t i = 0; i < n; i++) {
        if (o[i].trusted) {
            CHECK(strcmp(e[ie].id, o[i].ident) == 0);
            CHECK(memcmp(e[ie++].pub, o[i].pub, P11N_PUBKEY_LEN) == 0);
        } else {
            CHECK(strcmp(ig[ii].id, o[i].shown) == 0 && ig[ii++].reason[0] != '\0');
        }
    }
    free(e);
    free(ig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct p11n_cer_obj objs[MAX_OBJS];
    size_t n = 0;
    struct p11n_cer_attrs a;
    uint8_t flags;
    while (n < MAX_OBJS && next_attrs(&data, &size, &a, &flags)) {
        p11n_cer_decode(&a, &objs[n]);
        check_decoded(&a, flags, &objs[n]);
        objs[n].h = n;
        n++;
    }
    CHECK(p11n_cer_resolve(objs, n) == P11N_OK);
    check_resolved(objs, n);
    check_split(objs, n);
    return 0;
}
