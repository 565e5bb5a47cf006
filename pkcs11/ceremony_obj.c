/*
 * The trust rules for ceremony objects, without I/O: one object judged
 * alone (a table of checks, each naming what it refuses and why), then the
 * set judged for ambiguity. Rules and reasons: doc/ceremony.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceremony_obj.h"
#include "crypto.h"
#include "token.h"

static int is_bool(const uint8_t *v, size_t len, CK_BBOOL want)
{
    return v != NULL && len == sizeof(CK_BBOOL) && v[0] == want;
}

/* Each check returns NULL when the object passes, else the reason. */

static const char *check_private(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    (void)o;
    if (a->priv == NULL)
        return "CKA_PRIVATE unreadable: may be creatable without the PIN";
    if (!is_bool(a->priv, a->privlen, CK_TRUE))
        return "public object (CKA_PRIVATE false): creatable without the PIN";
    if (!a->found_private)
        return "CKA_PRIVATE true, but the token does not find it among private objects";
    return NULL;
}

static const char *check_class(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    (void)o;
    return a->ec_public_key ? NULL : "not an EC public key (CKA_CLASS, CKA_KEY_TYPE)";
}

static const char *check_modifiable(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    (void)o;
    /* PKCS#11's default for a missing CKA_MODIFIABLE is true. */
    if (a->modifiable == NULL)
        return "CKA_MODIFIABLE missing or unreadable: by PKCS#11's default it is modifiable";
    if (!is_bool(a->modifiable, a->modifiablelen, CK_FALSE))
        return "modifiable object (CKA_MODIFIABLE true): its key can change after the ceremony";
    return NULL;
}

static const char *check_identifier(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    (void)a;
    return o->ident[0] != '\0' ? NULL : "invalid identifier (1-64 characters of A-Za-z0-9._-)";
}

static const char *check_label(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    size_t n = strlen(o->ident);
    if (a->label == NULL || a->labellen != n || memcmp(a->label, o->ident, n) != 0)
        return "CKA_LABEL differs from the identifier";
    return NULL;
}

static const char *check_curve(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    (void)o;
    if (a->params == NULL || a->paramslen != sizeof(p11n_secp256k1_oid) ||
        memcmp(a->params, p11n_secp256k1_oid, sizeof(p11n_secp256k1_oid)) != 0)
        return "wrong curve (CKA_EC_PARAMS is not secp256k1)";
    return NULL;
}

static const char *check_point(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    if (a->point == NULL || p11n_ec_point_decode(a->point, a->pointlen, o->pub) != P11N_OK)
        return "CKA_EC_POINT is not a valid secp256k1 point";
    return NULL;
}

/* In order: the first failing check gives the reason. Who could have
 * written the object comes first, since that alone decides trust. */
static const char *(*const checks[])(const struct p11n_cer_attrs *, struct p11n_cer_obj *) = {
    check_private, check_class, check_modifiable, check_identifier, check_label,
    check_curve, check_point,
};

/* The CKA_ID after the prefix for messages: bytes other than printable
 * ASCII (and the backslash) as \xNN; "..." ends a cut. */
static void show_id(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t total = 0, o = 0;
    for (size_t i = 0; i < n; i++)
        total += p[i] > 0x20 && p[i] < 0x7f && p[i] != '\\' ? 1 : 4;
    for (size_t i = 0; i < n; i++) {
        int plain = p[i] > 0x20 && p[i] < 0x7f && p[i] != '\\';
        size_t len = plain ? 1 : 4;
        if (total >= cap && o + len + 3 >= cap) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (plain)
            out[o] = (char)p[i];
        else
            snprintf(out + o, 5, "\\x%02x", p[i]);
        o += len;
    }
    out[o] = '\0';
}

void p11n_cer_decode(const struct p11n_cer_attrs *a, struct p11n_cer_obj *o)
{
    memset(o, 0, sizeof(*o));
    size_t n = a->idlen;
    const uint8_t *id = a->id;
    show_id(id, n, o->shown, sizeof(o->shown));
    if (n <= P11N_MAX_IDENTIFIER && memchr(id, '\0', n) == NULL) {
        memcpy(o->ident, id, n);
        o->ident[n] = '\0';
        if (!p11n_identifier_valid(o->ident))
            o->ident[0] = '\0';
    }
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        const char *why = checks[i](a, o);
        if (why != NULL) {
            snprintf(o->reason, sizeof(o->reason), "%s", why);
            memset(o->pub, 0, sizeof(o->pub));
            return;
        }
    }
    o->valid = 1;
}

static int by_ident(const void *a, const void *b)
{
    return strcmp((*(struct p11n_cer_obj *const *)a)->ident,
        (*(struct p11n_cer_obj *const *)b)->ident);
}

static int by_pub(const void *a, const void *b)
{
    return memcmp((*(struct p11n_cer_obj *const *)a)->pub,
        (*(struct p11n_cer_obj *const *)b)->pub, P11N_PUBKEY_LEN);
}

static void mark_ident(struct p11n_cer_obj *o, const struct p11n_cer_obj *other, size_t run)
{
    (void)other;
    if (o->reason[0] == '\0')
        snprintf(o->reason, sizeof(o->reason),
            "identifier held by %zu ceremony objects: ambiguous", run);
}

static void mark_key(struct p11n_cer_obj *o, const struct p11n_cer_obj *other, size_t run)
{
    (void)run;
    if (o->reason[0] == '\0')
        snprintf(o->reason, sizeof(o->reason),
            "the same public key is stored under %s: ambiguous", other->ident);
}

/* Sort `v` with `cmp` and mark every member of a run of equal ones,
 * naming another member of its run. */
static void mark_runs(struct p11n_cer_obj **v, size_t n, int (*cmp)(const void *, const void *),
    void (*mark)(struct p11n_cer_obj *, const struct p11n_cer_obj *, size_t))
{
    qsort(v, n, sizeof(*v), cmp);
    for (size_t i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && cmp(&v[i], &v[j]) == 0; j++)
            ;
        for (size_t k = i; j - i > 1 && k < j; k++)
            mark(v[k], v[k == i ? i + 1 : i], j - i);
    }
}

static int by_shown(const void *a, const void *b)
{
    const struct p11n_cer_obj *x = a, *y = b;
    int c = strcmp(x->ident, y->ident);
    if (c == 0)
        c = strcmp(x->shown, y->shown);
    return c != 0 ? c : (x->h > y->h) - (x->h < y->h);
}

int p11n_cer_resolve(struct p11n_cer_obj *objs, size_t n)
{
    struct p11n_cer_obj **v = calloc(n + 1, sizeof(*v));
    if (v == NULL)
        return P11N_ERR_NOMEM;
    size_t nv = 0;
    for (size_t i = 0; i < n; i++)
        if (objs[i].valid)
            v[nv++] = &objs[i];
    mark_runs(v, nv, by_ident, mark_ident);
    mark_runs(v, nv, by_pub, mark_key);
    free(v);
    for (size_t i = 0; i < n; i++)
        objs[i].trusted = objs[i].valid && objs[i].reason[0] == '\0';
    qsort(objs, n, sizeof(*objs), by_shown);
    return P11N_OK;
}

int p11n_cer_split(const struct p11n_cer_obj *objs, size_t n, p11n_peer_entry **entries,
    size_t *nentries, p11n_ceremony_ignored **ignored, size_t *nignored)
{
    *entries = calloc(n + 1, sizeof(**entries));
    *ignored = calloc(n + 1, sizeof(**ignored));
    *nentries = *nignored = 0;
    if (*entries == NULL || *ignored == NULL) {
        free(*entries);
        free(*ignored);
        *entries = NULL;
        *ignored = NULL;
        return P11N_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (objs[i].trusted) {
            p11n_peer_entry *e = &(*entries)[(*nentries)++];
            memcpy(e->id, objs[i].ident, sizeof(e->id));
            memcpy(e->pub, objs[i].pub, sizeof(e->pub));
        } else {
            p11n_ceremony_ignored *g = &(*ignored)[(*nignored)++];
            memcpy(g->id, objs[i].shown, sizeof(g->id));
            memcpy(g->reason, objs[i].reason, sizeof(g->reason));
        }
    }
    return P11N_OK;
}
