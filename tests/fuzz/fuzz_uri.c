/* Fuzz the pkcs11: URI path of the key loader up to the point where a
 * module would be loaded: p11n_uri_parse() (the query attribute check,
 * p11-kit's parser, the PIN-free copy for messages), the attributes the
 * loader then reads (type, object, id), and p11n_uri_pin() for a
 * pin-value or the PIN callback. Nothing here loads a module or opens a
 * file the input names: a pin-source is parsed but not read.
 *
 * Input: the URI text (a NUL inside ends it).
 *
 * Checks besides memory safety:
 *  - the key loader refuses text that is neither a pkcs11: nor a file:
 *    URI with URI;
 *  - a parse fails with URI (or NOMEM) and leaves nothing behind, or
 *    succeeds only when every query attribute is one of the four known
 *    ones (a mistyped pin-value must never reach a message);
 *  - no message holds a PIN: the PIN-free copy, and a URI quoted in the
 *    last error, parse again without a pin-value;
 *  - the PIN comes back exactly as the URI holds it and is then gone
 *    from the parsed URI; without pin-value and pin-source the callback
 *    gives it;
 *  - p11n_uri_display of any text is printable ASCII only, of the length
 *    it returns; p11-kit reads no PIN from it, and the PIN p11-kit reads
 *    from the input (4 characters or more) occurs in it fewer times than
 *    in the input, both decoded (so not at all unless the input holds
 *    the same text outside its pin-value). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define CALLBACK_PIN "from-callback"

/* A URI that may appear in a message parses without a pin-value. */
static void check_pin_free(const char *uri_text)
{
    P11KitUri *u = p11_kit_uri_new();
    CHECK(u != NULL);
    if (p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK)
        CHECK(p11_kit_uri_get_pin_value(u) == NULL);
    p11_kit_uri_free(u);
}

/* What p11-kit reads from text as its PIN, copied into pin[cap], or 0. */
static int pin_of(const char *text, char *pin, size_t cap)
{
    P11KitUri *u = p11_kit_uri_new();
    CHECK(u != NULL);
    const char *v = NULL;
    if (p11_kit_uri_parse(text, P11_KIT_URI_FOR_ANY, u) == P11_KIT_URI_OK)
        v = p11_kit_uri_get_pin_value(u);
    int got = v != NULL && strlen(v) < cap;
    if (got)
        memcpy(pin, v, strlen(v) + 1);
    p11_kit_uri_free(u);
    return got;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* text as compared for a PIN: every %XX decoded (a bad '%' kept),
 * whitespace dropped (p11-kit drops it raw, and the display may escape
 * it), capitals folded (the display writes the scheme in small letters);
 * into out, its length returned. */
static size_t normal(const char *text, char *out)
{
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        char c = *p;
        if (c == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
            c = (char)(hexval(p[1]) << 4 | hexval(p[2]));
            p += 2;
        }
        if (strchr(" \f\n\r\t\v", c) == NULL || c == '\0')
            out[n++] = c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
    }
    return n;
}

static size_t occurrences(const char *hay, size_t n, const char *needle, size_t len)
{
    size_t count = 0;
    for (size_t i = 0; len > 0 && i + len <= n; i++)
        count += memcmp(hay + i, needle, len) == 0;
    return count;
}

/* The text shown for input holds no PIN p11-kit would read, from the
 * text shown or from the input. The display decodes, escapes and drops
 * attributes, nothing else, so compared in normal form the input holds
 * every occurrence of the PIN that the text shown holds, and one more:
 * the pin-value it came from. A PIN holding ':' ';' '?' or '&' is not
 * compared: dropping an attribute joins its neighbours (or the scheme
 * and the next one) into a text the input does not hold. */
static void check_display_pin_free(const char *input, const char *shown)
{
    static char pin[4096], npin[4096], a[4096], b[3 * 4096];
    CHECK(!pin_of(shown, pin, sizeof(pin)));
    if (!pin_of(input, pin, sizeof(pin)) || strlen(pin) < 4 || strpbrk(pin, ":;?&") != NULL)
        return;
    size_t len = normal(pin, npin);
    size_t in = occurrences(a, normal(input, a), npin, len);
    size_t out = occurrences(b, normal(shown, b), npin, len);
    CHECK(out == 0 || out < in);
}

static int give_pin(const char *token_uri, char *pin, size_t cap, void *arg)
{
    (void)arg;
    check_pin_free(token_uri);
    CHECK(cap > sizeof(CALLBACK_PIN));
    memcpy(pin, CALLBACK_PIN, sizeof(CALLBACK_PIN));
    return 0;
}

/* Written apart from the library's check on purpose: the query is what
 * follows the first '?', attributes are separated by '&', and each must
 * be NAME=VALUE with a known NAME (an empty attribute is allowed). */
static int query_all_known(const char *text)
{
    static const char *const known[] = { "pin-value=", "pin-source=", "module-name=",
        "module-path=" };
    const char *q = strchr(text, '?');
    if (q == NULL)
        return 1;
    for (const char *a = q + 1;; a++) {
        size_t len = strcspn(a, "&");
        int ok = len == 0;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            ok |= strncmp(a, known[i], strlen(known[i])) == 0 && strlen(known[i]) <= len;
        if (!ok)
            return 0;
        a += len;
        if (*a == '\0')
            return 1;
    }
}

static void check_error(int rc, P11KitUri *uri, char *safe)
{
    CHECK(rc == P11N_ERR_URI || rc == P11N_ERR_NOMEM);
    CHECK(uri == NULL && safe == NULL);
    const char *msg = p11n_token_last_error();
    CHECK(msg[0] != '\0');
    /* "SAFE-URI: text": the quoted URI is the PIN-free copy. */
    const char *sep = strstr(msg, ": unrecognized attribute in URI");
    if (sep != NULL) {
        char quoted[1024];
        size_t n = (size_t)(sep - msg) < sizeof(quoted) - 1 ? (size_t)(sep - msg)
                                                             : sizeof(quoted) - 1;
        memcpy(quoted, msg, n);
        quoted[n] = '\0';
        check_pin_free(quoted);
    }
}

static void check_parsed(const char *text, P11KitUri *uri, const char *safe)
{
    CHECK(query_all_known(text));
    CHECK(strncmp(safe, "pkcs11:", 7) == 0);
    check_pin_free(safe);
    for (const char *c = safe; *c; c++)
        CHECK(*c >= 0x20 && *c < 0x7f);   /* readable, never a raw control byte */
    /* What the loader reads next (pkcs11/tokenkey.c's find_private). */
    static const CK_ATTRIBUTE_TYPE types[] = { CKA_CLASS, CKA_LABEL, CKA_ID };
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(uri, types[i]);
        CHECK(a == NULL || a->ulValueLen == 0 || a->pValue != NULL);
    }
    if (p11_kit_uri_get_pin_source(uri) != NULL && p11_kit_uri_get_pin_value(uri) == NULL)
        return;   /* a file the input names: not read */
    const char *v = p11_kit_uri_get_pin_value(uri);
    char expect[256] = CALLBACK_PIN;
    int fits = v == NULL || strlen(v) < sizeof(expect);
    if (v != NULL && fits)
        memcpy(expect, v, strlen(v) + 1);
    char pin[256];
    size_t len = 0;
    int rc = p11n_uri_pin(uri, safe, 0, pin, sizeof(pin), &len);
    CHECK(p11_kit_uri_get_pin_value(uri) == NULL);
    if (!fits) {
        CHECK(rc == P11N_ERR_URI);
        return;
    }
    CHECK(rc == P11N_OK && len == strlen(expect) && memcmp(pin, expect, len + 1) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once;
    if (!once) {
        p11n_set_pin_callback(give_pin, NULL);
        once = 1;
    }
    char text[4096];
    if (size >= sizeof(text))
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    static char shown[3 * sizeof(text)];   /* every byte may become %XX */
    size_t n = p11n_uri_display(text, shown, sizeof(shown));
    CHECK(n < sizeof(shown) && strlen(shown) == n);
    for (size_t i = 0; i < n; i++)
        CHECK(shown[i] >= 0x20 && shown[i] < 0x7f);
    check_display_pin_free(text, shown);

    if (strncmp(text, "pkcs11:", 7) != 0) {
        p11n_key *k = NULL;
        if (strncmp(text, "file:", 5) != 0)   /* never read files the input names */
            CHECK(p11n_key_load(text, &k) == P11N_ERR_URI && k == NULL);
        return 0;
    }
    P11KitUri *uri = NULL;
    char *safe = NULL;
    int rc = p11n_uri_parse(text, &uri, &safe);
    if (rc != P11N_OK)
        check_error(rc, uri, safe);
    else
        check_parsed(text, uri, safe);
    p11n_uri_free(uri);
    free(safe);
    return 0;
}
