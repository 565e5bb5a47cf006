/*
 * A URI as a person reads it in an error line or a log: "pkcs11:" URIs
 * with their percent-escapes resolved where the byte is printable, and
 * without pin-value; every other text with its unprintable bytes escaped.
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
 * still parses to the same attributes. */
static int decodable(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && strchr(";?&=%#", c) == NULL;
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

/* 1 if the attribute p[0..n) is a pin-value (in the path or the query:
 * RFC 7512 puts it in the query, and the path form would hold a PIN too).
 * The name is compared decoded, in any case and without the whitespace
 * p11-kit drops, so that no spelling of it (pin%2Dvalue, PIN-VALUE,
 * "pin-val ue") is shown with its PIN. */
static int is_pin_value(const char *p, size_t n)
{
    static const char name[] = "pin-value";
    size_t k = 0;   /* characters of the name matched */
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p[i];
        if (c != '\0' && strchr(" \f\n\r\t\v", c) != NULL)
            continue;
        if (c == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            c = hexval(p[i + 1]) << 4 | hexval(p[i + 2]);
            i += 2;
        }
        if (k == sizeof(name) - 1)
            return c == '=';
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != name[k++])
            return 0;
    }
    return k == sizeof(name) - 1;
}

/* "pkcs11:" path ';' attributes, then '?' query '&' attributes; the '?'
 * only when the query keeps an attribute. */
static void put_pkcs11(struct shown *s, const char *uri)
{
    static const char scheme[] = "pkcs11:";
    for (const char *q = scheme; *q; q++)
        put(s, *q);
    const char *p = uri + sizeof(scheme) - 1;
    int query = 0, first = 1;
    for (;;) {
        size_t n = strcspn(p, query ? "&" : ";?");
        if (n > 0 && !is_pin_value(p, n)) {
            if (!first || query)
                put(s, !first ? (query ? '&' : ';') : '?');
            put_component(s, p, n);
            first = 0;
        }
        p += n;
        if (*p == '\0')
            return;
        if (*p == '?' && !query) {
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
    if (strncmp(uri, "pkcs11:", 7) == 0) {
        put_pkcs11(&s, uri);
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
