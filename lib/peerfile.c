/*
 * Ceremony text: lines "IDENTIFIER PUBHEX", '#' starting a comment, blank
 * lines allowed. Every line is checked; the first bad one is reported.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "p11noise.h"

int p11n_identifier_valid(const char *id)
{
    if (id == NULL)
        return 0;
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        unsigned char c = (unsigned char)id[n];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok || n == P11N_MAX_IDENTIFIER)
            return 0;
    }
    return n > 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* One line, without its newline and comment: split into at most three
 * whitespace-separated fields. Returns the number of fields. */
static int split(const char *p, size_t len, const char *f[3], size_t flen[3])
{
    int nf = 0;
    size_t i = 0;
    for (;;) {
        while (i < len && is_space(p[i]))
            i++;
        if (i == len || nf == 3)
            return i == len ? nf : nf + 1;
        f[nf] = p + i;
        while (i < len && !is_space(p[i]))
            i++;
        flen[nf] = (size_t)(p + i - f[nf]);
        nf++;
    }
}

/* The line starting at `pos`: its content length (comment and newline
 * removed) and where the next line starts. */
static size_t next_line(const char *text, size_t len, size_t pos, size_t *content_len)
{
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl ? (size_t)(nl - text) : len;
    const char *hash = memchr(text + pos, '#', end - pos);
    *content_len = (hash ? (size_t)(hash - text) : end) - pos;
    return nl ? end + 1 : len;
}

static int parse_line(const char *p, size_t len, p11n_peer_entry *e, int *blank)
{
    const char *f[3];
    size_t flen[3];
    int nf = split(p, len, f, flen);
    *blank = nf == 0;
    if (nf == 0)
        return P11N_OK;
    if (nf != 2)
        return P11N_ERR_PARSE;
    if (flen[0] > P11N_MAX_IDENTIFIER)
        return P11N_ERR_BAD_IDENTIFIER;
    memcpy(e->id, f[0], flen[0]);
    e->id[flen[0]] = '\0';
    if (!p11n_identifier_valid(e->id))
        return P11N_ERR_BAD_IDENTIFIER;
    if (flen[1] != 2 * P11N_PUBKEY_LEN ||
        p11n_hex_decode(f[1], flen[1], e->pub, P11N_PUBKEY_LEN) != P11N_OK)
        return P11N_ERR_PARSE;
    if (p11n_dh_secp256k1.check_pub(e->pub) != P11N_OK)
        return P11N_ERR_BAD_PUBKEY;
    return P11N_OK;
}

int p11n_peers_parse(const char *text, size_t len, p11n_peer_entry **entries, size_t *n,
    size_t *bad_line)
{
    size_t dummy;
    if (bad_line == NULL)
        bad_line = &dummy;
    *bad_line = 0;
    if (entries == NULL || n == NULL || (text == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    *entries = NULL;
    *n = 0;
    if (len > 0 && memchr(text, '\0', len) != NULL) {
        /* Report the line of the NUL so the user can find it. */
        const char *z = memchr(text, '\0', len);
        size_t line = 1;
        for (const char *q = text; q < z; q++)
            line += *q == '\n';
        *bad_line = line;
        return P11N_ERR_PARSE;
    }
    /* Upper bound on entries: one per line. */
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += text[i] == '\n';
    p11n_peer_entry *e = calloc(cap, sizeof(*e));
    if (e == NULL)
        return P11N_ERR_NOMEM;
    size_t count = 0, line = 0, pos = 0;
    int err = P11N_OK;
    while (pos < len && err == P11N_OK) {
        size_t clen;
        size_t start = pos;
        pos = next_line(text, len, pos, &clen);
        line++;
        int blank;
        err = parse_line(text + start, clen, &e[count], &blank);
        if (err != P11N_OK || blank)
            continue;
        for (size_t j = 0; j < count; j++)
            if (strcmp(e[j].id, e[count].id) == 0)
                err = P11N_ERR_EXISTS;
        if (err == P11N_OK)
            count++;
    }
    if (err != P11N_OK) {
        *bad_line = line;
        free(e);
        return err;
    }
    *entries = e;
    *n = count;
    return P11N_OK;
}

size_t p11n_peers_line(const char *text, size_t len, size_t index)
{
    size_t line = 0, pos = 0, seen = 0;
    while (text != NULL && pos < len) {
        size_t clen, start = pos;
        pos = next_line(text, len, pos, &clen);
        line++;
        const char *f[3];
        size_t flen[3];
        if (split(text + start, clen, f, flen) > 0 && seen++ == index)
            return line;
    }
    return 0;
}
