/*
 * faultmod: a PKCS#11 module for tests that forwards every call to a real
 * module and, as configured, delays chosen functions, makes them fail, or
 * pulls the token out.
 * Load it like any module (module-path=.../tests/.libs/faultmod.so).
 *
 * Environment, read at each C_Initialize (call counters restart there):
 *
 *   P11N_FAULT_MODULE  the real module (default: $SOFTHSM_MODULE, else the
 *                      SoftHSM2 module configure found)
 *   P11N_FAULT         rules separated by ';', each FUNCTION:ACTION
 *   P11N_FAULT_COUNTS  a file: at C_Finalize and at process exit (or when
 *                      the module is unloaded) it is replaced by one line
 *                      "FUNCTION CALLS" for every wrapped function called
 *                      since the last C_Initialize (C_Initialize included)
 *
 * A test that wants the counts while the module is in use (it was loaded
 * by the library, through p11-kit) finds faultmod_calls() with
 * dlopen(path, RTLD_NOLOAD) and dlsym: the same counters, read live.
 *
 *   ACTION             effect
 *   delay=MS           sleep MS milliseconds before every call
 *   delay@N=MS         ... before the Nth call only (calls count from 1)
 *   fail=CKR_X         return CKR_X instead of calling the real module
 *   fail@N=CKR_X       ... on the Nth call only
 *   fail%N=CKR_X       ... on every Nth call (N, 2N, 3N, ...)
 *   fail>N=CKR_X       ... on every call after the Nth
 *   remove@N           on the Nth call, the token is pulled out and put
 *                      back: the real module's C_CloseAllSessions ends
 *                      every session on the call's slot (and so the
 *                      login), and the call returns CKR_DEVICE_REMOVED.
 *                      The slot is the call's own, or its session's; for
 *                      C_GetSlotList every slot with a token
 *   remove@N=MS        ... and the token stays out MS milliseconds: on its
 *                      slot C_OpenSession, C_GetTokenInfo and the
 *                      mechanism queries return CKR_TOKEN_NOT_PRESENT and
 *                      C_GetSlotInfo clears CKF_TOKEN_PRESENT
 *   flags=F            (C_GetTokenInfo) add the token flags F, a CKF_ name
 *                      (CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED,
 *                      CKF_USER_PIN_COUNT_LOW) or a number, to the reply
 *   der-only           (C_DeriveKey) refuse a raw peer point with
 *                      CKR_MECHANISM_PARAM_INVALID, as tokens that want
 *                      the DER OCTET STRING form do
 *
 *   remove and flags take the @N, %N and >N selectors as fail does.
 *   FUNCTION is one of the functions listed in FAULT_FUNCS below; CKR_X a
 *   CKR_ name or a number (0x30 or 48). Example:
 *   P11N_FAULT="C_DeriveKey:delay=200;C_DeriveKey:fail@3=CKR_DEVICE_REMOVED"
 *
 * A removal waits for the calls in progress and holds back new ones while
 * it closes the sessions, as a real token's removal is seen at once by
 * every thread (and SoftHSM2 must not free a session another thread is
 * using).
 *
 * Like a module that talks to a daemon (or NSS's softoken), this one
 * refuses every call from a forked child with CKR_CRYPTOKI_NOT_INITIALIZED
 * until the child calls C_Initialize: a child must not use its parent's
 * sessions. (SoftHSM2 itself would let it.)
 *
 * A malformed P11N_FAULT makes C_Initialize fail with CKR_ARGUMENTS_BAD
 * and a message on stderr. The real module is loaded once per process:
 * do not also load it directly while this module is initialized.
 */
#define _GNU_SOURCE     /* pthread_rwlockattr_setkind_np */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <p11-kit/pkcs11.h>

#include "ckr.h"

#define FAULT_FUNCS(X) \
    X(C_Initialize) X(C_Finalize) \
    X(C_GetSlotList) X(C_GetSlotInfo) X(C_GetTokenInfo) X(C_GetMechanismList) \
    X(C_GetMechanismInfo) X(C_OpenSession) X(C_CloseSession) X(C_CloseAllSessions) \
    X(C_GetSessionInfo) X(C_Login) X(C_Logout) X(C_CreateObject) X(C_DestroyObject) \
    X(C_GetAttributeValue) X(C_FindObjectsInit) X(C_FindObjects) \
    X(C_FindObjectsFinal) X(C_GenerateKeyPair) X(C_DeriveKey) X(C_GenerateRandom)

#define AS_ENUM(n) F_##n,
#define AS_NAME(n) #n,
enum { FAULT_FUNCS(AS_ENUM) NFUNCS };
static const char *const func_names[] = { FAULT_FUNCS(AS_NAME) };

enum sel { SEL_ALL, SEL_NTH, SEL_EVERY, SEL_AFTER };
enum kind { K_DELAY, K_FAIL, K_DER_ONLY, K_REMOVE, K_FLAGS };

struct rule {
    int func;
    enum kind kind;
    enum sel sel;
    unsigned long n;
    unsigned long value;    /* milliseconds, CK_RV or CK_FLAGS */
};

/* The actions with a value after '=', and what the value is. */
static const struct {
    const char *name;
    enum kind kind;
    int value_optional;
} actions[] = {
    { "delay", K_DELAY, 0 },
    { "fail", K_FAIL, 0 },
    { "remove", K_REMOVE, 1 },
    { "flags", K_FLAGS, 0 },
};

static const struct {
    const char *name;
    CK_FLAGS flag;
} token_flags[] = {
    { "CKF_USER_PIN_COUNT_LOW", CKF_USER_PIN_COUNT_LOW },
    { "CKF_USER_PIN_FINAL_TRY", CKF_USER_PIN_FINAL_TRY },
    { "CKF_USER_PIN_LOCKED", CKF_USER_PIN_LOCKED },
};

#define MAX_RULES 32
#define NO_SLOT ((CK_SLOT_ID)-1)
static struct rule rules[MAX_RULES];
static size_t nrules;
static atomic_ulong calls[NFUNCS];
static int der_only;
static char counts_path[4096];

/* A removal: calls in progress finish first, new ones wait (writer
 * preferred, so a stream of calls cannot hold a removal off). */
static pthread_rwlock_t removal;
/* While the token is out: its slot, and until when (CLOCK_MONOTONIC ms). */
static atomic_ulong away_slot;
static atomic_ullong away_until;

/* The process that called C_Initialize. */
static atomic_long init_pid;

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

/* "@N", "%N", ">N" or nothing, up to the '=' or the end. */
static int parse_selector(const char *a, size_t alen, struct rule *r)
{
    r->sel = SEL_ALL;
    if (alen == 0)
        return 0;
    if (a[0] == '@')
        r->sel = SEL_NTH;
    else if (a[0] == '%')
        r->sel = SEL_EVERY;
    else if (a[0] == '>')
        r->sel = SEL_AFTER;
    else
        return -1;
    if (parse_ulong(a + 1, alen - 1, &r->n) != 0)
        return -1;
    return r->n == 0 && r->sel != SEL_AFTER ? -1 : 0;
}

static int parse_value(const char *v, size_t vlen, struct rule *r)
{
    if (r->kind == K_FAIL && vlen > 4 && memcmp(v, "CKR_", 4) == 0) {
        CK_RV rv;
        if (p11n_ckr_value(v, vlen, &rv) != 0)
            return -1;
        r->value = rv;
        return 0;
    }
    if (r->kind == K_FLAGS && vlen > 4 && memcmp(v, "CKF_", 4) == 0) {
        for (size_t i = 0; i < sizeof(token_flags) / sizeof(token_flags[0]); i++)
            if (strlen(token_flags[i].name) == vlen && memcmp(token_flags[i].name, v, vlen) == 0) {
                r->value = token_flags[i].flag;
                return 0;
            }
        return -1;
    }
    return parse_ulong(v, vlen, &r->value);
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
    size_t i, nlen = 0;
    for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        nlen = strlen(actions[i].name);
        if (alen >= nlen && memcmp(a, actions[i].name, nlen) == 0)
            break;
    }
    if (i == sizeof(actions) / sizeof(actions[0]))
        return -1;
    r->kind = actions[i].kind;
    if (r->kind == K_FLAGS && r->func != F_C_GetTokenInfo)
        return -1;
    a += nlen;
    alen -= nlen;
    const char *eq = memchr(a, '=', alen);
    r->value = 0;
    if (eq == NULL)
        return actions[i].value_optional ? parse_selector(a, alen, r) : -1;
    if (parse_selector(a, (size_t)(eq - a), r) != 0)
        return -1;
    return parse_value(eq + 1, alen - (size_t)(eq + 1 - a), r);
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

static unsigned long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000u + (unsigned long long)ts.tv_nsec / 1000000u;
}

/* 1 while the token of `slot` is pulled out. */
static int is_away(CK_SLOT_ID slot)
{
    return now_ms() < atomic_load(&away_until) &&
           (atomic_load(&away_slot) == NO_SLOT || atomic_load(&away_slot) == slot);
}

/* Pull the token out: end every session on the slot (all slots with a
 * token when NO_SLOT), with no other call running. */
static void pull_token(CK_SLOT_ID slot, unsigned long away_ms)
{
    pthread_rwlock_wrlock(&removal);
    if (slot != NO_SLOT) {
        real->C_CloseAllSessions(slot);
    } else {
        CK_SLOT_ID list[64];
        CK_ULONG n = 64;
        if (real->C_GetSlotList(CK_TRUE, list, &n) == CKR_OK)
            for (CK_ULONG i = 0; i < n; i++)
                real->C_CloseAllSessions(list[i]);
    }
    if (away_ms > 0) {
        atomic_store(&away_slot, slot);
        atomic_store(&away_until, now_ms() + away_ms);
    }
    pthread_rwlock_unlock(&removal);
}

static CK_SLOT_ID slot_of_session(CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;
    if (real->C_GetSessionInfo(s, &si) != CKR_OK)
        return NO_SLOT;
    return si.slotID;
}

/* What a call is about: its slot, or its session (to find the slot). */
struct target {
    int has_slot, has_session;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE session;
};

/* Count the call, apply its delays and removals, say whether it fails,
 * and (*flags) which token flags to add. */
static CK_RV fault_hit(int func, struct target t, CK_FLAGS *flags)
{
    unsigned long call = atomic_fetch_add(&calls[func], 1) + 1;
    if (func != F_C_Initialize && atomic_load(&init_pid) != (long)getpid())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
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
        } else if (r->kind == K_REMOVE && rv == CKR_OK) {
            CK_SLOT_ID slot = t.has_slot ? t.slot
                            : t.has_session ? slot_of_session(t.session) : NO_SLOT;
            pull_token(slot, r->value);
            rv = CKR_DEVICE_REMOVED;
        } else if (r->kind == K_FLAGS && flags != NULL) {
            *flags |= r->value;
        }
    }
    return rv;
}

static const struct target NONE = { 0, 0, 0, 0 };

static struct target on_slot(CK_SLOT_ID slot)
{
    return (struct target){ .has_slot = 1, .slot = slot };
}

static struct target on_session(CK_SESSION_HANDLE s)
{
    return (struct target){ .has_session = 1, .session = s };
}

/* Apply the rules; then make the real call with no removal running. */
#define FORWARD(fn, target, call) do { \
        CK_RV hook_rv_ = fault_hit(F_##fn, (target), NULL); \
        if (hook_rv_ != CKR_OK) \
            return hook_rv_; \
        pthread_rwlock_rdlock(&removal); \
        hook_rv_ = real->call; \
        pthread_rwlock_unlock(&removal); \
        return hook_rv_; \
    } while (0)

/* The same for a call on a slot whose token may be out. */
#define FORWARD_SLOT(fn, slot, call) do { \
        if (is_away(slot)) { \
            atomic_fetch_add(&calls[F_##fn], 1); \
            return CKR_TOKEN_NOT_PRESENT; \
        } \
        FORWARD(fn, on_slot(slot), call); \
    } while (0)

static void write_counts(void)
{
    if (counts_path[0] == '\0')
        return;
    char tmp[sizeof(counts_path) + 32];
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", counts_path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return;
    for (int i = 0; i < NFUNCS; i++) {
        unsigned long n = atomic_load(&calls[i]);
        if (n > 0)
            fprintf(f, "%s %lu\n", func_names[i], n);
    }
    /* Replaced whole, so a reader never sees half a file. */
    if (fclose(f) != 0 || rename(tmp, counts_path) != 0)
        remove(tmp);
}

__attribute__((destructor)) static void write_counts_at_exit(void)
{
    if (real != NULL)
        write_counts();
}

static CK_RV w_C_Initialize(void *args)
{
    if (parse_config(getenv("P11N_FAULT")) != 0)
        return CKR_ARGUMENTS_BAD;
    const char *counts = getenv("P11N_FAULT_COUNTS");
    snprintf(counts_path, sizeof(counts_path), "%s", counts != NULL ? counts : "");
    for (int i = 0; i < NFUNCS; i++)
        atomic_store(&calls[i], 0);
    atomic_store(&away_until, 0);
    atomic_store(&init_pid, (long)getpid());
    FORWARD(C_Initialize, NONE, C_Initialize(args));
}

static CK_RV w_C_Finalize(void *reserved)
{
    CK_RV rv = fault_hit(F_C_Finalize, NONE, NULL);
    if (rv == CKR_OK)
        rv = real->C_Finalize(reserved);
    write_counts();
    return rv;
}

static CK_RV w_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID *list, CK_ULONG *count)
{
    FORWARD(C_GetSlotList, NONE, C_GetSlotList(present, list, count));
}

static CK_RV w_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
    CK_RV rv = fault_hit(F_C_GetSlotInfo, on_slot(slot), NULL);
    if (rv != CKR_OK)
        return rv;
    pthread_rwlock_rdlock(&removal);
    rv = real->C_GetSlotInfo(slot, info);
    pthread_rwlock_unlock(&removal);
    if (rv == CKR_OK && is_away(slot))
        info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
    return rv;
}

static CK_RV w_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
    if (is_away(slot)) {
        atomic_fetch_add(&calls[F_C_GetTokenInfo], 1);
        return CKR_TOKEN_NOT_PRESENT;
    }
    CK_FLAGS add = 0;
    CK_RV rv = fault_hit(F_C_GetTokenInfo, on_slot(slot), &add);
    if (rv != CKR_OK)
        return rv;
    pthread_rwlock_rdlock(&removal);
    rv = real->C_GetTokenInfo(slot, info);
    pthread_rwlock_unlock(&removal);
    if (rv == CKR_OK)
        info->flags |= add;
    return rv;
}

static CK_RV w_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE *list, CK_ULONG *count)
{
    FORWARD_SLOT(C_GetMechanismList, slot, C_GetMechanismList(slot, list, count));
}

static CK_RV w_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO *info)
{
    FORWARD_SLOT(C_GetMechanismInfo, slot, C_GetMechanismInfo(slot, type, info));
}

static CK_RV w_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, void *app, CK_NOTIFY notify,
    CK_SESSION_HANDLE *s)
{
    FORWARD_SLOT(C_OpenSession, slot, C_OpenSession(slot, flags, app, notify, s));
}

static CK_RV w_C_CloseSession(CK_SESSION_HANDLE s)
{
    FORWARD(C_CloseSession, on_session(s), C_CloseSession(s));
}

static CK_RV w_C_CloseAllSessions(CK_SLOT_ID slot)
{
    FORWARD(C_CloseAllSessions, on_slot(slot), C_CloseAllSessions(slot));
}

static CK_RV w_C_GetSessionInfo(CK_SESSION_HANDLE s, CK_SESSION_INFO *info)
{
    FORWARD(C_GetSessionInfo, on_session(s), C_GetSessionInfo(s, info));
}

static CK_RV w_C_Login(CK_SESSION_HANDLE s, CK_USER_TYPE user, CK_UTF8CHAR *pin, CK_ULONG len)
{
    FORWARD(C_Login, on_session(s), C_Login(s, user, pin, len));
}

static CK_RV w_C_Logout(CK_SESSION_HANDLE s)
{
    FORWARD(C_Logout, on_session(s), C_Logout(s));
}

static CK_RV w_C_CreateObject(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *o)
{
    FORWARD(C_CreateObject, on_session(s), C_CreateObject(s, t, n, o));
}

static CK_RV w_C_DestroyObject(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o)
{
    FORWARD(C_DestroyObject, on_session(s), C_DestroyObject(s, o));
}

static CK_RV w_C_GetAttributeValue(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE *t,
    CK_ULONG n)
{
    FORWARD(C_GetAttributeValue, on_session(s), C_GetAttributeValue(s, o, t, n));
}

static CK_RV w_C_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n)
{
    FORWARD(C_FindObjectsInit, on_session(s), C_FindObjectsInit(s, t, n));
}

static CK_RV w_C_FindObjects(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE *o, CK_ULONG max, CK_ULONG *n)
{
    FORWARD(C_FindObjects, on_session(s), C_FindObjects(s, o, max, n));
}

static CK_RV w_C_FindObjectsFinal(CK_SESSION_HANDLE s)
{
    FORWARD(C_FindObjectsFinal, on_session(s), C_FindObjectsFinal(s));
}

static CK_RV w_C_GenerateKeyPair(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_ATTRIBUTE *pt,
    CK_ULONG pn, CK_ATTRIBUTE *kt, CK_ULONG kn, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
    FORWARD(C_GenerateKeyPair, on_session(s), C_GenerateKeyPair(s, m, pt, pn, kt, kn, pub, priv));
}

static CK_RV w_C_DeriveKey(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE base,
    CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *key)
{
    if (der_only && m != NULL && m->mechanism == CKM_ECDH1_DERIVE && m->pParameter != NULL) {
        const CK_ECDH1_DERIVE_PARAMS *p = m->pParameter;
        /* Raw points are 65 or 33 bytes; wrapped ones 67 or 35. */
        if (p->ulPublicDataLen == 65 || p->ulPublicDataLen == 33) {
            CK_RV rv = fault_hit(F_C_DeriveKey, on_session(s), NULL);
            return rv != CKR_OK ? rv : CKR_MECHANISM_PARAM_INVALID;
        }
    }
    FORWARD(C_DeriveKey, on_session(s), C_DeriveKey(s, m, base, t, n, key));
}

static CK_RV w_C_GenerateRandom(CK_SESSION_HANDLE s, CK_BYTE *buf, CK_ULONG len)
{
    FORWARD(C_GenerateRandom, on_session(s), C_GenerateRandom(s, buf, len));
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
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&removal, &attr);
    pthread_rwlockattr_destroy(&attr);
    /* Everything not wrapped goes straight to the real module. */
    ours = *real;
#define WRAP(n) ours.n = w_##n;
    FAULT_FUNCS(WRAP)
#undef WRAP
    return CKR_OK;
}

/* Calls of the function `name` (one of FAULT_FUNCS) since the last
 * C_Initialize, read while the module is in use; 0 for an unknown name. */
unsigned long faultmod_calls(const char *name);
unsigned long faultmod_calls(const char *name)
{
    for (int i = 0; i < NFUNCS; i++)
        if (strcmp(func_names[i], name) == 0)
            return atomic_load(&calls[i]);
    return 0;
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
