/*
 * Who is on the other end, decided from the context's peer store at the
 * moment it matters: when a handshake begins (the KK candidates, the key
 * an outgoing connection dials), when it ends (the authorization), and
 * whenever the store changes (revocation). Nothing is copied from the
 * store for later, so a key removed or replaced is refused from the next
 * handshake on and its connections are closed at once.
 *
 * A connection is bound to the store unless it is an outgoing one whose
 * peer the application named by key: that key was trusted by the caller,
 * not through the store, and store changes leave it alone.
 */
#include "conn.h"

#include <stdio.h>
#include <string.h>

#include "crypto.h"
#include "log.h"
#include "secure.h"

static int same_key(const uint8_t *a, const uint8_t *b)
{
    return p11n_ct_eq(a, b, P11N_PUBKEY_LEN);
}

size_t p11n_trust_candidates(p11n_conn *c, uint8_t (*out)[P11N_PUBKEY_LEN])
{
    p11n_listener *l = c->listener;
    p11n_ctx *ctx = c->ctx;
    size_t n = 0;
    if (l->nids == 0) {
        for (size_t i = 0; i < ctx->npeers && n < P11N_MAX_KK_CANDIDATES; i++)
            memcpy(out[n++], ctx->peers[i].pub, P11N_PUBKEY_LEN);
        /* Once per listener: each handshake would say it again. */
        if (ctx->npeers > P11N_MAX_KK_CANDIDATES && !l->warned_many) {
            l->warned_many = 1;
            p11n_log(ctx, P11N_LOG_WARN,
                "KK listener %s: %zu peers in the store; it tries the first %d only "
                "(list the accepted identifiers)", l->addr, ctx->npeers, P11N_MAX_KK_CANDIDATES);
        }
        return n;
    }
    for (size_t i = 0; i < l->nids && n < P11N_MAX_KK_CANDIDATES; i++) {
        const p11n_peer_entry *e = p11n_peer_by_id(ctx, l->ids[i]);
        if (e == NULL) {
            /* Removed since the listener started: not the listener's error. */
            p11n_log(ctx, P11N_LOG_DEBUG, "conn #%lu: accepted peer %s is not in the peer "
                "store; skipped", c->id, l->ids[i]);
            continue;
        }
        memcpy(out[n++], e->pub, P11N_PUBKEY_LEN);
    }
    return n;
}

int p11n_trust_refresh(p11n_conn *c)
{
    if (c->incoming || c->by_key)
        return P11N_OK;
    const p11n_peer_entry *e = p11n_peer_by_id(c->ctx, c->peer_name);
    if (e == NULL)
        return P11N_ERR_UNKNOWN_PEER;
    memcpy(c->remote, e->pub, P11N_PUBKEY_LEN);
    return P11N_OK;
}

/* The store entry an incoming key is accepted as, or NULL. */
static const p11n_peer_entry *accepted_as(const p11n_conn *c)
{
    const p11n_listener *l = c->listener;
    if (l->nids == 0)
        return p11n_peer_by_pub(c->ctx, c->remote);
    for (size_t i = 0; i < l->nids; i++) {
        const p11n_peer_entry *e = p11n_peer_by_id(c->ctx, l->ids[i]);
        if (e != NULL && same_key(e->pub, c->remote))
            return e;
    }
    return NULL;
}

int p11n_trust_authorize(p11n_conn *c)
{
    const p11n_peer_entry *e;
    c->peer_id[0] = '\0';
    if (c->incoming) {
        e = accepted_as(c);
        /* A KK key was a candidate when the handshake began: it has left
         * the store since. An XK key is seen for the first time here. */
        if (e == NULL)
            return c->ch->wire->responder_chooses ? P11N_ERR_REVOKED : P11N_ERR_UNKNOWN_PEER;
    } else if (!c->by_key) {
        e = p11n_peer_by_id(c->ctx, c->peer_name);
        if (e == NULL || !same_key(e->pub, c->remote))
            return P11N_ERR_REVOKED;
    } else {
        e = p11n_peer_by_pub(c->ctx, c->remote);  /* only to name it */
    }
    if (e != NULL) {
        snprintf(c->peer_id, sizeof(c->peer_id), "%s", e->id);
        snprintf(c->peer, sizeof(c->peer), "%s", e->id);
    } else {
        p11n_hex_encode(c->remote, P11N_PUBKEY_LEN, c->peer);
    }
    return P11N_OK;
}

/* The identifier a connection's trust rests on and the key it must still
 * have, or NULL when nothing the store does can revoke it (yet). */
static const char *bound_id(const p11n_conn *c)
{
    switch (c->state) {
    case P11N_CS_ESTABLISHED:
    case P11N_CS_CLOSING:
        return c->incoming || !c->by_key ? c->peer_id : NULL;
    case P11N_CS_HANDSHAKE:
        /* An incoming key is known when the handshake ends, and checked
         * there; an outgoing one was taken from the store at its start. */
        return !c->incoming && !c->by_key ? c->peer_name : NULL;
    default:
        return NULL;
    }
}

void p11n_trust_revoke_stale(p11n_ctx *ctx)
{
    if (ctx->cl == NULL)
        return;  /* no connection was ever made */
    p11n_conn *next;
    for (p11n_conn *c = ctx->cl->conns; c != NULL; c = next) {
        /* Ending calls back the application, which may add connections
         * (at the head) or close others; none is freed before the loop's
         * next turn. */
        next = c->next;
        const char *id = bound_id(c);
        if (id == NULL || *id == '\0')
            continue;
        const p11n_peer_entry *e = p11n_peer_by_id(ctx, id);
        if (e != NULL && same_key(e->pub, c->remote))
            continue;
        char text[160];
        snprintf(text, sizeof(text), "peer key revoked: %s %s", id,
            e == NULL ? "was removed from the peer store" : "has a new key in the peer store");
        p11n_conn_end(c, P11N_ERR_REVOKED, text);
    }
}

/* ---- the public accessors ---- */

const char *p11n_conn_peer(const p11n_conn *c)
{
    if (c == NULL || c->peer[0] == '\0')
        return NULL;
    return c->peer;
}

const char *p11n_conn_peer_id(const p11n_conn *c)
{
    if (c == NULL || c->peer[0] == '\0' || c->peer_id[0] == '\0')
        return NULL;
    return c->peer_id;
}

int p11n_conn_peer_key(const p11n_conn *c, uint8_t out[P11N_PUBKEY_LEN])
{
    if (c == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    if (c->peer[0] == '\0')
        return P11N_ERR_STATE;
    memcpy(out, c->remote, P11N_PUBKEY_LEN);
    return P11N_OK;
}
