/*
 * The trust rules for ceremony objects, without I/O (ceremony_obj.c): the
 * attributes of objects with the ceremony's CKA_ID prefix in, a verdict on
 * each out. Apart from the token so they can be tested and fuzzed
 * (tests/fuzz/fuzz_ceremony_obj.c); doc/ceremony.md states the rules.
 */
#ifndef P11N_CEREMONY_OBJ_H
#define P11N_CEREMONY_OBJ_H

#include <stddef.h>
#include <stdint.h>

#include "p11noise.h"

/* One object's attributes as the token gave them (borrowed bytes); a NULL
 * value means the object lacks the attribute or hides it. */
struct p11n_cer_attrs {
    const uint8_t *id;          /* CKA_ID after the prefix */
    const uint8_t *label, *params, *point;
    const uint8_t *priv, *modifiable;   /* CK_BBOOL values */
    size_t idlen, labellen, paramslen, pointlen, privlen, modifiablelen;
    int ec_public_key;          /* CKA_CLASS CKO_PUBLIC_KEY, CKA_KEY_TYPE CKK_EC */
    int found_private;          /* returned by a search for CKA_PRIVATE true */
};

/* One object with the prefix, judged. */
struct p11n_cer_obj {
    unsigned long h;                    /* CK_OBJECT_HANDLE */
    char ident[P11N_MAX_IDENTIFIER + 1];  /* the identifier, "" when invalid */
    char shown[4 * P11N_MAX_IDENTIFIER + 1]; /* the CKA_ID after the prefix,
                                             escaped for messages */
    uint8_t pub[P11N_PUBKEY_LEN];       /* valid when `valid` */
    int valid;                          /* passes every check of the object alone */
    int trusted;                        /* valid and unambiguous */
    char reason[128];                   /* why not trusted, "" when trusted */
};

/* Judge one object whose CKA_ID has the prefix: fills every field but h
 * (0) and trusted (0). */
void p11n_cer_decode(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o);

/* Mark every valid object trusted unless another valid object has its
 * identifier or its key: a peer's identity must be unambiguous. Objects
 * that are not valid take no part, so an object anyone can create cannot
 * take a trusted peer out. Reorders `objs` (sorted by identifier, then by
 * the shown CKA_ID). Errors: NOMEM. */
int p11n_cer_resolve(struct p11n_cer_obj *objs, size_t n);

/* Copy the trusted objects to `*entries` and the others to `*ignored`
 * (both malloc'd, freed with free()). Errors: NOMEM (nothing returned). */
int p11n_cer_split(const struct p11n_cer_obj *objs, size_t n, p11n_peer_entry **entries,
    size_t *nentries, p11n_ceremony_ignored **ignored, size_t *nignored);

#endif
