/*
 * Vector runners of `p11noise vectors`, limited to the public API
 * (lib/p11noise.h) so that the tests can compile the same files in and run
 * the same checks with a token key instead of a software one.
 */
#ifndef P11N_TOOLS_VECTORS_H
#define P11N_TOOLS_VECTORS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "p11noise.h"

/* The outcome of one vector or case. */
enum { VEC_PASS, VEC_FAIL, VEC_SKIP };

/* Why a case failed: filled by the runners, printed by their caller. */
typedef struct {
    char text[256];
} vec_why;

/* Formats the reason into `why` and returns VEC_FAIL. */
int vec_failf(vec_why *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A decoded hex field of a vector. Vector files hold test keys only, so
 * plain (not constant-time) decoding is fine here. */
typedef struct {
    uint8_t *p;
    size_t len;
    int present;
} vec_bytes;

/* Decodes the hex string `s` into a malloc'd `out` (NULL counts as
 * malformed); 0 or -1. */
int vec_decode_hex(const char *s, vec_bytes *out);
/* The hex field `key` of `obj`: 0 with out->present = 0 when absent, 0 when
 * decoded, -1 when malformed. */
int vec_get_hex(json_t *obj, const char *key, vec_bytes *out);
void vec_bytes_free(vec_bytes *b);

/* What every case of a BOLT #8 file shares, read once from its root. */
typedef struct {
    const char *protocol;            /* owned by the JSON root */
    const uint8_t *prologue;         /* likewise */
    size_t prologue_len;
    /* The chaining key the transport-message case starts from, which is the
     * one every successful handshake ends with: with it the key check goes
     * past a rotation. */
    uint8_t ck[32];
    int has_ck;
    /* The initiator's static key (ls_pub of an initiator case), which a
     * successful responder must report as its peer. */
    uint8_t initiator_pub[P11N_PUBKEY_LEN];
    int has_initiator_pub;
} vec_bolt8_file;

/* Reads the shared fields of a BOLT #8 root ({"protocol", "prologue",
 * "cases"}); the file must outlive `f`. VEC_PASS or VEC_FAIL with `why`. */
int vec_bolt8_file_init(vec_bolt8_file *f, json_t *root, vec_why *why);

/* The p11n error a BOLT #8 failure label stands for ("ACT2_BAD_VERSION 1"
 * -> P11N_ERR_BAD_VERSION); 0 for a label it does not know. */
int vec_bolt8_error(const char *label);

/* Runs one case of the file: a handshake case step by step, or the
 * transport-message case. `local` is the static key to use (not consumed;
 * its public key must be the case's ls_pub); NULL makes one from the
 * case's ls_priv. Every act written must equal the vector, every failure
 * must be its own error and leave the handshake dead, the peer's key and
 * the final keys must match. VEC_PASS, VEC_SKIP (a protocol the wire
 * handshake does not speak) or VEC_FAIL with `why`. */
int vec_bolt8_run_case(const vec_bolt8_file *f, json_t *c, p11n_key *local, vec_why *why);

#endif
