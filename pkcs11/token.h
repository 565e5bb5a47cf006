/*
 * Token access (internal): a loaded module, one token on it, a logged-in
 * anchor session, and a pool of sessions for concurrent DH.
 */
#ifndef P11N_TOKEN_H
#define P11N_TOKEN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include "p11noise.h"

/* How the token wants the peer point in CK_ECDH1_DERIVE_PARAMS; found by
 * the first derivation and kept for the token's lifetime. */
enum p11n_point_form {
    P11N_FORM_UNKNOWN = 0,
    P11N_FORM_RAW = 1,      /* 65-byte uncompressed point */
    P11N_FORM_DER = 2       /* DER OCTET STRING wrapping it */
};

struct p11n_token;

/* What a token's user does to come back after the token lost its
 * sessions: reopen the token (p11n_token_reopen) and find its key again,
 * checking it is the same key; *key gets the key's new handle. Called by
 * the one thread that recovers, with no other operation running. */
typedef int (*p11n_token_relocate_fn)(struct p11n_token *tok, void *arg, CK_OBJECT_HANDLE *key);

/* The recovery state (token.c, recover.c). */
enum {
    P11N_TOKEN_UP = 0,          /* sessions usable */
    P11N_TOKEN_RECOVERING = 1,  /* one thread is reopening the token */
    P11N_TOKEN_AWAY = 2         /* the last recovery failed: fail fast until retry_at */
    /* any p11n_err (a PIN error): recovery failed for good */
};

struct p11n_token {
    CK_FUNCTION_LIST *fn;
    CK_SLOT_ID slot;
    /* Opened at login and kept open: login state belongs to the
     * application and lasts while any of its sessions on the token is
     * open, so this one keeps the pool's sessions logged in. */
    CK_SESSION_HANDLE anchor;
    char *uri;              /* for messages; never holds a PIN */
    atomic_int point_form;
    pid_t pid;              /* the process whose sessions these are */
    pthread_mutex_t lock;   /* guards idle[], slot, gen, key and the state */
    CK_SESSION_HANDLE *idle;
    size_t nidle, capidle;
    /* Recovery after the token lost its sessions (recover.c). */
    pthread_mutex_t recovering;     /* held by the one thread recovering */
    unsigned gen;           /* bumped by each recovery: older sessions are stale */
    CK_OBJECT_HANDLE key;   /* the token key's private key in this generation */
    int state;              /* P11N_TOKEN_UP, _RECOVERING, _AWAY or a p11n_err */
    uint64_t retry_at;      /* while away: CLOCK_MONOTONIC ms of the next try */
    unsigned backoff_ms;    /* wait after the next failed try */
    char why[384];          /* while away or failed: the last recovery error */
    p11n_token_relocate_fn relocate;    /* NULL: the token does not recover */
    void *relocate_arg;
};

enum {
    P11N_TOKEN_LOGIN = 1,   /* log in as user (PIN from URI or callback) */
    P11N_TOKEN_RW = 2       /* anchor session may create token objects */
};

/* ---- URIs (uri.c) ---- */

/* Parse a pkcs11: URI with p11-kit. *safe is the same URI without
 * pin-value in its readable form (p11n_uri_display), for messages
 * (free()). Errors: URI, NOMEM. */
int p11n_uri_parse(const char *text, P11KitUri **parsed, char **safe);
/* Wipe any pin-value the URI still holds, then free it. NULL-safe. */
void p11n_uri_free(P11KitUri *uri);

/* The PIN for a token: pin-value, then pin-source (a file), then the
 * application callback. The pin-value held by `uri` is wiped and cleared.
 * *len is 0 with P11N_OK when the token has a protected authentication
 * path and no PIN was given. Errors: PIN_REQUIRED, URI (unreadable
 * pin-source). The caller wipes pin. */
int p11n_uri_pin(P11KitUri *uri, const char *safe, int protected_path,
    char *pin, size_t cap, size_t *len);

/* ---- token (token.c) ---- */

/* Find the one token the URI names (module-path, module-name, or every
 * module p11-kit is configured with), open the anchor session and, with
 * P11N_TOKEN_LOGIN, log in. Errors: URI (ambiguous), MODULE,
 * TOKEN_NOT_FOUND, PIN_*, TOKEN_REMOVED, TOKEN, NOMEM. */
int p11n_token_open(P11KitUri *uri, const char *safe, int flags, struct p11n_token **out);
/* Close every session, finalize and release the module. NULL-safe. */
void p11n_token_close(struct p11n_token *tok);

/* P11N_OK if the token offers CKM_ECDH1_DERIVE for derivation, else NO_ECDH. */
int p11n_token_check_ecdh(struct p11n_token *tok);

/* Log in again after the token lost its sessions: initialize the module
 * (after fork() the child must), find the token the URI names again (it
 * may come back in another slot), open a new anchor session and log in.
 * Errors: those of p11n_token_open. */
int p11n_token_reopen(struct p11n_token *tok, P11KitUri *uri);

/* One token operation's hold on the token: a logged-in session, the key's
 * handle, and the generation both belong to. */
struct p11n_token_use {
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE key;
    unsigned gen;
    CK_RV rv;       /* the first failure the token reported, else CKR_OK */
    int dead;       /* the session is unusable: close it */
};

/* Borrow a session of the current generation from the pool (or open
 * one), without looking at the recovery state: for loading and for the
 * recovery itself. Give it back with p11n_token_session_put: a dead one
 * is closed (which also destroys any session object left on it), one of
 * an older generation is closed unless dead. Errors: those of
 * C_OpenSession. */
int p11n_token_session_get(struct p11n_token *tok, struct p11n_token_use *u);
void p11n_token_session_put(struct p11n_token *tok, struct p11n_token_use *u);

/* ---- recovery (recover.c) ---- */

/* Borrow a session for an operation. While the token is away and its next
 * try has not come, fails fast with TOKEN_UNAVAILABLE without calling the
 * module; once it has (and in a child after fork()), recovers first.
 * After a recovery that failed for good, returns its error (PIN_*).
 * Errors: TOKEN_UNAVAILABLE, PIN_INCORRECT, PIN_LOCKED, PIN_FINAL_TRY,
 * those of C_OpenSession. */
int p11n_token_use_begin(struct p11n_token *tok, struct p11n_token_use *u);
static inline void p11n_token_use_end(struct p11n_token *tok, struct p11n_token_use *u)
{
    p11n_token_session_put(tok, u);
}

/* After an operation in generation `seen` failed with an error
 * p11n_ckr_lost() names: drop the sessions, reopen, log in and find the
 * key again (tok->relocate) -- unless another thread already did since
 * `seen`, in which case this waits for it. P11N_OK: retry the operation
 * once. Errors: TOKEN_UNAVAILABLE (the token is not back: retried later
 * with a capped backoff), PIN_* (never retried), TOKEN. */
int p11n_token_recover(struct p11n_token *tok, unsigned seen);

/* Record a failed PKCS#11 call as the thread's last token error and
 * return the p11n_err it maps to. */
int p11n_token_fail(const struct p11n_token *tok, const char *call, CK_RV rv);
/* Record a message (URI prefix added when uri is not NULL); returns err. */
int p11n_token_errorf(int err, const char *uri, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void p11n_token_error_clear(void);

/* ---- objects (objects.c) ---- */

extern const uint8_t p11n_secp256k1_oid[7];   /* DER OID 1.3.132.0.10 */
#define P11N_PEER_ID_PREFIX "p11noise-peer:"   /* CKA_ID of ceremony objects */
#define P11N_PEER_ID_PREFIX_LEN (sizeof(P11N_PEER_ID_PREFIX) - 1)
#define P11N_EC_POINT_DER_LEN 67               /* 04 41 || 04 x y */

/* 1 if a CKA_ID value marks a ceremony object. */
int p11n_is_peer_id(const uint8_t *id, size_t len);

/* Every object matching the template: *handles (free()) gets *n handles. */
int p11n_token_find(struct p11n_token *tok, CK_SESSION_HANDLE s,
    CK_ATTRIBUTE *tmpl, CK_ULONG ntmpl, CK_OBJECT_HANDLE **handles, size_t *n);

/* Read one attribute into a malloc'd buffer (*val, *len); P11N_OK with
 * *val NULL when the object does not have it. */
int p11n_token_attr(struct p11n_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj,
    CK_ATTRIBUTE_TYPE type, uint8_t **val, size_t *len);

/* CKA_EC_POINT value (DER OCTET STRING or raw, uncompressed or
 * compressed) to a validated 33-byte point. Errors: BAD_PUBKEY. */
int p11n_ec_point_decode(const uint8_t *in, size_t len, uint8_t out[P11N_PUBKEY_LEN]);
/* 33-byte point to the DER OCTET STRING of its uncompressed form. */
int p11n_ec_point_der(const uint8_t pub[P11N_PUBKEY_LEN], uint8_t out[P11N_EC_POINT_DER_LEN]);

/* Number of objects the token shows the anchor session (token and
 * session objects, private ones included when logged in). */
int p11n_token_count_objects(struct p11n_token *tok, size_t *n);

/* ---- ECDH (ecdh.c) ---- */

/* x(k·P) for the token key `key` and a validated 33-byte point P, using a
 * pooled session (no recovery: for loading and for recovery's own check).
 * The derived object is destroyed on every path. */
int p11n_token_derive_x(struct p11n_token *tok, CK_OBJECT_HANDLE key,
    const uint8_t peer[P11N_PUBKEY_LEN], uint8_t x[32]);

/* SHA256(compressed(k·P)) for the token's key (tok->key) where K = k·G
 * is its public point: two derivations (P and P ± G) recover the y
 * parity; *parity (may be NULL) gets it (a secret bit). When the token
 * has lost its sessions, recovers and tries once more. Errors:
 * BAD_PUBKEY, those of p11n_token_use_begin and p11n_token_recover,
 * TOKEN. */
int p11n_token_ecdh(struct p11n_token *tok, const uint8_t K[P11N_PUBKEY_LEN],
    const uint8_t peer[P11N_PUBKEY_LEN], uint8_t out[32], uint8_t *parity);

/* x(k·P) for the token's key: one derivation, with recovery as above.
 * Errors: those of p11n_token_ecdh. */
int p11n_token_ecdh_x(struct p11n_token *tok, const uint8_t peer[P11N_PUBKEY_LEN],
    uint8_t x[32]);

/* x(k·P1) and x(k·P2) at once, on two sessions when a second can be had
 * (a KK responder's es and ss). Errors: those of p11n_token_ecdh. */
int p11n_token_ecdh_x2(struct p11n_token *tok, const uint8_t p1[P11N_PUBKEY_LEN],
    const uint8_t p2[P11N_PUBKEY_LEN], uint8_t x1[32], uint8_t x2[32]);

/* ---- token keys (tokenkey.c) ---- */

struct p11n_key;
/* The token behind a token key, or NULL for another kind of key (tests). */
struct p11n_token *p11n_token_of_key(struct p11n_key *key);

#endif
