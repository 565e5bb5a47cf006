/* One runner for the BOLT #8 handshake vectors (tests/vectors/bolt8.json),
 * whatever holds the local static key: a software key in test_handshake, a
 * SoftHSM2 key in test_pkcs11. */
#ifndef P11N_BOLT8CASE_H
#define P11N_BOLT8CASE_H

#include <jansson.h>
#include "p11noise.h"

/* A hex field of a vector as a malloc'd buffer; fails the test when it is
 * missing or, if want > 0, not `want` bytes long. */
uint8_t *t_hex_field(json_t *obj, const char *field, size_t want);

/* `t` has send key sk, receive key rk and chaining key ck: its frames equal
 * those of a transport made from those keys and open at their mirror, and
 * it opens the mirror's frames, past a rotation each way. */
void t_bolt8_check_keys(p11n_transport *t, const uint8_t *ck, const uint8_t *sk,
    const uint8_t *rk);

/* Run one handshake case step by step with `local` as the static key (its
 * public key must be the case's ls_pub): every act written must equal the
 * vector, every failure must be its own error and leave the handshake dead,
 * and the final keys must match (ck from the transport-message case). The
 * responder must end with `initiator_pub` as the peer's key. */
void t_bolt8_run_case(json_t *c, p11n_key *local, const uint8_t *ck,
    const uint8_t *initiator_pub);

#endif
