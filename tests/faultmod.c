/*
 * faultmod: a PKCS#11 module for tests that forwards every call to a real
 * module and, as configured, delays chosen functions or makes them fail.
 * Load it like any module (module-path=.../tests/.libs/faultmod.so).
 *
 * Environment, read at each C_Initialize (call counters restart there):
 *
 *   P11N_FAULT_MODULE  the real module (default: $SOFTHSM_MODULE, else the
 *                      SoftHSM2 module configure found)
 *   P11N_FAULT         rules separated by ';', each FUNCTION:ACTION
 *
 *   ACTION             effect
 *   delay=MS           sleep MS milliseconds before every call
 *   delay@N=MS         ... before the Nth call only (calls count from 1)
 *   fail=CKR_X         return CKR_X instead of calling the real module
 *   fail@N=CKR_X       ... on the Nth call only
 *   fail%N=CKR_X       ... on every Nth call (N, 2N, 3N, ...)
 *   fail>N=CKR_X       ... on every call after the Nth
 *   der-only           (C_DeriveKey) refuse a raw peer point with
 *                      CKR_MECHANISM_PARAM_INVALID, as tokens that want
 *                      the DER OCTET STRING form do
 *
 *   FUNCTION is one of the functions listed in FAULT_FUNCS below; CKR_X a
 *   CKR_ name or a number (0x30 or 48). Example:
 *   P11N_FAULT="C_DeriveKey:delay=200;C_DeriveKey:fail@3=CKR_DEVICE_REMOVED"
 *
 * A malformed P11N_FAULT makes C_Initialize fail with CKR_ARGUMENTS_BAD
 * and a message on stderr. The real module is loaded once per process:
 * do not also load it directly while this module is initialized.
 */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <p11-kit/pkcs11.h>

#include "ckr.h"

#define FAULT_FUNCS(X) \
    X(C_GetSlotList) X(C_GetSlotInfo) X(C_GetTokenInfo) X(C_GetMechanismList) \
    X(C_GetMechanismInfo) X(C_OpenSession) X(C_CloseSession) X(C_GetSessionInfo) \
    X(C_Login) X(C_Logout) X(C_CreateObject) X(C_DestroyObject) \
    X(C_GetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects) \
    X(C_FindObjectsFinal) X(C_GenerateKeyPair) X(C_DeriveKey) X(C_GenerateRandom)

#define AS_ENUM(n) F_##n,
#define AS_NAME(n) #n,
enum { FAULT_FUNCS(AS_ENUM) NFUNCS };
static const char *const func_names[] = { FAULT_FUNCS(AS_NAME) };

enum sel { SEL_ALL, SEL_NTH, SEL_EVERY, SEL_AFTER };
enum kind { K_DELAY, K_FAIL, K_DER_ONLY };

struct rule {
    int func;
    enum kind kind;
    enum sel sel;
    unsigned long n;
    unsigned long value;    /* milliseconds or CK_RV */
};

#define MAX_RULES 32
static struct rule rules[MAX_RULES];
static size_t nrules;
static atomic_ulong calls[NFUNCS];
static int der_only;

static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST ours;

static int parse_ulong(const char *s, size_t len, unsigned long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    *out = strtoul(buf, &end, 0);
    return *end == '\0' ? 0 : -1;
}

static int parse_rule(const char *s, size_t len, struct rule *r)
{
    const char *colon = memchr(s, ':', len);
    if (colon == NULL)
        return -1;
    size_t flen = (size_t)(colon - s);
    r->func = -1;
    for (int i = 0; i < NFUNCS; i++)
        if (strlen(func_names[i]) == flen && memcmp(func_names[i], s, flen) == 0)
            r->func = i;
    if (r->func < 0)
        return -1;
    const char *a = colon + 1;
    size_t alen = len - flen - 1;
    if (alen == 8 && memcmp(a, "der-only", 8) == 0 && r->func == F_C_DeriveKey) {
        r->kind = K_DER_ONLY;
        return 0;
    }
    if (alen > 5 && memcmp(a, "delay", 5) == 0) {
        r->kind = K_DELAY;
        a += 5;
        alen -= 5;
    } else if (alen > 4 && memcmp(a, "fail", 4) == 0) {
        r->kind = K_FAIL;
        a += 4;
        alen -= 4;
    } else {
        return -1;
    }
    const char *eq = memchr(a, '=', alen);
    if (eq == NULL)
        return -1;
    r->sel = SEL_ALL;
    if (eq != a) {
        if (a[0] == '@')
            r->sel = SEL_NTH;
        else if (a[0] == '%')
            r->sel = SEL_EVERY;
        else if (a[0] == '>')
            r->sel = SEL_AFTER;
        else
            return -1;
        if (parse_ulong(a + 1, (size_t)(eq - a - 1), &r->n) != 0)
            return -1;
        if (r->n == 0 && r->sel != SEL_AFTER)
            return -1;
    }
    const char *v = eq + 1;
    size_t vlen = alen - (size_t)(v - a);
    if (r->kind == K_FAIL && vlen > 4 && memcmp(v, "CKR_", 4) == 0) {
        CK_RV rv;
        if (p11n_ckr_value(v, vlen, &rv) != 0)
            return -1;
        r->value = rv;
        return 0;
    }
    return parse_ulong(v, vlen, &r->value);
}

static int parse_config(const char *spec)
{
    nrules = 0;
    der_only = 0;
    while (spec != NULL && *spec != '\0') {
        const char *end = strchr(spec, ';');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        if (len > 0) {
            if (nrules == MAX_RULES || parse_rule(spec, len, &rules[nrules]) != 0) {
                fprintf(stderr, "faultmod: bad rule in P11N_FAULT: %.*s\n", (int)len, spec);
                return -1;
            }
            der_only |= rules[nrules].kind == K_DER_ONLY;
            nrules++;
        }
        spec = end ? end + 1 : NULL;
    }
    return 0;
}

static int selected(const struct rule *r, unsigned long call)
{
    switch (r->sel) {
    case SEL_NTH:
        return call == r->n;
    case SEL_EVERY:
        return call % r->n == 0;
    case SEL_AFTER:
        return call > r->n;
    default:
        return 1;
    }
}

/* Count the call, apply its delays, and say whether it fails. */
static CK_RV fault_hit(int func)
{
    unsigned long call = atomic_fetch_add(&calls[func], 1) + 1;
    CK_RV rv = CKR_OK;
    for (size_t i = 0; i < nrules; i++) {
        const struct rule *r = &rules[i];
        if (r->func != func || !selected(r, call))
            continue;
        if (r->kind == K_DELAY) {
            struct timespec ts = { (time_t)(r->value / 1000), (long)(r->value % 1000) * 1000000L };
            while (nanosleep(&ts, &ts) != 0)
                ;
        } else if (r->kind == K_FAIL && rv == CKR_OK) {
            rv = r->value;
        }
    }
    return rv;
}

#define HOOK(fn) do { \
        CK_RV hook_rv_ = fault_hit(F_##fn); \
        if (hook_rv_ != CKR_OK) \
            return hook_rv_; \
    } while (0)

static CK_RV w_C_Initialize(void *args)
{
    if (parse_config(getenv("P11N_FAULT")) != 0)
        return CKR_ARGUMENTS_BAD;
    for (int i = 0; i < NFUNCS; i++)
        atomic_store(&calls[i], 0);
    return real->C_Initialize(args);
}

static CK_RV w_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID *list, CK_ULONG *count)
{
    HOOK(C_GetSlotList);
    return real->C_GetSlotList(present, list, count);
}

static CK_RV w_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
    HOOK(C_GetSlotInfo);
    return real->C_GetSlotInfo(slot, info);
}

static CK_RV w_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
    HOOK(C_GetTokenInfo);
    return real->C_GetTokenInfo(slot, info);
}

static CK_RV w_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE *list, CK_ULONG *count)
{
    HOOK(C_GetMechanismList);
    return real->C_GetMechanismList(slot, list, count);
}

static CK_RV w_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO *info)
{
    HOOK(C_GetMechanismInfo);
    return real->C_GetMechanismInfo(slot, type, info);
}

static CK_RV w_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
    CK_SESSION_HANDLE *s)
{
    HOOK(C_OpenSession);
    return real->C_OpenSession(slot, flags, app, notify, s);
}

static CK_RV w_C_CloseSession(CK_SESSION_HANDLE s)
{
    HOOK(C_CloseSession);
    return real->C_CloseSession(s);
}

static CK_RV w_C_GetSessionInfo(CK_SESSION_HANDLE s, CK_SESSION_INFO *info)
{
    HOOK(C_GetSessionInfo);
    return real->C_GetSessionInfo(s, info);
}

static CK_RV w_C_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR *pin, CK_ULONG len)
{
    HOOK(C_Login);
    return real->C_Login(s, user, pin, len);
}

static CK_RV w_C_Logout(CK_SESSION_HANDLE s)
{
    HOOK(C_Logout);
    return real->C_Logout(s);
}

static CK_RV w_C_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *o)
{
    HOOK(C_CreateObject);
    return real->C_CreateObject(s, t, n, o);
}

static CK_RV w_C_DestroyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o)
{
    HOOK(C_DestroyObject);
    return real->C_DestroyObject(s, o);
}

static CK_RV w_C_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t,
    CK_ULONG n)
{
    HOOK(C_GetAttributeValue);
    return real->C_GetAttributeValue(s, o, t, n);
}

static CK_RV w_C_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n)
{
    HOOK(C_FindObjectsInit);
    return real->C_FindObjectsInit(s, t, n);
}

static CK_RV w_C_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *o, CK_ULONG max, CK_ULONG *n)
{
    HOOK(C_FindObjects);
    return real->C_FindObjects(s, o, max, n);
}

static CK_RV w_C_FindObjectsFinal(CK_SESSION_HANDLE s)
{
    HOOK(C_FindObjectsFinal);
    return real->C_FindObjectsFinal(s);
}

static CK_RV w_C_GenerateKeyPair(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_ATTRIBUTE *pt,
    CK_ULONG pn, CK_ATTRIBUTE *kt, CK_ULONG kn, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
    HOOK(C_GenerateKeyPair);
    return real->C_GenerateKeyPair(s, m, pt, pn, kt, kn, pub, priv);
}

static CK_RV w_C_DeriveKey(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE base,
    CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *key)
{
    HOOK(C_DeriveKey);
    if (der_only && m != NULL && m->mechanism == CKM_ECDH1_DERIVE && m->pParameter != NULL) {
        const CK_ECDH1_DERIVE_PARAMS *p = m->pParameter;
        /* Raw points are 65 or 33 bytes; wrapped ones 67 or 35. */
        if (p->ulPublicDataLen == 65 || p->ulPublicDataLen == 33)
            return CKR_MECHANISM_PARAM_INVALID;
    }
    return real->C_DeriveKey(s, m, base, t, n, key);
}

static CK_RV w_C_GenerateRandom(CK_SESSION_HANDLE s, CK_BYTE *buf, CK_ULONG len)
{
    HOOK(C_GenerateRandom);
    return real->C_GenerateRandom(s, buf, len);
}

static CK_RV load_real(void)
{
    const char *path = getenv("P11N_FAULT_MODULE");
    if (path == NULL || *path == '\0')
        path = getenv("SOFTHSM_MODULE");
    if (path == NULL || *path == '\0')
        path = P11N_SOFTHSM_MODULE;
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        fprintf(stderr, "faultmod: cannot load %s: %s\n", path, dlerror());
        return CKR_GENERAL_ERROR;
    }
    CK_RV (*get)(CK_FUNCTION_LIST **) = (CK_RV (*)(CK_FUNCTION_LIST **))dlsym(dl, "C_GetFunctionList");
    if (get == NULL || get(&real) != CKR_OK || real == NULL) {
        fprintf(stderr, "faultmod: %s has no usable C_GetFunctionList\n", path);
        dlclose(dl);
        real = NULL;
        return CKR_GENERAL_ERROR;
    }
    /* Everything not wrapped goes straight to the real module. */
    ours = *real;
    ours.C_Initialize = w_C_Initialize;
#define WRAP(n) ours.n = w_##n;
    FAULT_FUNCS(WRAP)
#undef WRAP
    return CKR_OK;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **list)
{
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    /* The loader calls this once per load, before any other function. */
    if (real == NULL) {
        CK_RV rv = load_real();
        if (rv != CKR_OK)
            return rv;
    }
    *list = &ours;
    return CKR_OK;
}
