/*
 * What a worker pool needs to know of a handshake's pending token step
 * (p11n_handshake_pending) to schedule it, and running it under the
 * pool's rules. Internal to the library: the network layer's
 * handshake jobs (lib/net/conn.c) use it; the pool itself never sees a
 * handshake.
 */
#ifndef P11N_HSJOB_H
#define P11N_HSJOB_H

#include "p11noise.h"
#include "key.h"

/* Token derivations the step costs at worst: a KK responder's act one
 * 1 + its candidates (es once, ss once per candidate), any other read 1
 * (one x-only DH, its parity picked by the tag), a write 2 per DH with
 * our key (a full DH: the parity recovery's second derivation), 1 for a
 * DH with the peer's static key whose parity the key remembers now. */
unsigned p11n_handshake_op_cost(const p11n_handshake_op *op);

/* 1 if the step is work for a peer not yet authenticated: a responder's
 * read of act one, the only token step before its peer is known. */
int p11n_handshake_op_unauth(const p11n_handshake_op *op);

/* The local key, when the step is a KK responder's act one whose ss
 * values a batch may share with other such steps for the same key; else
 * NULL. */
const void *p11n_handshake_op_batch(const p11n_handshake_op *op);

/* For a step with a batch key: its candidates' public keys, in order
 * (*set, borrowed from the handshake: valid while the step is pending),
 * and their length in bytes; else 0 and *set NULL. Steps share a batch
 * only with steps of the same key and the same candidates, so a batch's
 * table holds one list. */
size_t p11n_handshake_op_batch_set(const p11n_handshake_op *op, const void **set);

/* p11n_handshake_pending_run, asking wanted(arg) (may be NULL) before
 * each token operation, and sharing the ss values in `ss` (may be NULL)
 * with the other steps of a batch. Errors: those of
 * p11n_handshake_pending_run, and whatever wanted() returns. */
int p11n_handshake_pending_run_gated(p11n_handshake_op *op, p11n_key_wanted_fn wanted,
    void *arg, struct p11n_ss_table *ss);

#endif
