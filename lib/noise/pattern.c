/*
 * Handshake patterns as data (Noise rev. 34, sections 7.4-7.7) and the
 * protocol-name parser. The engine in handshake_state.c walks these tables;
 * nothing else knows what a pattern looks like.
 */
#include <string.h>

#include "noise.h"

#define E P11N_TOK_E
#define S P11N_TOK_S
#define EE P11N_TOK_EE
#define ES P11N_TOK_ES
#define SE P11N_TOK_SE
#define SS P11N_TOK_SS
#define PRE_E P11N_PRE_E
#define PRE_S P11N_PRE_S

/* PATTERN(name, initiator pre-message, responder pre-message, messages...) */
#define PATTERN(id, pi, pr, ...) \
    static const p11n_pattern pat_##id = { \
        .name = #id, \
        .pre = { (pi), (pr) }, \
        .nmsg = sizeof((uint8_t[][P11N_MAX_TOKENS]){ __VA_ARGS__ }) / P11N_MAX_TOKENS, \
        .msg = { __VA_ARGS__ }, \
    }

/* One-way patterns (7.4). */
PATTERN(N, 0, PRE_S, { E, ES });
PATTERN(K, PRE_S, PRE_S, { E, ES, SS });
PATTERN(X, 0, PRE_S, { E, ES, S, SS });

/* Fundamental interactive patterns (7.5). */
PATTERN(NN, 0, 0, { E }, { E, EE });
PATTERN(NK, 0, PRE_S, { E, ES }, { E, EE });
PATTERN(NX, 0, 0, { E }, { E, EE, S, ES });
PATTERN(XN, 0, 0, { E }, { E, EE }, { S, SE });
PATTERN(XK, 0, PRE_S, { E, ES }, { E, EE }, { S, SE });
PATTERN(XX, 0, 0, { E }, { E, EE, S, ES }, { S, SE });
PATTERN(KN, PRE_S, 0, { E }, { E, EE, SE });
PATTERN(KK, PRE_S, PRE_S, { E, ES, SS }, { E, EE, SE });
PATTERN(KX, PRE_S, 0, { E }, { E, EE, SE, S, ES });
PATTERN(IN, 0, 0, { E, S }, { E, EE, SE });
PATTERN(IK, 0, PRE_S, { E, ES, S, SS }, { E, EE, SE });
PATTERN(IX, 0, 0, { E, S }, { E, EE, SE, S, ES });

/* Deferred patterns (7.6). */
PATTERN(NK1, 0, PRE_S, { E }, { E, EE, ES });
PATTERN(NX1, 0, 0, { E }, { E, EE, S }, { ES });
PATTERN(X1N, 0, 0, { E }, { E, EE }, { S }, { SE });
PATTERN(X1K, 0, PRE_S, { E, ES }, { E, EE }, { S }, { SE });
PATTERN(XK1, 0, PRE_S, { E }, { E, EE, ES }, { S, SE });
PATTERN(X1K1, 0, PRE_S, { E }, { E, EE, ES }, { S }, { SE });
PATTERN(X1X, 0, 0, { E }, { E, EE, S, ES }, { S }, { SE });
PATTERN(XX1, 0, 0, { E }, { E, EE, S }, { ES, S, SE });
PATTERN(X1X1, 0, 0, { E }, { E, EE, S }, { ES, S }, { SE });
PATTERN(K1N, PRE_S, 0, { E }, { E, EE }, { SE });
PATTERN(K1K, PRE_S, PRE_S, { E, ES }, { E, EE }, { SE });
PATTERN(KK1, PRE_S, PRE_S, { E }, { E, EE, SE, ES });
PATTERN(K1K1, PRE_S, PRE_S, { E }, { E, EE, ES }, { SE });
PATTERN(K1X, PRE_S, 0, { E }, { E, EE, S, ES }, { SE });
PATTERN(KX1, PRE_S, 0, { E }, { E, EE, SE, S }, { ES });
PATTERN(K1X1, PRE_S, 0, { E }, { E, EE, S }, { SE, ES });
PATTERN(I1N, 0, 0, { E, S }, { E, EE }, { SE });
PATTERN(I1K, 0, PRE_S, { E, ES, S }, { E, EE }, { SE });
PATTERN(IK1, 0, PRE_S, { E, S }, { E, EE, SE, ES });
PATTERN(I1K1, 0, PRE_S, { E, S }, { E, EE, ES }, { SE });
PATTERN(I1X, 0, 0, { E, S }, { E, EE, S, ES }, { SE });
PATTERN(IX1, 0, 0, { E, S }, { E, EE, SE, S }, { ES });
PATTERN(I1X1, 0, 0, { E, S }, { E, EE, S }, { SE, ES });

const p11n_pattern *const p11n_patterns[] = {
    &pat_N, &pat_K, &pat_X,
    &pat_NN, &pat_NK, &pat_NX, &pat_XN, &pat_XK, &pat_XX,
    &pat_KN, &pat_KK, &pat_KX, &pat_IN, &pat_IK, &pat_IX,
    &pat_NK1, &pat_NX1, &pat_X1N, &pat_X1K, &pat_XK1, &pat_X1K1, &pat_X1X,
    &pat_XX1, &pat_X1X1, &pat_K1N, &pat_K1K, &pat_KK1, &pat_K1K1, &pat_K1X,
    &pat_KX1, &pat_K1X1, &pat_I1N, &pat_I1K, &pat_IK1, &pat_I1K1, &pat_I1X,
    &pat_IX1, &pat_I1X1,
    NULL
};

const p11n_pattern *p11n_pattern_by_name(const char *name, size_t len)
{
    for (const p11n_pattern *const *p = p11n_patterns; *p != NULL; p++)
        if (strlen((*p)->name) == len && memcmp((*p)->name, name, len) == 0)
            return *p;
    return NULL;
}

static size_t token_count(const uint8_t *toks)
{
    size_t n = 0;
    while (n < P11N_MAX_TOKENS && toks[n] != P11N_TOK_END)
        n++;
    return n;
}

/* psk0 puts a psk token at the start of the first message, pskN at the end
 * of message N (section 9.2). The tables leave room for every legal
 * combination; the check keeps a future table honest. */
static int apply_psk(p11n_protocol *p, unsigned n)
{
    uint8_t *toks = p->msg[n == 0 ? 0 : n - 1];
    size_t count = token_count(toks);
    if (count + 1 >= P11N_MAX_TOKENS)
        return P11N_ERR_UNSUPPORTED;
    if (n == 0) {
        memmove(toks + 1, toks, count);
        toks[0] = P11N_TOK_PSK;
    } else {
        toks[count] = P11N_TOK_PSK;
    }
    toks[count + 1] = P11N_TOK_END;
    p->npsk++;
    return P11N_OK;
}

/* Modifiers: "psk<N>" joined by '+'. Each N at most once, N <= messages.
 * Anything else (fallback, hfs, ...) is unsupported. */
static int parse_modifiers(const char *s, size_t len, p11n_protocol *p)
{
    unsigned seen = 0;
    size_t i = 0;
    while (i < len) {
        if (len - i < 4 || memcmp(s + i, "psk", 3) != 0)
            return P11N_ERR_UNSUPPORTED;
        i += 3;
        if (s[i] < '0' || s[i] > '9')
            return P11N_ERR_UNSUPPORTED;
        unsigned n = (unsigned)(s[i] - '0');
        i++;
        /* a single digit suffices: no pattern has more than 4 messages */
        if (n > p->nmsg || (seen & (1u << n)) != 0)
            return P11N_ERR_UNSUPPORTED;
        seen |= 1u << n;
        int rc = apply_psk(p, n);
        if (rc != P11N_OK)
            return rc;
        if (i < len) {
            if (s[i] != '+' || i + 1 == len)
                return P11N_ERR_UNSUPPORTED;
            i++;
        }
    }
    return P11N_OK;
}

/* Splits off the next '_'-separated field of [*s, end). */
static int next_field(const char **s, const char *end, const char **field, size_t *len)
{
    const char *us = memchr(*s, '_', (size_t)(end - *s));
    const char *stop = us != NULL ? us : end;
    *field = *s;
    *len = (size_t)(stop - *s);
    *s = us != NULL ? us + 1 : end;
    return *len > 0;
}

int p11n_protocol_parse(const char *name, p11n_protocol *out)
{
    if (name == NULL || out == NULL)
        return P11N_ERR_INVALID_ARG;
    memset(out, 0, sizeof(*out));
    size_t namelen = strlen(name);
    if (namelen > P11N_MAX_PROTOCOL_NAME || strncmp(name, "Noise_", 6) != 0)
        return P11N_ERR_UNSUPPORTED;

    const char *s = name + 6, *end = name + namelen;
    const char *fpat, *fdh, *fcipher, *fhash;
    size_t lpat, ldh, lcipher, lhash;
    if (!next_field(&s, end, &fpat, &lpat) || !next_field(&s, end, &fdh, &ldh) ||
        !next_field(&s, end, &fcipher, &lcipher) || !next_field(&s, end, &fhash, &lhash) ||
        s != end || fhash + lhash != end)
        return P11N_ERR_UNSUPPORTED;

    /* The base pattern is upper-case letters and digits; modifiers start
     * with the first lower-case letter. */
    size_t lbase = 0;
    while (lbase < lpat && !(fpat[lbase] >= 'a' && fpat[lbase] <= 'z'))
        lbase++;
    out->pattern = p11n_pattern_by_name(fpat, lbase);
    out->dh = p11n_dh_by_name(fdh, ldh);
    out->cipher = p11n_cipher_by_name(fcipher, lcipher);
    out->hash = p11n_hash_by_name(fhash, lhash);
    if (out->pattern == NULL || out->dh == NULL || out->cipher == NULL ||
        out->hash == NULL) {
        memset(out, 0, sizeof(*out));
        return P11N_ERR_UNSUPPORTED;
    }

    out->pre[0] = out->pattern->pre[0];
    out->pre[1] = out->pattern->pre[1];
    out->nmsg = out->pattern->nmsg;
    memcpy(out->msg, out->pattern->msg, sizeof(out->msg));
    int rc = parse_modifiers(fpat + lbase, lpat - lbase, out);
    if (rc != P11N_OK) {
        memset(out, 0, sizeof(*out));
        return rc;
    }
    memcpy(out->name, name, namelen + 1);
    out->namelen = namelen;
    return P11N_OK;
}
