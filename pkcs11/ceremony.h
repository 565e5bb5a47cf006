/*
 * Ceremony objects on a token (internal). Which objects with the
 * ceremony's CKA_ID prefix are trusted is decided without I/O
 * (ceremony_obj.h); ceremony_scan.c reads the attributes from the token,
 * ceremony.c writes and removes objects.
 *
 * Trusted means: only the logged-in user could have made it. An object
 * with CKA_PRIVATE false can be created from a session that never gave the
 * PIN, so it is never trusted, whatever else it holds.
 */
#ifndef P11N_CEREMONY_H
#define P11N_CEREMONY_H

#include "ceremony_obj.h"
#include "token.h"

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
