/* What an operator asks a running service: its connections, walked one
 * by one, each described by a snapshot (p11n_conn_info) that the caller
 * owns. Reads conn.c's structure, never changes it. */
#include "conn.h"

#include <stdio.h>
#include <string.h>

#include "crypto.h"
#include "transport.h"

_Static_assert(P11N_CONN_ADDR_MAX >= P11N_ADDRSTR, "the public address text holds ours");
_Static_assert(P11N_CONN_HASH_MAX >= P11N_MAXHASHLEN, "the public hash field holds every hash");

/* By enum p11n_conn_state: the words status output shows. */
static const char *const state_names[] = {
    [P11N_CS_START] = "starting",
    [P11N_CS_DIALING] = "dialing",
    [P11N_CS_HANDSHAKE] = "handshake",
    [P11N_CS_ESTABLISHED] = "established",
    [P11N_CS_CLOSING] = "closing",
    [P11N_CS_BACKOFF] = "backoff",
    [P11N_CS_DEAD] = "closed",
};

int p11n_conn_foreach(p11n_ctx *ctx, int (*fn)(p11n_conn *c, void *arg), void *arg)
{
    if (ctx == NULL || fn == NULL)
        return P11N_ERR_INVALID_ARG;
    if (ctx->cl == NULL)
        return 0;  /* no listener or connection was ever made */
    /* `next` is read first: the walk survives nothing else (no close
     * inside, as documented), but a dead one is skipped. */
    for (p11n_conn *c = ctx->cl->conns, *next; c != NULL; c = next) {
        next = c->next;
        if (c->state == P11N_CS_DEAD)
            continue;
        int rc = fn(c, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int p11n_conn_info_get(const p11n_conn *c, p11n_conn_info *out)
{
    size_t size;
    if (c == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    memcpy(&size, out, sizeof(size));
    if (size < sizeof(size_t))
        return P11N_ERR_INVALID_ARG;  /* not made with P11N_CONN_INFO_INIT */
    p11n_conn_info info;
    memset(&info, 0, sizeof(info));
    info.size = sizeof(info);
    info.id = c->id;
    info.incoming = c->incoming;
    info.state = (size_t)c->state < sizeof(state_names) / sizeof(state_names[0])
        ? state_names[c->state] : "unknown";
    snprintf(info.peer, sizeof(info.peer), "%s", c->peer[0] ? c->peer : c->peer_name);
    snprintf(info.peer_id, sizeof(info.peer_id), "%s", c->peer_id);
    snprintf(info.addr, sizeof(info.addr), "%s", c->addr);
    uint64_t now = p11n_now_ms();
    info.since_ms = now > c->started ? now - c->started : 0;
    info.msgs_in = c->msgs_in;
    info.msgs_out = c->msgs_out;
    info.bytes_in = c->bytes_in;
    info.bytes_out = c->bytes_out;
    if (c->t != NULL) {
        struct p11n_rotations r;
        p11n_transport_rotations(c->t, &r);
        info.rotations_in = r.received;
        info.rotations_out = r.sent;
        info.last_rotation_unix_ms = r.last_unix_ms;
        if (p11n_transport_hash(c->t, info.handshake_hash, sizeof(info.handshake_hash),
                &info.handshake_hash_len) != P11N_OK)
            info.handshake_hash_len = 0;
    }
    /* An older caller's smaller structure gets the fields it knows;
     * `size` stays what the caller said. */
    if (size > sizeof(info))
        memset((unsigned char *)out + sizeof(info), 0, size - sizeof(info));
    memcpy((unsigned char *)out + sizeof(size),
        (const unsigned char *)&info + sizeof(size),
        (size < sizeof(info) ? size : sizeof(info)) - sizeof(size));
    return P11N_OK;
}

int p11n_conn_handshake_hash(const p11n_conn *c, uint8_t *out, size_t cap, size_t *len)
{
    if (len != NULL)
        *len = 0;
    if (c == NULL || out == NULL || len == NULL)
        return P11N_ERR_INVALID_ARG;
    /* The transport exists from the end of the handshake to the end of
     * the connection, and holds the hash. */
    if (c->t == NULL || c->state == P11N_CS_DEAD)
        return P11N_ERR_STATE;
    return p11n_transport_hash(c->t, out, cap, len);
}
