/* A fresh SoftHSM2 token in a temporary directory, for one test program. */
#ifndef P11N_TEST_SOFTHSM_H
#define P11N_TEST_SOFTHSM_H

#include <stddef.h>
#include <stdint.h>

#include "token.h"

#define T_PIN "1234"
#define T_SO_PIN "5678"

struct t_token {
    char dir[512];          /* removed by t_token_teardown */
    char label[33];
    char module[512];       /* SoftHSM2 module path */
    char uri[2048];         /* pkcs11:token=LABEL?module-path=SOFTHSM&pin-value=PIN */
    char fault_uri[2048];   /* the same token through tests/faultmod.so */
};

/* Create the directory, the softhsm2.conf (SOFTHSM2_CONF is set to it) and
 * an initialized token; aborts the program on failure. Sets the umask to
 * 077, so the key and PIN files a test writes are accepted. */
void t_token_setup(struct t_token *t, const char *label);
void t_token_teardown(struct t_token *t);

/* Open the token (logged in, read/write) through the library's own token
 * layer, to inspect or seed it; aborts on failure. */
struct p11n_token *t_token_open(const char *uri);

/* The same without logging in: a read/write public session, what any
 * process that can reach the token gets without the PIN. Aborts unless
 * the session really is not logged in. */
struct p11n_token *t_token_open_public(const char *uri);

/* One planted token object on an EC key, as a test varies it: a
 * public-key object holding the point `pub` or a private-key object
 * (derive, sensitive) holding the scalar `priv`. */
struct t_plant {
    const char *id;          /* CKA_ID */
    const char *label;       /* CKA_LABEL; NULL: the same as the id */
    const uint8_t *pub;      /* 33 bytes: a CKO_PUBLIC_KEY with this point */
    const uint8_t *priv;     /* 32 bytes: else a CKO_PRIVATE_KEY with this value */
    int private_obj;         /* CKA_PRIVATE (needs a logged-in session) */
    int modifiable;          /* CKA_MODIFIABLE of a public-key object */
    int p256;                /* CKA_EC_PARAMS names P-256, not secp256k1 */
    int bad_point;           /* CKA_EC_POINT is not on the curve */
};
/* Create it, token-resident, in `tok`'s session; returns the CKR of
 * C_CreateObject (aborts on a point it cannot encode). */
unsigned long t_token_plant_in(struct p11n_token *tok, const struct t_plant *p);
/* What any process that reaches the token can do without the PIN: create
 * `p` from a public session (CKA_PRIVATE false). Aborts on failure. */
void t_token_plant_public(const char *uri, const struct t_plant *p);

/* The same for a ceremony-looking object ("p11noise-peer:ID") holding
 * `pub`, not modifiable. */
void t_token_plant_public_peer(const char *uri, const char *id, const uint8_t pub[P11N_PUBKEY_LEN]);

/* Import a secp256k1 private key from known bytes, with or without
 * CKA_DERIVE, and (with_pub) its public key object with the same CKA_ID
 * and label (CKA_ID = the label). Aborts on failure. */
/* The same with every attribute a test varies, as T_ flags (0: a
 * derive-only, sensitive, never-extractable key and its public, modifiable
 * public-key object). */
enum {
    T_KEY_NO_DERIVE = 1,        /* private key CKA_DERIVE false */
    T_KEY_NO_PUB = 2,           /* no public-key object */
    T_KEY_EXTRACTABLE = 4,      /* private key CKA_EXTRACTABLE true */
    T_KEY_NOT_SENSITIVE = 8,    /* private key CKA_SENSITIVE false */
    T_PUB_PRIVATE = 16,         /* public-key object CKA_PRIVATE true */
    T_PUB_FIXED = 32,           /* public-key object CKA_MODIFIABLE false */
    T_PUB_PLANTED_NEG = 64,     /* and a second, public one holding -K */
};
void t_token_import_key_opts(struct p11n_token *tok, const char *label, const uint8_t priv[32],
    unsigned opts);
void t_token_import_key(struct p11n_token *tok, const char *label, const uint8_t priv[32],
    int derive, int with_pub);

/* Generate a P-256 key pair (a key on the wrong curve). */
void t_token_p256_key(struct p11n_token *tok, const char *label);

/* Object count of the token, seen from a fresh logged-in session. */
size_t t_token_objects(struct p11n_token *tok);

#endif
