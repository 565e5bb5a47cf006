/* Fuzz the proxy spec parser ("[USER:PASS@]HOST:PORT").
 *
 * Checks besides memory safety: an error leaves no credentials behind; a
 * success gives fields within their limits, and writing them back as a
 * spec parses to the same fields. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "socks5_spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char spec[1024], again[1100];
    p11n_socks5_proxy p, q;

    if (size >= sizeof(spec))
        return 0;
    memcpy(spec, data, size);
    spec[size] = '\0'; /* the spec is a C string; a NUL inside just ends it */

    int rc = p11n_socks5_proxy_parse(spec, &p);
    if (rc != P11N_OK) {
        static const p11n_socks5_proxy zero;
        CHECK(rc == P11N_ERR_PARSE || rc == P11N_ERR_SOCKS_CREDENTIALS);
        CHECK(memcmp(&p, &zero, sizeof(p)) == 0);
        return 0;
    }
    CHECK(p.port != 0);
    CHECK(strlen(p.host) >= 1 && strlen(p.host) <= P11N_SOCKS5_MAX_FIELD);
    CHECK(strchr(p.host, '@') == NULL);
    if (p.has_auth) {
        CHECK(strlen(p.user) >= 1 && strlen(p.user) <= P11N_SOCKS5_MAX_FIELD);
        CHECK(strlen(p.pass) >= 1 && strlen(p.pass) <= P11N_SOCKS5_MAX_FIELD);
        CHECK(strchr(p.user, ':') == NULL);
    } else {
        CHECK(p.user[0] == '\0' && p.pass[0] == '\0');
    }

    const char *lb = strchr(p.host, ':') != NULL ? "[" : "";
    const char *rb = *lb != '\0' ? "]" : "";
    if (p.has_auth)
        snprintf(again, sizeof(again), "%s:%s@%s%s%s:%u", p.user, p.pass, lb, p.host, rb,
            (unsigned)p.port);
    else
        snprintf(again, sizeof(again), "%s%s%s:%u", lb, p.host, rb, (unsigned)p.port);
    CHECK(p11n_socks5_proxy_parse(again, &q) == P11N_OK);
    CHECK(memcmp(&p, &q, sizeof(p)) == 0);
    p11n_socks5_proxy_clear(&p);
    p11n_socks5_proxy_clear(&q);
    return 0;
}
