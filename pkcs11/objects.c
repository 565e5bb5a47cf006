/* Object search, attribute reads and the CKA_EC_POINT encoding. */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "ceremony.h"

const uint8_t p11n_secp256k1_oid[7] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a };

int p11n_token_find(struct p11n_token *tok, CK_SESSION_HANDLE s,
    CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl, CK_OBJECT_HANDLE **handles, size_t *n)
{
    *handles = NULL;
    *n = 0;
    CK_RV rv = tok->fn->C_FindObjectsInit(s, tmpl, ntmpl);
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_FindObjectsInit", rv);
    CK_OBJECT_HANDLE *h = NULL;
    size_t cap = 0, count = 0;
    int err = P11N_OK;
    for (;;) {
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            CK_OBJECT_HANDLE *p = realloc(h, ncap * sizeof(*p));
            if (p == NULL) {
                err = P11N_ERR_NOMEM;
                break;
            }
            h = p;
            cap = ncap;
        }
        CK_ULONG got = 0;
        rv = tok->fn->C_FindObjects(s, h + count, (CK_ULONG)(cap - count), &got);
        if (rv != CKR_OK) {
            err = p11n_token_fail(tok, "C_FindObjects", rv);
            break;
        }
        if (got == 0)
            break;
        count += got;
    }
    /* Always end the search: the session is unusable for another one
     * until we do. */
    rv = tok->fn->C_FindObjectsFinal(s);
    if (err == P11N_OK && rv != CKR_OK)
        err = p11n_token_fail(tok, "C_FindObjectsFinal", rv);
    if (err != P11N_OK) {
        free(h);
        return err;
    }
    *handles = h;
    *n = count;
    return P11N_OK;
}

/* Whether a failed read means "the object does not have it": the
 * attribute is not one of its kind, hidden (sensitive), or, when
 * `vanish_ok`, the object itself is gone. */
static int reads_as_missing(CK_RV rv, int vanish_ok)
{
    return rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
           (vanish_ok && rv == CKR_OBJECT_HANDLE_INVALID);
}

/* A value that changes size between the size query and the read (an
 * object modified meanwhile) is read again, a few times. */
#define ATTR_READ_TRIES 4

static int attr_read_once(struct p11n_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len, int vanish_ok, CK_RV *last)
{
    *val = NULL;
    *len = 0;
    *last = CKR_OK;
    CK_ATTRIBUTE a = { type, NULL, 0 };
    CK_RV rv = tok->fn->C_GetAttributeValue(s, obj, &a, 1);
    if (reads_as_missing(rv, vanish_ok) ||
        (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION))
        return P11N_OK;
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_GetAttributeValue", rv);
    /* One spare byte so empty values still get a buffer. */
    uint8_t *p = malloc(a.ulValueLen + 1);
    if (p == NULL)
        return P11N_ERR_NOMEM;
    a.pValue = p;
    rv = tok->fn->C_GetAttributeValue(s, obj, &a, 1);
    if (rv != CKR_OK) {
        free(p);
        *last = rv;
        return reads_as_missing(rv, vanish_ok) ? P11N_OK
                                               : p11n_token_fail(tok, "C_GetAttributeValue", rv);
    }
    *val = p;
    *len = a.ulValueLen;
    return P11N_OK;
}

static int attr_read(struct p11n_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len, int vanish_ok)
{
    CK_RV last = CKR_OK;
    int err = P11N_OK;
    for (int i = 0; i < ATTR_READ_TRIES; i++) {
        err = attr_read_once(tok, s, obj, type, val, len, vanish_ok, &last);
        if (err == P11N_OK || last != CKR_BUFFER_TOO_SMALL)
            return err;
    }
    /* Still changing: an object that is modified all the time (only one
     * that is modifiable, so never a trusted one) reads as lacking the
     * attribute where vanishing objects are expected, rather than failing
     * the whole ceremony scan for every reader. */
    if (vanish_ok) {
        p11n_token_error_clear();
        return P11N_OK;
    }
    return err;
}

int p11n_token_attr(struct p11n_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len)
{
    return attr_read(tok, s, obj, type, val, len, 0);
}

int p11n_token_attr_loose(struct p11n_token *tok, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len)
{
    return attr_read(tok, tok->anchor, obj, type, val, len, 1);
}

int p11n_ec_point_decode(const uint8_t *in, size_t len, uint8_t out[P11N_PUBKEY_LEN])
{
    /* PKCS#11 says DER OCTET STRING; some tokens store the raw point.
     * Raw points are 65 or 33 bytes and wrapped ones 67 or 35, so the
     * length tells them apart. */
    if ((len == 67 && in[0] == 0x04 && in[1] == 0x41) ||
        (len == 35 && in[0] == 0x04 && in[1] == 0x21)) {
        in += 2;
        len -= 2;
    }
    if (len != 65 && len != 33)
        return P11N_ERR_BAD_PUBKEY;
    if (p11n_secp256k1_compress(in, len, out) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    return p11n_dh_secp256k1.check_pub(out) == P11N_OK ? P11N_OK : P11N_ERR_BAD_PUBKEY;
}

int p11n_ec_point_der(const uint8_t pub[P11N_PUBKEY_LEN], uint8_t out[P11N_EC_POINT_DER_LEN])
{
    out[0] = 0x04;  /* OCTET STRING */
    out[1] = 65;
    return p11n_secp256k1_uncompress(pub, out + 2) == P11N_OK ? P11N_OK : P11N_ERR_BAD_PUBKEY;
}

int p11n_token_count_objects(struct p11n_token *tok, size_t *n)
{
    CK_OBJECT_HANDLE *h;
    int err = p11n_token_find(tok, tok->anchor, NULL, 0, &h, n);
    free(h);
    return err;
}

int p11n_is_peer_id(const uint8_t *id, size_t len)
{
    return id != NULL && len >= P11N_PEER_ID_PREFIX_LEN &&
           memcmp(id, P11N_PEER_ID_PREFIX, P11N_PEER_ID_PREFIX_LEN) == 0;
}
