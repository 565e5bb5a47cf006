/*
 * What a listener and the connections it accepts share, and what an
 * outgoing connection keeps for its attempts: the channel configuration
 * (static key, wire pattern, prologue, callbacks), built once from
 * p11n_channel_options and counted by reference.
 */
#ifndef P11N_CHANNEL_H
#define P11N_CHANNEL_H

#include <stddef.h>

#include "p11noise.h"

/* The size on the wire of an act carrying `keys` public keys (33 bytes)
 * and `tags` AEAD tags (16 bytes) after the version byte. */
#define P11N_WIRE_ACT(keys, tags) (1 + 33 * (keys) + 16 * (tags))

/* The wire patterns, one row each: name, whether the responder chooses
 * among candidate initiator keys, and the largest act (KK: two acts of
 * e and a tag; XK: act three adds the encrypted static key). */
#define P11N_WIRE_PATTERNS(X)                 \
    X(KK, 1, P11N_WIRE_ACT(1, 1))             \
    X(XK, 0, P11N_WIRE_ACT(1, 2))

/* The largest act of any pattern, derived from the rows. */
#define P11N_WIRE_ACT_MEMBER(name, chooses, max_act) unsigned char name[max_act];
union p11n_wire_acts { P11N_WIRE_PATTERNS(P11N_WIRE_ACT_MEMBER) };
#define P11N_MAX_ACT sizeof(union p11n_wire_acts)

/* A wire pattern as the network layer sees it. The handshake engine has
 * the protocol name and default prologue of the same name. */
typedef struct p11n_wire {
    const char *name;             /* "KK", "XK": the option's value; in logs */
    int responder_chooses;        /* the responder tries candidate initiator keys */
    size_t max_act;
} p11n_wire;

/* The pattern called `name` (NULL: KK), or NULL if there is none. */
const p11n_wire *p11n_wire_by_name(const char *name);

typedef struct p11n_channel {
    unsigned refs;
    p11n_key *key;                /* borrowed from the application */
    const p11n_wire *wire;
    uint8_t *prologue;            /* owned; NULL: the pattern's default */
    size_t prologue_len;
    p11n_callbacks cb;            /* cb.arg: each connection keeps its own */
} p11n_channel;

/* A channel from the options (one reference). Errors: INVALID_ARG (no
 * key, prologue_len without prologue), UNSUPPORTED (pattern), NOMEM. */
int p11n_channel_new(const p11n_channel_options *o, p11n_channel **out);
p11n_channel *p11n_channel_ref(p11n_channel *ch);
/* Drop a reference (NULL: nothing); the last frees the channel. */
void p11n_channel_unref(p11n_channel *ch);

#endif
