/*
 * The wire patterns, one table for the whole library: the handshake
 * (lib/handshake.c) takes the Noise protocol and default prologue from
 * it, the network layer (lib/net/) the responder's choice among
 * candidates and the largest act. Adding a pattern is one row here.
 */
#ifndef P11N_WIRE_H
#define P11N_WIRE_H

#include <stddef.h>

/* The size on the wire of an act carrying `keys` public keys (33 bytes)
 * and `tags` AEAD tags (16 bytes) after the version byte. */
#define P11N_WIRE_ACT(keys, tags) (1 + 33 * (keys) + 16 * (tags))

/* One row per pattern: name, Noise protocol, default prologue, whether
 * the responder chooses among candidate initiator keys (KK: it needs the
 * initiator's key before act one), and the largest act (KK: two acts of e
 * and a tag; XK: act three adds the encrypted static key). */
#define P11N_WIRE_PATTERNS(X)                                                    \
    X(KK, "Noise_KK_secp256k1_ChaChaPoly_SHA256", "p11noise/1", 1, P11N_WIRE_ACT(1, 1)) \
    X(XK, "Noise_XK_secp256k1_ChaChaPoly_SHA256", "lightning", 0, P11N_WIRE_ACT(1, 2))

/* The largest act of any pattern, derived from the rows. */
#define P11N_WIRE_ACT_MEMBER(name, proto, prologue, chooses, max_act) \
    unsigned char name[max_act];
union p11n_wire_acts { P11N_WIRE_PATTERNS(P11N_WIRE_ACT_MEMBER) };
#define P11N_MAX_ACT sizeof(union p11n_wire_acts)

typedef struct p11n_wire {
    const char *name;             /* "KK", "XK": the option's value; in logs */
    const char *protocol;         /* the Noise protocol name */
    const char *default_prologue;
    int responder_chooses;        /* the responder tries candidate initiator keys */
    size_t max_act;
} p11n_wire;

/* The pattern called `name` (NULL: KK, the default), or NULL if none. */
const p11n_wire *p11n_wire_by_name(const char *name);

#endif
