/*
 * A URI as a person reads it in an error line or a log: "pkcs11:" URIs
 * with their percent-escapes resolved where the byte is printable, and
 * without pin-value; every other text with its unprintable bytes escaped.
 * What p11-kit would read as a pkcs11: URI (any case, whitespace before
 * or inside the scheme, more before the ':') is shown as one, and what it would read as a
 * pin-value is never shown: the text shown, parsed again, holds no PIN.
 * A byte that a terminal would act on (a control byte, DEL, the bytes of
 * an escape sequence) is never written raw, whether it came escaped or
 * not.
 */
#include <string.h>

#include "p11noise.h"

/* The writer: what fits in out[cap - 1], and the length of the whole. */
struct shown {
    char *out;
    size_t cap, len;
};

static void put(struct shown *s, char c)
{
    if (s->len + 1 < s->cap)
        s->out[s->len] = c;
    s->len++;
}

static void put_escaped(struct shown *s, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    put(s, '%');
    put(s, hex[c >> 4]);
    put(s, hex[c & 15]);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Printable ASCII that, decoded, cannot be mistaken for the URI's own
 * structure: ';' '?' '&' '=' '%' '#' stay escaped, so the text shown
 * still parses to the same attributes; a space stays escaped because
 * p11-kit drops raw whitespace, so "pin-val%20ue" shown as "pin-val ue"
 * would read as pin-value. */
static int decodable(unsigned char c)
{
    return c > 0x20 && c < 0x7f && strchr(";?&=%#", c) == NULL;
}

/* One attribute or path component p[0..n), decoded where readable. */
static void put_component(struct shown *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            unsigned char d = (unsigned char)(hexval(p[i + 1]) << 4 | hexval(p[i + 2]));
            if (decodable(d))
                put(s, (char)d);
            else
                put_escaped(s, d);
            i += 2;
        } else if (c >= 0x20 && c < 0x7f) {
            put(s, (char)c);
        } else {
            put_escaped(s, c);
        }
    }
}

/* p11-kit drops " \n\r\v" anywhere in a URI before it reads it, even
 * inside a %XX escape; the wider set here is the safe side when deciding
 * whether p11-kit would read an attribute as a PIN. */
static int blank(int c)
{
    return c != '\0' && strchr(" \f\n\r\t\v", c) != NULL;
}

/* The hex digit after whitespace at p[*i..n), *i then past it; or -1. */
static int next_hex(const char *p, size_t n, size_t *i)
{
    while (*i < n && blank((unsigned char)p[*i]))
        (*i)++;
    int v = *i < n ? hexval(p[*i]) : -1;
    if (v >= 0)
        (*i)++;
    return v;
}

/* The next character of p[*i..n) as the most lenient reader would see
 * it: whitespace dropped, %XX decoded (whitespace allowed inside it, as
 * p11-kit allows), a decoded whitespace dropped too, capitals folded.
 * -1 at the end. */
static int next_char(const char *p, size_t n, size_t *i)
{
    for (;;) {
        while (*i < n && blank((unsigned char)p[*i]))
            (*i)++;
        if (*i >= n)
            return -1;
        int c = (unsigned char)p[(*i)++];
        size_t j = *i;
        int hi, lo;
        if (c == '%' && (hi = next_hex(p, n, &j)) >= 0 && (lo = next_hex(p, n, &j)) >= 0) {
            c = hi << 4 | lo;
            *i = j;
        }
        if (!blank(c))
            return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
    }
}

/* 1 if p[*i..n) starts with name (lower case) as next_char reads it;
 * *i is then past it. */
static int read_name(const char *p, size_t n, size_t *i, const char *name)
{
    for (; *name; name++)
        if (next_char(p, n, i) != (unsigned char)*name)
            return 0;
    return 1;
}

/* 1 if the attribute p[0..n) is a pin-value (in the path or the query:
 * p11-kit reads it in both). p11-kit compares the name raw, in its case,
 * after dropping whitespace; this compares it decoded, in any case and
 * without any whitespace, so that no spelling that p11-kit (of this or
 * another version) may read as pin-value is shown with its PIN. */
static int is_pin_value(const char *p, size_t n)
{
    size_t i = 0;
    if (!read_name(p, n, &i, "pin-value"))
        return 0;
    int c = next_char(p, n, &i);
    return c == '=' || c == -1;
}

/* The attributes p11-kit reads, spelled as it reads them, pin-value
 * aside. After a pin-value, every component up to one of these is taken
 * as part of the PIN: a PIN holding an unescaped '&' or ';' goes on
 * past it, and p11-kit would start a new attribute only at one it
 * knows. */
static const char *const attributes[] = { "token=", "manufacturer=", "serial=", "model=",
    "library-manufacturer=", "library-description=", "library-version=", "object=", "type=",
    "id=", "slot-description=", "slot-manufacturer=", "slot-id=", "pin-source=",
    "module-name=", "module-path=" };

static int known_attribute(const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof(attributes) / sizeof(attributes[0]); i++)
        if (strlen(attributes[i]) <= n && memcmp(p, attributes[i], strlen(attributes[i])) == 0)
            return 1;
    return 0;
}

/* 1 if p[0..n) is empty as p11-kit reads it (whitespace alone; an
 * escaped one too, which p11-kit would refuse for want of a '='). */
static int empty(const char *p, size_t n)
{
    size_t i = 0;
    return next_char(p, n, &i) == -1;
}

/* After "pkcs11:", path ';' attributes, then query '&' attributes, split
 * where p11-kit splits them: the path ends at '?' or at an empty
 * component ("a=b;;c=d&e=f" has the query "c=d&e=f"); the '?' is shown
 * only when the query keeps an attribute. */
static void put_pkcs11(struct shown *s, const char *p)
{
    static const char scheme[] = "pkcs11:";
    for (const char *q = scheme; *q; q++)
        put(s, *q);
    int query = 0, first = 1, in_pin = 0;
    for (;;) {
        size_t n = strcspn(p, query ? "&" : ";?");
        int blank_part = empty(p, n);
        int ends_path = !query && (p[n] == '?' || blank_part);
        if (is_pin_value(p, n))
            in_pin = 1;
        else if (in_pin && known_attribute(p, n))
            in_pin = 0;
        if (!blank_part && !in_pin) {
            if (!first || query)
                put(s, !first ? (query ? '&' : ';') : '?');
            put_component(s, p, n);
            first = 0;
        }
        p += n;
        if (*p == '\0')
            return;
        if (ends_path) {
            query = 1;
            first = 1;
        }
        p++;
    }
}

size_t p11n_uri_display(const char *uri, char *out, size_t cap)
{
    struct shown s = { out, cap, 0 };
    if (uri == NULL)
        uri = "";
    /* p11-kit takes what follows the first ':' after "pkcs11" (older
     * versions only right after it) as the URI. */
    const char *colon = strchr(uri, ':');
    size_t at = 0;
    if (colon != NULL && read_name(uri, (size_t)(colon - uri), &at, "pkcs11")) {
        put_pkcs11(&s, colon + 1);
    } else {
        for (const unsigned char *p = (const unsigned char *)uri; *p; p++)
            if (*p >= 0x20 && *p < 0x7f)
                put(&s, (char)*p);
            else
                put_escaped(&s, *p);
    }
    if (cap > 0)
        out[s.len < cap ? s.len : cap - 1] = '\0';
    return s.len;
}
