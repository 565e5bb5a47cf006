/* The BOLT #8 handshake vectors (tests/vectors/bolt8.json) for the CUnit
 * tests, whatever holds the local static key: a software key in
 * test_handshake, a SoftHSM2 key in test_pkcs11. The checks are those of
 * `p11noise vectors` (tools/vectors_bolt8.c, compiled into the test
 * helpers): one runner for the tool and the tests. */
#ifndef P11N_BOLT8CASE_H
#define P11N_BOLT8CASE_H

#include <jansson.h>
#include "p11noise.h"

/* A hex field of a vector as a malloc'd buffer; fails the test when it is
 * missing or, if want > 0, not `want` bytes long. */
uint8_t *t_hex_field(json_t *obj, const char *field, size_t want);

/* Runs one handshake case of bolt8.json step by step with `local` as the
 * static key (its public key must be the case's ls_pub): every act written
 * must equal the vector, every failure must be its own error and leave the
 * handshake dead, and the final keys must match past a rotation, starting
 * from `ck` (that of the transport-message case). The responder must end
 * with `initiator_pub` as the peer's key. Fails the test, naming the case
 * and the reason, otherwise. */
void t_bolt8_run_case(json_t *c, p11n_key *local, const uint8_t *ck,
    const uint8_t *initiator_pub);

#endif
