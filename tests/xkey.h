/* A software secp256k1 static key that offers the engine what a token key
 * does: dh_x (x(k·P) only, the token's one derivation) besides the full
 * dh, with counters. Lets the engine's parity-by-the-tag path run without
 * a token, for both parities, in any pattern. */
#ifndef P11N_TEST_XKEY_H
#define P11N_TEST_XKEY_H

#include <stddef.h>
#include <stdint.h>

#include "p11noise.h"

struct t_xkey_counts {
    unsigned dh;            /* full DH (two derivations on a token) */
    unsigned dh_static;     /* full DH with a peer's static key */
    unsigned dh_x;          /* x only (one derivation), pairs included */
    unsigned dh_x_pairs;    /* two x-only DHs asked for at once */
};

/* From 32 private bytes, or a fresh key when priv is NULL. `mark` (may be
 * NULL) sees every x handed to the engine (the constant-time test marks it
 * secret). NULL on failure. Free with p11n_key_free. */
p11n_key *t_xkey_new(const uint8_t *priv, void (*mark)(void *p, size_t len));

/* The key's call counters (reset with t_xkey_reset). */
struct t_xkey_counts t_xkey_counts(p11n_key *key);
void t_xkey_reset(p11n_key *key);

#endif
