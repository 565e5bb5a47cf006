/*
 * Ceremony text: lines "IDENTIFIER PUBHEX", '#' starting a comment, blank
 * lines allowed. Every line is checked; the first bad one is reported,
 * with its number and, for a person, what is wrong with it.
 */
#include <stdarg.h>
#include <stdio.h>
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

#define HEX_LEN (2 * P11N_PUBKEY_LEN)

/* Into why[cap] (when why is not NULL): what is wrong, for a person. */
static int say(char *why, size_t cap, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int say(char *why, size_t cap, int err, const char *fmt, ...)
{
    if (why != NULL && cap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* The key field k[0..n): PARSE or BAD_PUBKEY with the reason, or OK. The
 * checks run from the most to the least specific account of the fault. */
static int check_key(const char *k, size_t n, uint8_t pub[P11N_PUBKEY_LEN], char *why,
    size_t cap)
{
    size_t good = 0;
    while (good < n && strchr("0123456789abcdefABCDEF", k[good]) != NULL && k[good] != '\0')
        good++;
    unsigned char c = good < n ? (unsigned char)k[good] : 0;
    if (good < n && c >= 0x21 && c < 0x7f)
        return say(why, cap, P11N_ERR_PARSE, "bad character '%c' in the key (hex digits only)",
            c);
    if (good < n)
        return say(why, cap, P11N_ERR_PARSE, "bad byte 0x%02x in the key (hex digits only)", c);
    if (n == 2 * HEX_LEN - 2 && k[0] == '0' && k[1] == '4')
        return say(why, cap, P11N_ERR_PARSE, "uncompressed key (%zu hex digits): give the "
            "%d-digit compressed form, 02 or 03 and the x coordinate", n, HEX_LEN);
    if (n != HEX_LEN || p11n_hex_decode(k, n, pub, P11N_PUBKEY_LEN) != P11N_OK)
        return say(why, cap, P11N_ERR_PARSE, "wrong length: the key has %zu hex digits, not %d",
            n, HEX_LEN);
    if (pub[0] != 0x02 && pub[0] != 0x03)
        return say(why, cap, P11N_ERR_BAD_PUBKEY,
            "the key does not start with 02 or 03 (not a compressed point)");
    if (p11n_dh_secp256k1.check_pub(pub) != P11N_OK)
        return say(why, cap, P11N_ERR_BAD_PUBKEY, "the key is not a point of secp256k1");
    return P11N_OK;
}

static int parse_line(const char *p, size_t len, p11n_peer_entry *e, int *blank, char *why,
    size_t cap)
{
    const char *f[3];
    size_t flen[3];
    *blank = 0;
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        return say(why, cap, P11N_ERR_PARSE, "a byte order mark opens the line (save the file "
            "as UTF-8 without BOM)");
    int nf = split(p, len, f, flen);
    *blank = nf == 0;
    if (nf == 0)
        return P11N_OK;
    if (nf == 1)
        return say(why, cap, P11N_ERR_PARSE, "IDENTIFIER PUBHEX expected: one field only");
    if (nf == 3)
        return say(why, cap, P11N_ERR_PARSE, "extra field after the key");
    size_t n = flen[0] < P11N_MAX_IDENTIFIER ? flen[0] : P11N_MAX_IDENTIFIER;
    memcpy(e->id, f[0], n);
    e->id[n] = '\0';
    if (flen[0] > P11N_MAX_IDENTIFIER || !p11n_identifier_valid(e->id))
        return say(why, cap, P11N_ERR_BAD_IDENTIFIER,
            "the identifier is not 1-64 characters of A-Z a-z 0-9 . _ -");
    return check_key(f[1], flen[1], e->pub, why, cap);
}

/* The line of the first NUL, or 0: a NUL ends C strings early, so a file
 * holding one is refused whole rather than read in part. */
static size_t nul_line(const char *text, size_t len)
{
    const char *z = len > 0 ? memchr(text, '\0', len) : NULL;
    if (z == NULL)
        return 0;
    size_t line = 1;
    for (const char *q = text; q < z; q++)
        line += *q == '\n';
    return line;
}

int p11n_peers_parse_why(const char *text, size_t len, p11n_peer_entry **entries, size_t *n,
    size_t *bad_line, char *why, size_t cap)
{
    size_t dummy;
    if (bad_line == NULL)
        bad_line = &dummy;
    *bad_line = 0;
    if (why != NULL && cap > 0)
        why[0] = '\0';
    if (entries == NULL || n == NULL || (text == NULL && len > 0))
        return P11N_ERR_INVALID_ARG;
    *entries = NULL;
    *n = 0;
    if ((*bad_line = nul_line(text, len)) != 0)
        return say(why, cap, P11N_ERR_PARSE, "a NUL byte (not a text file)");
    /* Upper bound on entries: one per line. */
    size_t ecap = 1;
    for (size_t i = 0; i < len; i++)
        ecap += text[i] == '\n';
    p11n_peer_entry *e = calloc(ecap, sizeof(*e));
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
        err = parse_line(text + start, clen, &e[count], &blank, why, cap);
        if (err != P11N_OK || blank)
            continue;
        for (size_t j = 0; j < count && err == P11N_OK; j++)
            if (strcmp(e[j].id, e[count].id) == 0)
                err = say(why, cap, P11N_ERR_EXISTS, "identifier %s already on line %zu",
                    e[j].id, p11n_peers_line(text, len, j));
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

int p11n_peers_parse(const char *text, size_t len, p11n_peer_entry **entries, size_t *n,
    size_t *bad_line)
{
    return p11n_peers_parse_why(text, len, entries, n, bad_line, NULL, 0);
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
