/* Ceremony text parsing, and ceremony objects on a real SoftHSM2 token:
 * round trips, all-or-nothing writes, the object layout, and that a peer's
 * key is never taken for the machine's own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "p11noise.h"
#include "softhsm.h"
#include "testutil.h"
#include "token.h"

static struct t_token T;

#define PUB_A "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
#define PUB_B "036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f7"
#define PUB_C "028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7"

static p11n_peer_entry entry(const char *id, const char *hex)
{
    p11n_peer_entry e;
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "%s", id);
    CU_ASSERT_FATAL(p11n_hex_decode(hex, strlen(hex), e.pub, sizeof(e.pub)) == P11N_OK);
    return e;
}

static void test_identifiers(void)
{
    char long_id[P11N_MAX_IDENTIFIER + 2];
    memset(long_id, 'a', sizeof(long_id));
    long_id[P11N_MAX_IDENTIFIER] = '\0';
    CU_ASSERT(p11n_identifier_valid(long_id));
    long_id[P11N_MAX_IDENTIFIER] = 'a';
    long_id[P11N_MAX_IDENTIFIER + 1] = '\0';
    CU_ASSERT(!p11n_identifier_valid(long_id));
    CU_ASSERT(p11n_identifier_valid("a"));
    CU_ASSERT(p11n_identifier_valid("watch-tower_2.eu"));
    CU_ASSERT(!p11n_identifier_valid(""));
    CU_ASSERT(!p11n_identifier_valid(NULL));
    CU_ASSERT(!p11n_identifier_valid("a b"));
    CU_ASSERT(!p11n_identifier_valid("a/b"));
    CU_ASSERT(!p11n_identifier_valid("caf\xc3\xa9"));
    CU_ASSERT(!p11n_identifier_valid("a:b"));
}

static void test_parse_ok(void)
{
    const char *text =
        "# ceremony of 2026-11-26\n"
        "\n"
        "alice " PUB_A "\n"
        "  bob\t" PUB_B "   # the watchtower\r\n"
        "carol " PUB_C;
    p11n_peer_entry *e = NULL;
    size_t n = 0, bad = 99;
    CU_ASSERT_FATAL(p11n_peers_parse(text, strlen(text), &e, &n, &bad) == P11N_OK);
    CU_ASSERT(bad == 0);
    CU_ASSERT_FATAL(n == 3);
    p11n_peer_entry want = entry("bob", PUB_B);
    CU_ASSERT(strcmp(e[0].id, "alice") == 0 && strcmp(e[2].id, "carol") == 0);
    CU_ASSERT(strcmp(e[1].id, "bob") == 0 && memcmp(e[1].pub, want.pub, 33) == 0);
    CU_ASSERT(p11n_peers_line(text, strlen(text), 0) == 3);
    CU_ASSERT(p11n_peers_line(text, strlen(text), 1) == 4);
    CU_ASSERT(p11n_peers_line(text, strlen(text), 2) == 5);
    CU_ASSERT(p11n_peers_line(text, strlen(text), 3) == 0);
    free(e);
    CU_ASSERT(p11n_peers_parse("", 0, &e, &n, &bad) == P11N_OK && n == 0);
    free(e);
    CU_ASSERT(p11n_peers_parse("# nothing\n\n", 11, &e, &n, &bad) == P11N_OK && n == 0);
    free(e);
}

static void test_parse_errors(void)
{
    static const struct {
        const char *text;
        int err;
        size_t line;
    } cases[] = {
        { "ok " PUB_A "\nbad/id " PUB_B "\n", P11N_ERR_BAD_IDENTIFIER, 2 },
        { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " PUB_A,
          P11N_ERR_BAD_IDENTIFIER, 1 },
        { "\n\nx 02466d7f\n", P11N_ERR_PARSE, 3 },
        { "x " PUB_A "00\n", P11N_ERR_PARSE, 1 },
        { "x 02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3fzz\n",
          P11N_ERR_PARSE, 1 },
        /* x beyond the field prime; and an uncompressed prefix */
        { "x 02ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n",
          P11N_ERR_BAD_PUBKEY, 1 },
        { "x 04466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27\n",
          P11N_ERR_BAD_PUBKEY, 1 },
        { "a " PUB_A "\nb " PUB_B "\na " PUB_C "\n", P11N_ERR_EXISTS, 3 },
        { "a " PUB_A " extra\n", P11N_ERR_PARSE, 1 },
        { "a\n", P11N_ERR_PARSE, 1 },
        { PUB_A "\n", P11N_ERR_PARSE, 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p11n_peer_entry *e = (p11n_peer_entry *)1;
        size_t n = 7, bad = 0;
        int rc = p11n_peers_parse(cases[i].text, strlen(cases[i].text), &e, &n, &bad);
        CU_ASSERT(rc == cases[i].err);
        CU_ASSERT(bad == cases[i].line);
        CU_ASSERT(e == NULL && n == 0);
        if (rc != cases[i].err || bad != cases[i].line)
            fprintf(stderr, "case %zu: got %d line %zu\n", i, rc, bad);
    }
    /* A NUL byte is not text. */
    const char nul[] = "a " PUB_A "\nb\0 " PUB_B "\n";
    p11n_peer_entry *e = NULL;
    size_t n, bad;
    CU_ASSERT(p11n_peers_parse(nul, sizeof(nul) - 1, &e, &n, &bad) == P11N_ERR_PARSE && bad == 2);
}

static void read_all(p11n_peer_entry **e, size_t *n)
{
    int rc = p11n_ceremony_read(T.uri, e, n);
    if (rc != P11N_OK)
        fprintf(stderr, "read: %s\n", p11n_token_last_error());
    CU_ASSERT_FATAL(rc == P11N_OK);
}

static size_t objects(void)
{
    struct p11n_token *tok = t_token_open(T.uri);
    size_t n = t_token_objects(tok);
    p11n_token_close(tok);
    return n;
}

static void test_round_trip(void)
{
    p11n_peer_entry in[3] = { entry("zed", PUB_C), entry("alice", PUB_A), entry("bob", PUB_B) };
    size_t bad = 0;
    CU_ASSERT_FATAL(p11n_ceremony_write(T.uri, in, 3, 0, &bad) == P11N_OK);
    CU_ASSERT(bad == SIZE_MAX);
    p11n_peer_entry *out;
    size_t n;
    read_all(&out, &n);
    CU_ASSERT_FATAL(n == 3);
    /* Sorted by identifier. */
    CU_ASSERT(strcmp(out[0].id, "alice") == 0 && memcmp(out[0].pub, in[1].pub, 33) == 0);
    CU_ASSERT(strcmp(out[1].id, "bob") == 0 && memcmp(out[1].pub, in[2].pub, 33) == 0);
    CU_ASSERT(strcmp(out[2].id, "zed") == 0 && memcmp(out[2].pub, in[0].pub, 33) == 0);
    free(out);

    /* Writing the same again changes nothing. */
    size_t before = objects();
    CU_ASSERT(p11n_ceremony_write(T.uri, in, 3, 0, &bad) == P11N_OK);
    CU_ASSERT(objects() == before);

    /* Another key for bob: refused without replace, nothing written. */
    p11n_peer_entry upd[2] = { entry("dave", PUB_A), entry("bob", PUB_C) };
    CU_ASSERT(p11n_ceremony_write(T.uri, upd, 2, 0, &bad) == P11N_ERR_PUBKEY_MISMATCH);
    CU_ASSERT(bad == 1);
    CU_ASSERT(strstr(p11n_token_last_error(), "bob") != NULL);
    CU_ASSERT(objects() == before);
    /* With replace: bob has the new key, dave is added. */
    CU_ASSERT(p11n_ceremony_write(T.uri, upd, 2, 1, &bad) == P11N_OK);
    CU_ASSERT(objects() == before + 1);
    read_all(&out, &n);
    CU_ASSERT_FATAL(n == 4);
    CU_ASSERT(strcmp(out[1].id, "bob") == 0 && memcmp(out[1].pub, upd[1].pub, 33) == 0);
    CU_ASSERT(strcmp(out[2].id, "dave") == 0);
    free(out);

    CU_ASSERT(p11n_ceremony_remove(T.uri, "dave") == P11N_OK);
    CU_ASSERT(p11n_ceremony_remove(T.uri, "dave") == P11N_ERR_KEY_NOT_FOUND);
    CU_ASSERT(p11n_ceremony_remove(T.uri, "no/such") == P11N_ERR_BAD_IDENTIFIER);
    CU_ASSERT(objects() == before);
}

/* Every malformed write leaves the token as it was. */
static void test_bad_writes_change_nothing(void)
{
    size_t before = objects(), bad;
    p11n_peer_entry e[3] = { entry("new1", PUB_A), entry("new2", PUB_B), entry("new3", PUB_C) };

    snprintf(e[1].id, sizeof(e[1].id), "bad id");
    CU_ASSERT(p11n_ceremony_write(T.uri, e, 3, 0, &bad) == P11N_ERR_BAD_IDENTIFIER && bad == 1);
    snprintf(e[1].id, sizeof(e[1].id), "new2");

    e[2].pub[0] = 0x05;
    CU_ASSERT(p11n_ceremony_write(T.uri, e, 3, 0, &bad) == P11N_ERR_BAD_PUBKEY && bad == 2);
    e[2].pub[0] = 0x02;

    snprintf(e[2].id, sizeof(e[2].id), "new1");
    CU_ASSERT(p11n_ceremony_write(T.uri, e, 3, 0, &bad) == P11N_ERR_EXISTS && bad == 2);
    snprintf(e[2].id, sizeof(e[2].id), "new3");
    CU_ASSERT(objects() == before);

    /* The token fails on the second object: the first one is removed. */
    char uri[2048];
    snprintf(uri, sizeof(uri), "%s", T.fault_uri);
    setenv("P11N_FAULT", "C_CreateObject:fail@2=CKR_DEVICE_MEMORY", 1);
    CU_ASSERT(p11n_ceremony_write(uri, e, 3, 0, &bad) == P11N_ERR_TOKEN && bad == 1);
    CU_ASSERT(strstr(p11n_token_last_error(), "CKR_DEVICE_MEMORY") != NULL);
    unsetenv("P11N_FAULT");
    CU_ASSERT(objects() == before);

    /* Ceremony objects are private: no PIN, no list. */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s?module-path=%s", T.label, T.module);
    p11n_peer_entry *out = NULL;
    size_t n;
    CU_ASSERT(p11n_ceremony_read(uri, &out, &n) == P11N_ERR_PIN_REQUIRED && out == NULL);
}

static CK_OBJECT_HANDLE peer_object(struct p11n_token *tok, const char *id)
{
    char cid[128];
    snprintf(cid, sizeof(cid), P11N_PEER_ID_PREFIX "%s", id);
    CK_ATTRIBUTE t[] = { { CKA_ID, cid, strlen(cid) } };
    CK_OBJECT_HANDLE *h;
    size_t n;
    CU_ASSERT_FATAL(p11n_token_find(tok, tok->anchor, t, 1, &h, &n) == P11N_OK && n == 1);
    CK_OBJECT_HANDLE one = h[0];
    free(h);
    return one;
}

/* The layout doc/ceremony.md promises. */
static void test_object_layout(void)
{
    struct p11n_token *tok = t_token_open(T.uri);
    CK_OBJECT_HANDLE h = peer_object(tok, "alice");
    CK_OBJECT_CLASS cls = 0;
    CK_KEY_TYPE type = 0;
    CK_BBOOL token = 0, priv = 0, modifiable = 1, verify = 1, derive = 1;
    uint8_t label[16], params[16], point[80];
    CK_ATTRIBUTE a[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &token, 1 },
        { CKA_PRIVATE, &priv, 1 },
        { CKA_MODIFIABLE, &modifiable, 1 },
        { CKA_VERIFY, &verify, 1 },
        { CKA_DERIVE, &derive, 1 },
        { CKA_LABEL, label, sizeof(label) },
        { CKA_EC_PARAMS, params, sizeof(params) },
        { CKA_EC_POINT, point, sizeof(point) },
    };
    CU_ASSERT_FATAL(tok->fn->C_GetAttributeValue(tok->anchor, h, a, 10) == CKR_OK);
    CU_ASSERT(cls == CKO_PUBLIC_KEY && type == CKK_EC);
    CU_ASSERT(token == CK_TRUE && priv == CK_TRUE && modifiable == CK_FALSE);
    CU_ASSERT(verify == CK_FALSE && derive == CK_FALSE);
    CU_ASSERT(a[7].ulValueLen == 5 && memcmp(label, "alice", 5) == 0);
    CU_ASSERT(a[8].ulValueLen == 7 && memcmp(params, p11n_secp256k1_oid, 7) == 0);
    uint8_t want[P11N_EC_POINT_DER_LEN];
    p11n_peer_entry e = entry("alice", PUB_A);
    CU_ASSERT_FATAL(p11n_ec_point_der(e.pub, want) == P11N_OK);
    CU_ASSERT(a[9].ulValueLen == sizeof(want) && memcmp(point, want, sizeof(want)) == 0);
    /* Not modifiable: the token refuses to change it. */
    CK_ATTRIBUTE relabel = { CKA_LABEL, "mallory", 7 };
    CU_ASSERT(tok->fn->C_SetAttributeValue(tok->anchor, h, &relabel, 1) != CKR_OK);
    p11n_token_close(tok);
}

/* A peer object named like the machine's key is never used as its key. */
static void test_never_own_key(void)
{
    uint8_t pub[P11N_PUBKEY_LEN];
    CU_ASSERT_FATAL(p11n_token_keygen(T.uri, "machine", pub) == P11N_OK);
    /* A ceremony entry with the key's own label but another public key. */
    p11n_peer_entry e = entry("machine", PUB_B);
    size_t bad;
    CU_ASSERT_FATAL(p11n_ceremony_write(T.uri, &e, 1, 0, &bad) == P11N_OK);
    char uri[2048];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=machine?module-path=%s&pin-value=" T_PIN,
        T.label, T.module);
    p11n_key *k = NULL;
    CU_ASSERT_FATAL(p11n_key_load(uri, &k) == P11N_OK);
    uint8_t kp[33];
    size_t kl;
    CU_ASSERT(p11n_key_public(k, kp, sizeof(kp), &kl) == P11N_OK && memcmp(kp, pub, 33) == 0);
    p11n_key_free(k);
    /* A URI naming a peer object names no private key. */
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=alice?module-path=%s&pin-value=" T_PIN,
        T.label, T.module);
    CU_ASSERT(p11n_key_load(uri, &k) == P11N_ERR_KEY_NOT_FOUND && k == NULL);
}

int main(void)
{
    t_token_setup(&T, "p11n-ceremony");
    static const p11n_test tests[] = {
        { "identifiers", test_identifiers },
        { "parse ceremony text", test_parse_ok },
        { "parse errors name the line", test_parse_errors },
        { "write, read, replace, remove", test_round_trip },
        { "bad writes leave the token unchanged", test_bad_writes_change_nothing },
        { "object layout", test_object_layout },
        { "a peer object is never the machine's key", test_never_own_key },
        { NULL, NULL },
    };
    int rc = p11n_test_main("ceremony", tests);
    t_token_teardown(&T);
    return rc;
}
