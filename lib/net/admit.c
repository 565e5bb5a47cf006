/*
 * Who gets in: the half-open table, eviction, the established caps, and
 * the rate-limited lines about refused, evicted and failed incoming
 * connections.
 *
 * Behind a proxy every peer has the proxy's address, so nothing here
 * looks at addresses. An idle socket costs an attacker nothing, so a
 * full handshake table does not refuse the newcomer: it closes the
 * connection that has waited longest for its peer (as kernels drop the
 * oldest half-open connection), and idle sockets cannot hold the door
 * shut. A connection whose act is with the token has done its part and
 * is not on the lists (the token budget bounds that work).
 */
#include "conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define TEXT_LEN 200

/* The summary's names for enum p11n_refusal. */
static const char *const refusal_names[P11N_RF_COUNT] = {
    [P11N_RF_EVICTED] = "evicted",
    [P11N_RF_TABLE_FULL] = "handshake table full",
    [P11N_RF_LIMIT] = "over a limit",
    [P11N_RF_OVERLOAD] = "token work overload",
    [P11N_RF_ACT1_TIMEOUT] = "act-1 timeout",
    [P11N_RF_ACT_TIMEOUT] = "act timeout",
    [P11N_RF_CLOSED] = "closed by peer",
    [P11N_RF_NOT_ACCEPTED] = "not accepted",
    [P11N_RF_BAD_ACT] = "bad act",
};

/* ---- the half-open lists ---- */

static struct p11n_ho_list *ho_list(p11n_conn *c, int i)
{
    return i == P11N_HO_CTX ? &c->ctx->cl->halfopen : &c->listener->halfopen;
}

void p11n_admit_wait(p11n_conn *c)
{
    if (!c->incoming || !c->counted || c->halfopen)
        return;
    c->halfopen = 1;
    c->wait_since = c->ctx->now;
    for (int i = 0; i < P11N_HO_LISTS; i++) {
        struct p11n_ho_list *l = ho_list(c, i);
        c->ho[i].prev = l->tail;
        c->ho[i].next = NULL;
        if (l->tail != NULL)
            l->tail->ho[i].next = c;
        else
            l->head = c;
        l->tail = c;
    }
}

void p11n_admit_unwait(p11n_conn *c)
{
    if (!c->halfopen)
        return;
    c->halfopen = 0;
    for (int i = 0; i < P11N_HO_LISTS; i++) {
        struct p11n_ho_list *l = ho_list(c, i);
        if (c->ho[i].prev != NULL)
            c->ho[i].prev->ho[i].next = c->ho[i].next;
        else
            l->head = c->ho[i].next;
        if (c->ho[i].next != NULL)
            c->ho[i].next->ho[i].prev = c->ho[i].prev;
        else
            l->tail = c->ho[i].prev;
        c->ho[i].prev = c->ho[i].next = NULL;
    }
}

/* ---- the refusal log ---- */

static void refusal_line(void *arg, int summary, const char *line)
{
    p11n_listener *l = arg;
    if (summary)
        p11n_log_ev(l->ctx, P11N_LOG_WARN, "refusals", 0, "listener %s: %s", l->addr, line);
    else
        p11n_log(l->ctx, P11N_LOG_WARN, "%s", line);
}

/* The earlier of the two limiters' summaries (0: none pending). */
static uint64_t summary_due(const p11n_listener *l)
{
    uint64_t a = p11n_ratelog_due(&l->refusals), b = p11n_ratelog_due(&l->arrivals);
    return a == 0 || (b != 0 && b < a) ? b : a;
}

static void on_summary(void *obj)
{
    p11n_listener *l = obj;
    p11n_ratelog_tick(&l->refusals, l->ctx->now, 0);
    p11n_ratelog_tick(&l->arrivals, l->ctx->now, 0);
    uint64_t due = summary_due(l);
    if (due != 0)
        p11n_timer_arm(l->ctx, &l->summary, due);
}

void p11n_admit_listener_init(p11n_listener *l)
{
    static const char *const accepted[] = { "accepted" };
    unsigned per_s = l->ctx->opt.log_refusals_per_s;
    p11n_ratelog_init(&l->refusals, per_s, "refused", refusal_names, P11N_RF_COUNT,
        refusal_line, l);
    p11n_ratelog_init(&l->arrivals, per_s, "accepted", accepted, 1, refusal_line, l);
    p11n_timer_init(&l->summary, on_summary, l);
}

void p11n_admit_listener_flush(p11n_listener *l)
{
    p11n_timer_cancel(l->ctx, &l->summary);
    p11n_ratelog_tick(&l->arrivals, l->ctx->now, 1);
    p11n_ratelog_tick(&l->refusals, l->ctx->now, 1);
}

/* Count an event of `reason` in rl, one of l's; 1 if its line may go
 * out. A closed listener has no timer left for a summary, and only the
 * connections it had can still fail: their lines all go out. */
static int line_allowed(p11n_listener *l, p11n_ratelog *rl, int reason)
{
    if (l->closed)
        return 1;
    if (p11n_ratelog_allow(rl, l->ctx->now, (size_t)reason))
        return 1;
    if (l->summary.slot == 0)
        p11n_timer_arm(l->ctx, &l->summary, summary_due(l));
    return 0;
}

static int refusal_allowed(p11n_listener *l, int reason)
{
    return line_allowed(l, &l->refusals, reason);
}

int p11n_admit_arrival_allowed(p11n_listener *l)
{
    return line_allowed(l, &l->arrivals, 0);
}

void p11n_admit_refusal(p11n_listener *l, int reason, const char *fmt, ...)
{
    if (!refusal_allowed(l, reason) || !p11n_log_on(l->ctx, P11N_LOG_WARN))
        return;
    char line[TEXT_LEN * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    refusal_line(l, 0, line);
}

/* Which count an ended handshake goes under. */
static int refusal_of(const p11n_conn *c, int reason)
{
    static const struct {
        int rc;
        int why;
    } map[] = {
        { P11N_ERR_EVICTED, P11N_RF_EVICTED }, { P11N_ERR_LIMIT, P11N_RF_LIMIT },
        { P11N_ERR_OVERLOAD, P11N_RF_OVERLOAD }, { P11N_ERR_CLOSED, P11N_RF_CLOSED },
        { P11N_ERR_RESET, P11N_RF_CLOSED }, { P11N_ERR_UNKNOWN_PEER, P11N_RF_NOT_ACCEPTED },
        { P11N_ERR_REVOKED, P11N_RF_NOT_ACCEPTED },
    };
    if (reason == P11N_ERR_TIMEOUT)
        return c->acts_in ? P11N_RF_ACT_TIMEOUT : P11N_RF_ACT1_TIMEOUT;
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].rc == reason)
            return map[i].why;
    return P11N_RF_BAD_ACT;
}

int p11n_admit_log_allowed(const p11n_conn *c, int reason)
{
    if (!c->incoming || c->listener == NULL || c->state == P11N_CS_ESTABLISHED
        || c->state == P11N_CS_CLOSING)
        return 1;
    return refusal_allowed(c->listener, refusal_of(c, reason));
}

/* ---- admission ---- */

/* The cap an established count has reached, as text naming its option,
 * or NULL. */
static const char *established_full(const p11n_ctx *ctx, const p11n_listener *l,
    char *text, size_t cap)
{
    if (ctx->cl->established >= ctx->opt.max_established)
        snprintf(text, cap, "%u established connections (max_established %u)",
            ctx->cl->established, ctx->opt.max_established);
    else if (l != NULL && l->max_established > 0 && l->established >= l->max_established)
        snprintf(text, cap, "%u established connections on this listener (the listener's "
            "max_established %u)", l->established, l->max_established);
    else
        return NULL;
    return text;
}

/* Which half-open list is full (P11N_HO_LISTENER first: evicting from
 * it frees a slot in both), or -1. */
static int table_full(const p11n_listener *l)
{
    if (l->handshakes >= l->max_handshakes)
        return P11N_HO_LISTENER;
    if (l->ctx->cl->handshakes_in >= l->ctx->opt.max_handshakes)
        return P11N_HO_CTX;
    return -1;
}

static void evict(p11n_conn *v, int which)
{
    p11n_ctx *ctx = v->ctx;
    char text[TEXT_LEN];
    if (which == P11N_HO_CTX)
        snprintf(text, sizeof(text), "evicted: handshake table full (%u of max_handshakes), "
            "waited %llu ms without completing an act", ctx->cl->handshakes_in,
            (unsigned long long)(ctx->now - v->wait_since));
    else
        snprintf(text, sizeof(text), "evicted: handshake table full (%u of the listener's "
            "max_handshakes), waited %llu ms without completing an act",
            v->listener->handshakes, (unsigned long long)(ctx->now - v->wait_since));
    p11n_conn_end(v, P11N_ERR_EVICTED, text);
}

int p11n_admit_accept(p11n_listener *l, const char *addr)
{
    p11n_ctx *ctx = l->ctx;
    char text[TEXT_LEN];
    if (established_full(ctx, l, text, sizeof(text)) != NULL) {
        p11n_admit_refusal(l, P11N_RF_LIMIT, "incoming from %s on %s refused: %s [%s]", addr,
            l->addr, text, p11n_strerror(P11N_ERR_LIMIT));
        return P11N_ERR_LIMIT;
    }
    int which = table_full(l);
    if (which < 0)
        return P11N_OK;
    p11n_conn *v = which == P11N_HO_CTX ? ctx->cl->halfopen.head : l->halfopen.head;
    if (v != NULL) {
        evict(v, which);
        /* The victim's `closed` callback may have closed the listener. */
        if (l->closed)
            return P11N_ERR_CLOSED;
        if ((which = table_full(l)) < 0)
            return P11N_OK;
    }
    p11n_admit_refusal(l, P11N_RF_TABLE_FULL, "incoming from %s on %s refused: %u handshakes "
        "in progress (max_handshakes %u), %u on this listener (limit %u), none waiting for "
        "its peer [%s]", addr, l->addr, ctx->cl->handshakes_in, ctx->opt.max_handshakes,
        l->handshakes, l->max_handshakes, p11n_strerror(P11N_ERR_LIMIT));
    return P11N_ERR_LIMIT;
}

int p11n_admit_established(p11n_conn *c)
{
    p11n_ctx *ctx = c->ctx;
    char cap[TEXT_LEN], text[TEXT_LEN + 60];
    if (established_full(ctx, c->listener, cap, sizeof(cap)) != NULL) {
        snprintf(text, sizeof(text), "handshake complete but refused: %s", cap);
        p11n_conn_end(c, P11N_ERR_LIMIT, text);
        return 0;
    }
    c->est_counted = 1;
    ctx->cl->established++;
    if (c->listener != NULL)
        c->listener->established++;
    return 1;
}

void p11n_admit_release(p11n_conn *c)
{
    p11n_admit_unwait(c);
    if (!c->est_counted)
        return;
    c->est_counted = 0;
    c->ctx->cl->established--;
    if (c->listener != NULL)
        c->listener->established--;
}
