#define _GNU_SOURCE
#include "softhsm.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto.h"

/* The DER OID of P-256 (prime256v1): a key on the wrong curve. */
static const uint8_t p256_oid[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };

static void die(const char *what)
{
    fprintf(stderr, "softhsm test setup: %s\n", what);
    abort();
}

static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        FILE *f = freopen("/dev/null", "w", stdout);
        (void)f;
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void t_token_setup(struct t_token *t, const char *label)
{
    memset(t, 0, sizeof(*t));
    /* Key and PIN files must not be readable by others (the library
     * refuses them): whatever the tests write is private. */
    umask(077);
    const char *tmp = getenv("TMPDIR");
    snprintf(t->dir, sizeof(t->dir), "%s/p11n-token-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(t->dir) == NULL)
        die("mkdtemp");
    char path[1024];
    snprintf(path, sizeof(path), "%s/tokens", t->dir);
    if (mkdir(path, 0700) != 0)
        die("mkdir tokens");
    char conf[1024];
    snprintf(conf, sizeof(conf), "%s/softhsm2.conf", t->dir);
    FILE *f = fopen(conf, "w");
    if (f == NULL)
        die("write softhsm2.conf");
    fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
        "slots.removable = false\n", path);
    fclose(f);
    setenv("SOFTHSM2_CONF", conf, 1);

    snprintf(t->label, sizeof(t->label), "%s", label);
    char *argv[] = { "softhsm2-util", "--init-token", "--free", "--label", t->label,
        "--so-pin", T_SO_PIN, "--pin", T_PIN, NULL };
    if (run(argv) != 0)
        die("softhsm2-util --init-token failed (is SoftHSM2 installed?)");

    const char *mod = getenv("SOFTHSM_MODULE");
    snprintf(t->module, sizeof(t->module), "%s", mod && *mod ? mod : P11N_SOFTHSM_MODULE);
    snprintf(t->uri, sizeof(t->uri), "pkcs11:token=%s?module-path=%s&pin-value=" T_PIN,
        t->label, t->module);
    snprintf(t->fault_uri, sizeof(t->fault_uri), "pkcs11:token=%s?module-path=%s&pin-value=" T_PIN,
        t->label, P11N_FAULT_MODULE);
    unsetenv("P11N_FAULT");
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void t_token_teardown(struct t_token *t)
{
    if (t->dir[0] != '\0')
        nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    t->dir[0] = '\0';
}

static struct p11n_token *open_with(const char *uri, int flags)
{
    P11KitUri *u;
    char *safe;
    struct p11n_token *tok;
    if (p11n_uri_parse(uri, &u, &safe) != P11N_OK)
        die("parse URI");
    int err = p11n_token_open(u, safe, flags, &tok);
    p11n_uri_free(u);
    free(safe);
    if (err != P11N_OK) {
        fprintf(stderr, "%s\n", p11n_token_last_error());
        die("open token");
    }
    return tok;
}

struct p11n_token *t_token_open(const char *uri)
{
    return open_with(uri, P11N_TOKEN_LOGIN | P11N_TOKEN_RW);
}

struct p11n_token *t_token_open_public(const char *uri)
{
    struct p11n_token *tok = open_with(uri, P11N_TOKEN_RW);
    CK_SESSION_INFO si;
    /* Login state is shared by every session of the process: another open
     * handle that logged in would make this one logged in too. */
    if (tok->fn->C_GetSessionInfo(tok->anchor, &si) != CKR_OK || si.state != CKS_RW_PUBLIC_SESSION)
        die("public session is logged in (is another handle on the token open?)");
    return tok;
}

void t_token_import_key_opts(struct p11n_token *tok, const char *label, const uint8_t priv[32],
    unsigned opts)
{
    uint8_t pub[P11N_PUBKEY_LEN], neg[P11N_PUBKEY_LEN];
    uint8_t point[P11N_EC_POINT_DER_LEN], negpoint[P11N_EC_POINT_DER_LEN];
    if (p11n_dh_secp256k1.pubkey(priv, pub) != P11N_OK || p11n_ec_point_der(pub, point) != P11N_OK ||
        p11n_secp256k1_negate(pub, neg) != P11N_OK || p11n_ec_point_der(neg, negpoint) != P11N_OK)
        die("bad test private key");
    CK_OBJECT_CLASS pcls = CKO_PRIVATE_KEY, ucls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE type = CKK_EC;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_BBOOL der = (opts & T_KEY_NO_DERIVE) ? CK_FALSE : CK_TRUE;
    CK_BBOOL extr = (opts & T_KEY_EXTRACTABLE) ? CK_TRUE : CK_FALSE;
    CK_BBOOL sens = (opts & T_KEY_NOT_SENSITIVE) ? CK_FALSE : CK_TRUE;
    CK_BBOOL upriv = (opts & T_PUB_PRIVATE) ? CK_TRUE : CK_FALSE;
    CK_BBOOL umod = (opts & T_PUB_FIXED) ? CK_FALSE : CK_TRUE;
    CK_ULONG llen = strlen(label);
    CK_ATTRIBUTE pt[] = {
        { CKA_CLASS, &pcls, sizeof(pcls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_SENSITIVE, &sens, sizeof(sens) },
        { CKA_EXTRACTABLE, &extr, sizeof(extr) },
        { CKA_DERIVE, &der, sizeof(der) },
        { CKA_EC_PARAMS, (void *)p11n_secp256k1_oid, sizeof(p11n_secp256k1_oid) },
        { CKA_VALUE, (void *)priv, 32 },
        { CKA_LABEL, (void *)label, llen },
        { CKA_ID, (void *)label, llen },
    };
    CK_ATTRIBUTE ut[] = {
        { CKA_CLASS, &ucls, sizeof(ucls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &upriv, sizeof(upriv) },
        { CKA_MODIFIABLE, &umod, sizeof(umod) },
        { CKA_EC_PARAMS, (void *)p11n_secp256k1_oid, sizeof(p11n_secp256k1_oid) },
        { CKA_EC_POINT, point, sizeof(point) },
        { CKA_LABEL, (void *)label, llen },
        { CKA_ID, (void *)label, llen },
    };
    CK_OBJECT_HANDLE h;
    if (tok->fn->C_CreateObject(tok->anchor, pt, sizeof(pt) / sizeof(pt[0]), &h) != CKR_OK)
        die("C_CreateObject private key");
    if (!(opts & T_KEY_NO_PUB) &&
        tok->fn->C_CreateObject(tok->anchor, ut, sizeof(ut) / sizeof(ut[0]), &h) != CKR_OK)
        die("C_CreateObject public key");
    if (opts & T_PUB_PLANTED_NEG) {
        /* What anyone with a session but no PIN could add: -K, public. */
        ut[3].pValue = &no;
        ut[4].pValue = &yes;
        ut[6].pValue = negpoint;
        if (tok->fn->C_CreateObject(tok->anchor, ut, sizeof(ut) / sizeof(ut[0]), &h) != CKR_OK)
            die("C_CreateObject planted public key");
    }
}

void t_token_import_key(struct p11n_token *tok, const char *label, const uint8_t priv[32],
    int derive, int with_pub)
{
    t_token_import_key_opts(tok, label, priv,
        (derive ? 0 : T_KEY_NO_DERIVE) | (with_pub ? 0 : T_KEY_NO_PUB));
}

void t_token_p256_key(struct p11n_token *tok, const char *label)
{
    CK_BBOOL yes = CK_TRUE;
    CK_ULONG llen = strlen(label);
    CK_ATTRIBUTE pt[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_EC_PARAMS, (void *)p256_oid, sizeof(p256_oid) },
        { CKA_LABEL, (void *)label, llen },
        { CKA_ID, (void *)label, llen },
    };
    CK_ATTRIBUTE kt[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_DERIVE, &yes, sizeof(yes) },
        { CKA_LABEL, (void *)label, llen },
        { CKA_ID, (void *)label, llen },
    };
    CK_MECHANISM m = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    CK_OBJECT_HANDLE a, b;
    if (tok->fn->C_GenerateKeyPair(tok->anchor, &m, pt, 4, kt, 5, &a, &b) != CKR_OK)
        die("generate P-256 key");
}

size_t t_token_objects(struct p11n_token *tok)
{
    size_t n;
    if (p11n_token_count_objects(tok, &n) != P11N_OK)
        die("count objects");
    return n;
}

unsigned long t_token_plant_in(struct p11n_token *tok, const struct t_plant *p)
{
    uint8_t point[P11N_EC_POINT_DER_LEN];
    CK_OBJECT_CLASS cls = p->pub != NULL ? CKO_PUBLIC_KEY : CKO_PRIVATE_KEY;
    CK_KEY_TYPE type = CKK_EC;
    CK_BBOOL yes = CK_TRUE, priv = p->private_obj ? CK_TRUE : CK_FALSE;
    CK_BBOOL mod = p->modifiable ? CK_TRUE : CK_FALSE;
    const char *label = p->label != NULL ? p->label : p->id;
    CK_ATTRIBUTE t[10] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &priv, sizeof(priv) },
        { CKA_LABEL, (void *)label, strlen(label) },
        { CKA_ID, (void *)p->id, strlen(p->id) },
        { CKA_EC_PARAMS, (void *)(p->p256 ? p256_oid : p11n_secp256k1_oid),
          p->p256 ? sizeof(p256_oid) : sizeof(p11n_secp256k1_oid) },
    };
    CK_ULONG n = 7;
    if (p->pub != NULL) {
        if (p11n_ec_point_der(p->pub, point) != P11N_OK)
            die("bad point to plant");
        if (p->bad_point)
            memset(point + 3, 0x01, 64);
        t[n++] = (CK_ATTRIBUTE){ CKA_MODIFIABLE, &mod, sizeof(mod) };
        t[n++] = (CK_ATTRIBUTE){ CKA_EC_POINT, point, sizeof(point) };
    } else {
        t[n++] = (CK_ATTRIBUTE){ CKA_DERIVE, &yes, sizeof(yes) };
        t[n++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &yes, sizeof(yes) };
        t[n++] = (CK_ATTRIBUTE){ CKA_VALUE, (void *)p->priv, 32 };
    }
    CK_OBJECT_HANDLE h;
    return tok->fn->C_CreateObject(tok->anchor, t, n, &h);
}

void t_token_plant_public(const char *uri, const struct t_plant *p)
{
    struct p11n_token *tok = t_token_open_public(uri);
    struct t_plant pub = *p;
    pub.private_obj = 0;
    if (t_token_plant_in(tok, &pub) != CKR_OK)
        die("planting a public object without the PIN failed");
    p11n_token_close(tok);
}

void t_token_plant_public_peer(const char *uri, const char *id, const uint8_t pub[P11N_PUBKEY_LEN])
{
    char cka_id[P11N_PEER_ID_PREFIX_LEN + P11N_MAX_IDENTIFIER + 1];
    snprintf(cka_id, sizeof(cka_id), P11N_PEER_ID_PREFIX "%s", id);
    const struct t_plant p = { .id = cka_id, .label = id, .pub = pub };
    t_token_plant_public(uri, &p);
}
