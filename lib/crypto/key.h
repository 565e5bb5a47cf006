/*
 * The static-key handle: the Noise engine calls key->ops->dh() (or, for
 * a token key, dh_x / dh_static) and never sees private key bytes. Software keys (lib/key.c) and PKCS#11 token keys
 * (pkcs11/) embed struct p11n_key first.
 */
#ifndef P11N_KEY_H
#define P11N_KEY_H

#include "crypto.h"

struct p11n_key_ops {
    const char *kind;   /* "software", "pkcs11": for logs */
    int slow;           /* 1: may block (token); run off the event loop */
    /* out = DH(k, peer), dhlen bytes. peer is publen bytes, already
     * validated with alg->check_pub. Must be thread-safe for token keys. */
    int (*dh)(struct p11n_key *key, const uint8_t *peer, uint8_t *out);
    /* Optional (NULL: use dh). The same DH with a peer's *static* key:
     * the backend may remember one fact per peer that makes the next
     * call cheaper (a token key: the y parity of k·P, one bit). */
    int (*dh_static)(struct p11n_key *key, const uint8_t *peer, uint8_t *out);
    /* Optional (NULL: the engine uses dh). x(k·P) only, 32 bytes, for a
     * secp256k1 key whose full DH costs more than that (a token key: one
     * derivation instead of two). The engine then carries both
     * candidates SHA256(0x02||x) and SHA256(0x03||x) and lets the
     * message's tag decide. Same thread-safety as dh. */
    int (*dh_x)(struct p11n_key *key, const uint8_t *peer, uint8_t *x);
    /* Optional (NULL: dh_x twice). Two dh_x at once (a token key: on two
     * sessions in parallel), for a message that needs both. */
    int (*dh_x2)(struct p11n_key *key, const uint8_t *peer1, const uint8_t *peer2,
        uint8_t *x1, uint8_t *x2);
    /* Optional (NULL: never). 1 if dh_static with `peer` would take one
     * token derivation now (a token key that remembers the parity of k·P),
     * 0 if it would need the two of the parity recovery. Thread-safe. */
    int (*knows_static)(struct p11n_key *key, const uint8_t *peer);
    void (*destroy)(struct p11n_key *key);
};

struct p11n_key {
    const struct p11n_key_ops *ops;
    const p11n_dh_alg *alg;
    uint8_t pub[P11N_MAXPUBLEN];
    /* NULL, or why this key is weaker than it should be (static text, or
     * owned by the backend); see p11n_key_warning(). */
    const char *warning;
    /* Set by the event loop once it has logged the warning. */
    int warned;
};

static inline int p11n_key_dh(struct p11n_key *key, const uint8_t *peer, uint8_t *out)
{
    return key->ops->dh(key, peer, out);
}

static inline int p11n_key_dh_static(struct p11n_key *key, const uint8_t *peer,
    uint8_t *out)
{
    if (key->ops->dh_static != NULL)
        return key->ops->dh_static(key, peer, out);
    return key->ops->dh(key, peer, out);
}

static inline int p11n_key_has_dh_x(const struct p11n_key *key)
{
    return key->ops->dh_x != NULL;
}

static inline int p11n_key_dh_x(struct p11n_key *key, const uint8_t *peer, uint8_t *x)
{
    return key->ops->dh_x(key, peer, x);
}

static inline int p11n_key_dh_x2(struct p11n_key *key, const uint8_t *peer1,
    const uint8_t *peer2, uint8_t *x1, uint8_t *x2)
{
    if (key->ops->dh_x2 != NULL)
        return key->ops->dh_x2(key, peer1, peer2, x1, x2);
    int rc = key->ops->dh_x(key, peer1, x1);
    return rc == P11N_OK ? key->ops->dh_x(key, peer2, x2) : rc;
}

/* Token derivations of a DH with our key: one once the key knows the
 * parity for a static peer, else two (x, then the parity recovery).
 * peer NULL: an ephemeral peer. */
static inline unsigned p11n_key_dh_cost(struct p11n_key *key, const uint8_t *peer)
{
    return peer != NULL && key->ops->knows_static != NULL
        && key->ops->knows_static(key, peer) ? 1 : 2;
}

static inline int p11n_key_is_slow(const struct p11n_key *key)
{
    return key->ops->slow;
}

/* The x-only static-static DH values (ss) of one worker's batch of KK
 * responder acts, keyed by the candidate initiator's public key. ss is
 * the same in every act for the same local key, so a batch derives each
 * candidate's once and only `es` once per act. The table lives on the
 * worker's stack for the batch alone and is wiped when it ends
 * (p11n_ss_table_wipe): nothing secret outlives the batch. Room for one
 * list of candidates: a batch's acts share their key and their list (the
 * worker pool groups them so), which is what the batch was charged for;
 * a key that finds no room is derived per act, as without a table. */
#define P11N_SS_TABLE_KEYS P11N_MAX_KK_CANDIDATES
struct p11n_ss_table {
    size_t n;
    struct p11n_ss_entry {
        uint8_t peer[P11N_MAXPUBLEN];
        uint8_t x[32];
        int has;
    } e[P11N_SS_TABLE_KEYS];
};
void p11n_ss_table_init(struct p11n_ss_table *t);
/* Make room for these candidates' values (already there: kept). */
void p11n_ss_table_admit(struct p11n_ss_table *t, const uint8_t (*peers)[P11N_PUBKEY_LEN],
    size_t n);
void p11n_ss_table_wipe(struct p11n_ss_table *t);

/* Asked before each token operation the memo would start: P11N_OK to go
 * on, else the error that stops the act there (its job was cancelled, or
 * its deadline passed). */
typedef int (*p11n_key_wanted_fn)(void *arg);

/* A borrowed key seen through a memo of its last x-only DH: a KK
 * responder tries act one under each candidate initiator key, and `es`
 * (its static key with the initiator's ephemeral) is the same for all, so
 * the token derives it once and only `ss` once per candidate -- or once
 * per batch, with a batch's table. Used by one thread at a time (the
 * handshake's); nothing to free but the memo to forget
 * (p11n_key_memo_forget wipes it). */
struct p11n_key_memo {
    struct p11n_key base;       /* what the engine is given */
    struct p11n_key_ops ops;    /* the inner key's, dh_x through the memo */
    struct p11n_key *inner;
    int has;
    uint8_t peer[P11N_MAXPUBLEN];
    uint8_t x[32];
    /* For one step run on a worker (p11n_key_memo_gate); NULL otherwise. */
    p11n_key_wanted_fn wanted;
    void *wanted_arg;
    struct p11n_ss_table *ss;   /* borrowed: the worker's batch table */
};
void p11n_key_memo_init(struct p11n_key_memo *m, struct p11n_key *inner);
void p11n_key_memo_forget(struct p11n_key_memo *m);
/* Ask wanted(arg) before each token operation, and take and keep the ss
 * values of the table's keys in `ss`; all NULL: neither (call this after
 * the step, so the memo keeps no pointer into a finished batch). */
void p11n_key_memo_gate(struct p11n_key_memo *m, p11n_key_wanted_fn wanted, void *arg,
    struct p11n_ss_table *ss);

/* Software key from a "file:" path: one line of hex private key (2 *
 * alg->privlen digits, trailing whitespace allowed). The key's warning
 * says it is for development only. Errors: FILE_MODE (the file is
 * readable by group or others), PARSE (any other content, or a file over
 * 512 bytes), BAD_PRIVKEY, KEY_NOT_FOUND (no such file), IO (unreadable,
 * a directory), NOMEM. */
int p11n_key_load_file(const char *path, const p11n_dh_alg *alg, struct p11n_key **out);

/* The same from the file's text (`len` bytes, not NUL-terminated). */
int p11n_key_parse_text(const char *text, size_t len, const p11n_dh_alg *alg,
    struct p11n_key **out);

#endif
