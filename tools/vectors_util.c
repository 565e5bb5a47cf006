/* Failure texts and hex fields for the vector runners (tools/vectors.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vectors.h"

int vec_failf(vec_why *why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->text, sizeof(why->text), fmt, ap);
    va_end(ap);
    return VEC_FAIL;
}

static int nibble(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int vec_decode_hex(const char *s, vec_bytes *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = s != NULL ? strlen(s) : 1;
    if (n % 2 != 0)
        return -1;
    out->p = malloc(n / 2 + 1);
    if (out->p == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(out->p);
            out->p = NULL;
            return -1;
        }
        out->p[i] = (uint8_t)(hi << 4 | lo);
    }
    out->len = n / 2;
    out->present = 1;
    return 0;
}

int vec_get_hex(json_t *obj, const char *key, vec_bytes *out)
{
    memset(out, 0, sizeof(*out));
    json_t *f = json_object_get(obj, key);
    if (f == NULL)
        return 0;
    return vec_decode_hex(json_string_value(f), out);
}

void vec_bytes_free(vec_bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}
