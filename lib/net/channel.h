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

#include "wire.h"

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
