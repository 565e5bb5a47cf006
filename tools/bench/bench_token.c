/*
 * A throw-away SoftHSM2 token for the token figures, and the token's own
 * derivation rate measured with raw PKCS#11 (through p11-kit, as the
 * library loads modules). One derivation is what any ECDH user of a token
 * must do: C_DeriveKey (CKM_ECDH1_DERIVE, CKD_NULL), read CKA_VALUE,
 * destroy the session object.
 */
#define _GNU_SOURCE /* nftw */
#include <ftw.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <secp256k1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static const CK_BYTE secp256k1_oid[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a };

static CK_FUNCTION_LIST *module_open(const char *path)
{
    CK_FUNCTION_LIST *m = p11_kit_module_load(path, 0);
    if (m == NULL)
        return NULL;
    if (p11_kit_module_initialize(m) != CKR_OK) {
        p11_kit_module_release(m);
        return NULL;
    }
    return m;
}

static void module_close(CK_FUNCTION_LIST *m)
{
    if (m != NULL) {
        p11_kit_module_finalize(m);
        p11_kit_module_release(m);
    }
}

static void pad_label(const char *label, CK_UTF8CHAR out[32])
{
    size_t n = strlen(label);
    memset(out, ' ', 32);
    memcpy(out, label, n < 32 ? n : 32);
}

/* The slot holding the token labelled `label`, or with `uninit` the first
 * slot whose token is not initialized yet. */
static int find_slot(CK_FUNCTION_LIST *m, const char *label, int uninit, CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    CK_UTF8CHAR want[32];

    pad_label(label, want);
    if (m->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return -1;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (m->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        if (uninit ? !(ti.flags & CKF_TOKEN_INITIALIZED) : memcmp(ti.label, want, 32) == 0) {
            *out = slots[i];
            return 0;
        }
    }
    return -1;
}

static int open_user_session(CK_FUNCTION_LIST *m, const bench_token *t, CK_SESSION_HANDLE *s)
{
    CK_SLOT_ID slot;
    CK_RV rv;
    if (find_slot(m, t->label, 0, &slot) != 0
        || m->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s) != CKR_OK)
        return -1;
    rv = m->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)t->pin, strlen(t->pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        m->C_CloseSession(*s);
        return -1;
    }
    return 0;
}

/* A secp256k1 key pair labelled `label` usable for ECDH. */
static int keypair(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, const char *label,
    CK_OBJECT_HANDLE *priv)
{
    CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    CK_BBOOL yes = CK_TRUE;
    CK_OBJECT_HANDLE pub;
    CK_ATTRIBUTE pubt[] = {
        { CKA_EC_PARAMS, (void *)secp256k1_oid, sizeof(secp256k1_oid) },
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_LABEL, (void *)label, strlen(label) },
    };
    CK_ATTRIBUTE privt[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_SENSITIVE, &yes, sizeof(yes) },
        { CKA_DERIVE, &yes, sizeof(yes) },
        { CKA_LABEL, (void *)label, strlen(label) },
    };
    return m->C_GenerateKeyPair(s, &mech, pubt, 3, privt, 5, &pub, priv) == CKR_OK ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void bench_token_use(const bench_token *t)
{
    setenv("SOFTHSM2_CONF", t->conf, 1);
}

void bench_token_teardown(bench_token *t)
{
    if (t->dir[0] != '\0')
        nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    t->dir[0] = '\0';
}

int bench_token_setup(const char *module_path, bench_token *t)
{
    char path[sizeof(t->conf)];
    CK_FUNCTION_LIST *m = NULL;
    CK_SESSION_HANDLE s;
    CK_SLOT_ID slot;
    CK_UTF8CHAR label[32];
    FILE *f;
    int rc = -1;

    memset(t, 0, sizeof(*t));
    snprintf(t->module, sizeof(t->module), "%s", module_path);
    snprintf(t->label, sizeof(t->label), "p11n-bench");
    snprintf(t->pin, sizeof(t->pin), "1234");
    snprintf(t->dir, sizeof(t->dir), "/tmp/p11n-bench-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        t->dir[0] = '\0';
        return -1;
    }
    snprintf(path, sizeof(path), "%s/tokens", t->dir);
    if (mkdir(path, 0700) != 0)
        goto done;
    snprintf(path, sizeof(path), "%s/softhsm2.conf", t->dir);
    f = fopen(path, "w");
    if (f == NULL)
        goto done;
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
               "log.level = ERROR\n", t->dir);
    fclose(f);
    snprintf(t->conf, sizeof(t->conf), "%s", path);
    bench_token_use(t);

    m = module_open(t->module);
    if (m == NULL || find_slot(m, t->label, 1, &slot) != 0)
        goto done;
    pad_label(t->label, label);
    if (m->C_InitToken(slot, (CK_UTF8CHAR_PTR)t->pin, strlen(t->pin), label) != CKR_OK
        || find_slot(m, t->label, 0, &slot) != 0
        || m->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
        goto done;
    if (m->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)t->pin, strlen(t->pin)) == CKR_OK
        && m->C_InitPIN(s, (CK_UTF8CHAR_PTR)t->pin, strlen(t->pin)) == CKR_OK
        && m->C_Logout(s) == CKR_OK)
        rc = 0;
    m->C_CloseSession(s);
done:
    module_close(m);
    if (rc != 0)
        bench_token_teardown(t);
    return rc;
}

void bench_token_uri(const bench_token *t, char *out, size_t cap)
{
    snprintf(out, cap, "pkcs11:token=%s?pin-value=%s&module-path=%s", t->label, t->pin,
        t->module);
}

void bench_token_key_uri(const bench_token *t, const char *object, char *out, size_t cap)
{
    snprintf(out, cap, "pkcs11:token=%s;object=%s?pin-value=%s&module-path=%s", t->label,
        object, t->pin, t->module);
}

struct keygen_job {
    const char *uri, *label;
    int fd;
};

static int keygen_child(void *arg)
{
    struct keygen_job *j = arg;
    uint8_t pub[P11N_PUBKEY_LEN];
    if (p11n_token_keygen(j->uri, j->label, pub) != P11N_OK)
        return -1;
    return bench_write_all(j->fd, pub, sizeof(pub));
}

int bench_token_keygen(const char *token_uri, const char *label, uint8_t pub[P11N_PUBKEY_LEN])
{
    struct keygen_job j = { token_uri, label, -1 };
    int fds[2], st, rc;
    pid_t pid;

    if (pipe(fds) != 0)
        return -1;
    j.fd = fds[1];
    pid = bench_fork(keygen_child, &j);
    close(fds[1]);
    rc = pid > 0 ? bench_read_all(fds[0], pub, P11N_PUBKEY_LEN) : -1;
    close(fds[0]);
    if (pid > 0)
        waitpid(pid, &st, 0);
    return rc;
}

/* One derivation as a token ECDH user must do it. */
static int derive_once(CK_FUNCTION_LIST *m, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
    const uint8_t peer[65])
{
    CK_ECDH1_DERIVE_PARAMS p = { CKD_NULL, 0, NULL, 65, (CK_BYTE_PTR)peer };
    CK_MECHANISM mech = { CKM_ECDH1_DERIVE, &p, sizeof(p) };
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG len = 32;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &kt, sizeof(kt) },
        { CKA_TOKEN, &no, sizeof(no) },
        { CKA_SENSITIVE, &no, sizeof(no) },
        { CKA_EXTRACTABLE, &yes, sizeof(yes) },
        { CKA_VALUE_LEN, &len, sizeof(len) },
    };
    uint8_t x[32];
    CK_ATTRIBUTE val = { CKA_VALUE, x, sizeof(x) };
    CK_OBJECT_HANDLE obj;
    int rc;

    if (m->C_DeriveKey(s, &mech, priv, tmpl, 6, &obj) != CKR_OK)
        return -1;
    rc = m->C_GetAttributeValue(s, obj, &val, 1) == CKR_OK ? 0 : -1;
    m->C_DestroyObject(s, obj);
    return rc;
}

int bench_token_derive_rate(const bench_opts *o, const bench_token *t, bench_stat *out)
{
    CK_FUNCTION_LIST *m = module_open(t->module);
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE priv;
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    secp256k1_pubkey pk;
    uint8_t k[32], peer[65];
    size_t len = sizeof(peer);
    int rc = -1;

    memset(k, 0x42, sizeof(k));
    if (m == NULL || ctx == NULL || !secp256k1_ec_pubkey_create(ctx, &pk, k)
        || !secp256k1_ec_pubkey_serialize(ctx, peer, &len, &pk, SECP256K1_EC_UNCOMPRESSED))
        goto done;
    if (open_user_session(m, t, &s) != 0)
        goto done;
    if (keypair(m, s, "bench-raw", &priv) == 0 && derive_once(m, s, priv, peer) == 0) {
        rc = 0;
        for (int r = 0; r < o->reps && rc == 0; r++) {
            double t0 = bench_now(), el = 0;
            long n = 0;
            while (rc == 0 && el < o->rep_seconds) {
                rc = derive_once(m, s, priv, peer);
                n++;
                el = bench_now() - t0;
            }
            if (rc == 0)
                bench_stat_add(out, (double)n / el);
        }
        bench_stat_finish(out);
    }
    m->C_CloseSession(s);
done:
    if (ctx != NULL)
        secp256k1_context_destroy(ctx);
    module_close(m);
    return rc;
}
