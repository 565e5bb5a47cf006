/*
 * Ceremony objects (internal). Which objects with the ceremony's CKA_ID
 * prefix are trusted is decided here without I/O (ceremony_obj.c), so the
 * rules can be tested and fuzzed apart from a token; ceremony_scan.c reads
 * the attributes from the token, ceremony.c writes and removes objects.
 *
 * Trusted means: only the logged-in user could have made it. An object
 * with CKA_PRIVATE false can be created from a session that never gave the
 * PIN, so it is never trusted, whatever else it holds.
 */
#ifndef P11N_CEREMONY_H
#define P11N_CEREMONY_H

#include "token.h"

/* One object's attributes as the token gave them (borrowed bytes); a NULL
 * value means the object lacks the attribute or hides it. */
struct p11n_cer_attrs {
    const uint8_t *id, *label, *params, *point, *priv, *modifiable;
    size_t idlen, labellen, paramslen, pointlen, privlen, modifiablelen;
    int ec_public_key;          /* CKA_CLASS CKO_PUBLIC_KEY, CKA_KEY_TYPE CKK_EC */
    int found_private;          /* returned by a search for CKA_PRIVATE true */
};

/* One object with the prefix, judged. */
struct p11n_cer_obj {
    CK_OBJECT_HANDLE h;
    char ident[P11N_MAX_IDENTIFIER + 1];  /* the identifier, "" when invalid */
    char shown[4 * P11N_MAX_IDENTIFIER + 1]; /* the CKA_ID after the prefix,
                                             escaped for messages */
    uint8_t pub[P11N_PUBKEY_LEN];       /* valid when `valid` */
    int valid;                          /* passes every check of the object alone */
    int trusted;                        /* valid and unambiguous */
    char reason[128];                   /* why not trusted, "" when trusted */
};

/* Judge one object whose CKA_ID has the prefix: fills every field but h
 * and trusted (0). */
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

/* p11n_token_attr on the anchor session for an object that others may
 * destroy at any moment (public objects need no PIN to destroy): an
 * object gone since it was found reads as lacking the attribute, so it
 * cannot make the whole scan fail. (objects.c) */
int p11n_token_attr_loose(struct p11n_token *tok, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len);

/* Log in to the token a ceremony call names. */
int p11n_cer_open(const char *token_uri, int flags, struct p11n_token **tok);

/* Every object with the prefix that the logged-in anchor session sees,
 * judged and resolved (free() *objs). Refuses a session that is not
 * logged in. Errors: the token errors, NOMEM. */
int p11n_cer_scan_token(struct p11n_token *tok, struct p11n_cer_obj **objs, size_t *n);

#endif
