/* Fuzz the ceremony peer-file parser (p11n_peers_parse) with arbitrary
 * text, embedded NULs and all.
 *
 * Checks besides memory safety: a failure is one of the documented errors,
 * names a line that exists and returns no entries; a success returns valid,
 * distinct identifiers with compressed public keys, and those entries
 * written back out as "IDENTIFIER PUBHEX" lines parse to the same list;
 * p11n_peers_parse_why agrees with it and gives a printable reason for
 * every failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static size_t count_lines(const uint8_t *d, size_t n)
{
    size_t lines = 1;
    for (size_t i = 0; i < n; i++)
        lines += d[i] == '\n';
    return lines;
}

/* Write entries back in the file format; returns a malloc'd text. */
static char *serialize(const p11n_peer_entry *e, size_t n, size_t *len)
{
    size_t line = P11N_MAX_IDENTIFIER + 1 + 2 * P11N_PUBKEY_LEN + 1;
    char *text = malloc(n * line + 1);
    CHECK(text != NULL);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        off += (size_t)sprintf(text + off, "%s ", e[i].id);
        for (size_t j = 0; j < P11N_PUBKEY_LEN; j++)
            off += (size_t)sprintf(text + off, "%02x", e[i].pub[j]);
        text[off++] = '\n';
    }
    text[off] = '\0';
    *len = off;
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    p11n_peer_entry *entries = (p11n_peer_entry *)1;
    size_t n = (size_t)-1, bad_line = (size_t)-1;

    int rc = p11n_peers_parse((const char *)data, size, &entries, &n, &bad_line);
    char why[160];
    p11n_peer_entry *e2 = NULL;
    size_t n3 = 0, bad3 = 0;
    CHECK(p11n_peers_parse_why((const char *)data, size, &e2, &n3, &bad3, why, sizeof(why))
        == rc);
    CHECK(bad3 == bad_line && n3 == (rc == P11N_OK ? n : 0));
    CHECK(rc == P11N_ERR_NOMEM || (rc == P11N_OK) == (why[0] == '\0'));
    for (const char *c = why; *c; c++)
        CHECK(*c >= 0x20 && *c < 0x7f);
    free(e2);
    if (rc != P11N_OK) {
        CHECK(rc == P11N_ERR_PARSE || rc == P11N_ERR_BAD_IDENTIFIER
            || rc == P11N_ERR_BAD_PUBKEY || rc == P11N_ERR_EXISTS || rc == P11N_ERR_NOMEM);
        CHECK(entries == NULL);
        if (rc != P11N_ERR_NOMEM)
            CHECK(bad_line >= 1 && bad_line <= count_lines(data, size));
        return 0;
    }

    CHECK(n <= count_lines(data, size));
    CHECK(n == 0 || entries != NULL);
    for (size_t i = 0; i < n; i++) {
        CHECK(memchr(entries[i].id, '\0', sizeof(entries[i].id)) != NULL);
        CHECK(p11n_identifier_valid(entries[i].id) == 1);
        CHECK(entries[i].pub[0] == 0x02 || entries[i].pub[0] == 0x03);
        for (size_t j = 0; j < i; j++)
            CHECK(strcmp(entries[i].id, entries[j].id) != 0);
    }

    size_t tlen;
    char *text = serialize(entries, n, &tlen);
    p11n_peer_entry *again = NULL;
    size_t n2 = 0, bad2 = 0;
    CHECK(p11n_peers_parse(text, tlen, &again, &n2, &bad2) == P11N_OK);
    CHECK(n2 == n);
    for (size_t i = 0; i < n; i++) {
        CHECK(strcmp(again[i].id, entries[i].id) == 0);
        CHECK(memcmp(again[i].pub, entries[i].pub, P11N_PUBKEY_LEN) == 0);
    }
    free(again);
    free(text);
    free(entries);
    return 0;
}
