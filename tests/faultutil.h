/* Token keys behind tests/faultmod.so, and the module's live call counts
 * while the library uses it. */
#ifndef P11N_TEST_FAULTUTIL_H
#define P11N_TEST_FAULTUTIL_H

#include "p11noise.h"
#include "softhsm.h"

/* A new secp256k1 key pair on the token, as `label` (derive allowed, with
 * its public-key object). Aborts on failure. */
void t_token_new_key(const struct t_token *t, const char *label);

/* The token key `label` loaded through the fault module with the rules
 * `fault` (P11N_FAULT, read when the module initializes; "" for none).
 * Aborts on failure. */
p11n_key *t_fault_key(const struct t_token *t, const char *label, const char *fault);

/* Calls of the PKCS#11 function `name` ("C_DeriveKey") through the fault
 * module since its last C_Initialize. Aborts the test program if the
 * module is not loaded. */
unsigned long t_fault_calls(const char *name);

#endif
