/* Allocation failures: every allocation of a handshake (KK and XK, both
 * roles, software keys) and of a message round trip (seal + feed, the
 * first frame and a key rotation) is made to fail in turn, one per run.
 * Each run must end in a clean error (NOMEM, or CRYPTO where OpenSSL's
 * own allocation failed), leave the object that failed dead or usable as
 * its documentation says, and leak nothing (LeakSanitizer checks after
 * every run in the sanitizer build; valgrind or the exit check otherwise).
 *
 * Two sources of allocations share one countdown (testutil.h):
 *  - OpenSSL's, through CRYPTO_set_mem_functions;
 *  - the library's own malloc/calloc/realloc. The library calls libc
 *    directly, so this program is linked with -Wl,--wrap=malloc (and
 *    calloc, realloc; tests/alloc.am): the linker sends the convenience
 *    library's calls to the __wrap_ functions below, which count and then
 *    call __real_malloc, i.e. libc's malloc or AddressSanitizer's. Defining
 *    malloc itself instead would take the allocator away from ASan, which
 *    intercepts malloc in the same way and must see every block; --wrap
 *    changes only the calls this program's objects make and leaves ASan,
 *    OpenSSL and CUnit alone.
 *
 * When a run fails, or breaks a promise of the header, the log shows the
 * allocation number and the stack of the allocation that was made to fail;
 * an error the header does not list for that call gets one line. */
#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11noise.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define T_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)   /* clang's spelling */
#define T_ASAN 1
#endif
#endif
#if defined(T_ASAN)
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#define HAVE_LSAN 1
#else
#define HAVE_LSAN 0
#endif

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static unsigned long libc_allocs;   /* the library's own, armed or not */
static void *fail_stack[32];         /* where the failed allocation was made */
static int fail_depth;

/* 1 if this allocation is the one to fail (the countdown reaches 0). */
static int fail_now(void)
{
    return t_ossl_fail_countdown > 0 && --t_ossl_fail_countdown == 0;
}

static void note_failure(void)
{
    fail_depth = backtrace(fail_stack, (int)(sizeof(fail_stack) / sizeof(fail_stack[0])));
}

void *__wrap_malloc(size_t n)
{
    libc_allocs++;
    if (fail_now()) {
        note_failure();
        return NULL;
    }
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    libc_allocs++;
    if (fail_now()) {
        note_failure();
        return NULL;
    }
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    libc_allocs++;
    if (fail_now()) {
        note_failure();
        return NULL;
    }
    return __real_realloc(p, n);
}

/* ---- the runs ---- */

typedef struct {
    const char *step;   /* the call that failed, or NULL */
    int rc;
    int dead;           /* OBJ_USABLE, OBJ_DEAD (refuses every call), OBJ_NONE */
} outcome;

enum { OBJ_USABLE = 0, OBJ_DEAD = 1, OBJ_NONE = 2 /* a constructor returned nothing */ };
static const char *const obj_state[] = { "usable", "dead", "not made" };

static int step_failed(outcome *o, const char *step, int rc)
{
    if (rc < 0 && o->step == NULL) {
        o->step = step;
        o->rc = rc;
    }
    return rc < 0;
}

static p11n_key *key_of(uint8_t fill)
{
    uint8_t priv[32];
    memset(priv, fill, sizeof(priv));
    p11n_key *k = NULL;
    if (p11n_key_from_private("secp256k1", priv, sizeof(priv), &k) != P11N_OK)
        abort();   /* setup, before any suite runs */
    return k;
}

static void pub_of(const p11n_key *k, uint8_t out[P11N_PUBKEY_LEN])
{
    size_t n = 0;
    if (p11n_key_public(k, out, P11N_PUBKEY_LEN, &n) != P11N_OK)
        abort();
}

/* A handshake that failed refuses every later call (fail closed). */
static void check_dead_handshake(p11n_handshake *hs)
{
    uint8_t buf[66], pub[P11N_PUBKEY_LEN];
    size_t n = 0;
    p11n_transport *t = NULL;
    CU_ASSERT(p11n_handshake_want(hs) == 0);
    CU_ASSERT(!p11n_handshake_done(hs));
    CU_ASSERT(p11n_handshake_write(hs, buf, sizeof(buf), &n) == P11N_ERR_STATE);
    CU_ASSERT(p11n_handshake_read(hs, buf, sizeof(buf)) == P11N_ERR_STATE);
    CU_ASSERT(p11n_handshake_remote(hs, pub) == P11N_ERR_STATE);
    CU_ASSERT(p11n_handshake_finish(hs, &t) == P11N_ERR_STATE && t == NULL);
}

/* A transport whose seal failed is dead: the send nonce may have moved. */
static void check_dead_transport(p11n_transport *t)
{
    uint8_t frame[1 + P11N_FRAME_OVERHEAD];
    size_t n = 0;
    CU_ASSERT(p11n_transport_seal(t, (const uint8_t *)"x", 1, frame, sizeof(frame), &n)
        == P11N_ERR_STATE);
}

/* Seal `len` bytes on `a`, feed the frame to `b` and check the message.
 * A feed that fails is retried from where it stopped: it must deliver the
 * message (usable) or refuse with STATE (dead). */
static int round_trip(p11n_transport *a, p11n_transport *b, size_t len, outcome *o)
{
    static uint8_t msg[P11N_MAX_MESSAGE], frame[P11N_MAX_FRAME];
    memset(msg, 'm', len);
    size_t flen = 0;
    int rc = p11n_transport_seal(a, msg, len, frame, sizeof(frame), &flen);
    if (step_failed(o, "p11n_transport_seal", rc)) {
        check_dead_transport(a);
        o->dead = OBJ_DEAD;
        return rc;
    }
    const uint8_t *m = NULL;
    size_t mlen = 0, used = 0;
    rc = p11n_transport_feed(b, frame, flen, &used, &m, &mlen);
    if (step_failed(o, "p11n_transport_feed", rc)) {
        size_t more = 0;
        int again = p11n_transport_feed(b, frame + used, flen - used, &more, &m, &mlen);
        if (again != 1) {
            CU_ASSERT(again == P11N_ERR_STATE);   /* not usable: then dead */
            o->dead = OBJ_DEAD;
            return rc;
        }
        used += more;
    } else {
        CU_ASSERT(rc == 1);
    }
    CU_ASSERT(used == flen && mlen == len && (len == 0 || memcmp(m, msg, len) == 0));
    return P11N_OK;
}

#define MAX_CAND 8
static uint8_t decoys[MAX_CAND][P11N_PUBKEY_LEN];   /* candidates that are not the peer */

typedef struct {
    const char *pattern;
    size_t ncand;      /* KK responder: candidates (the initiator's last); XK: listed */
    p11n_key *ik, *rk;
} session;

/* One act from `w` to `r`; 0 on failure (recorded in `o`). */
static int act(p11n_handshake *w, p11n_handshake *r, outcome *o)
{
    uint8_t buf[66];
    size_t n = 0;
    int rc = p11n_handshake_write(w, buf, sizeof(buf), &n);
    if (step_failed(o, "p11n_handshake_write", rc)) {
        check_dead_handshake(w);
        o->dead = OBJ_DEAD;
        return 0;
    }
    rc = p11n_handshake_read(r, buf, n);
    if (step_failed(o, "p11n_handshake_read", rc)) {
        check_dead_handshake(r);
        o->dead = OBJ_DEAD;
        return 0;
    }
    return 1;
}

/* The whole session: both handshakes, their acts, both transports, and a
 * message each way. Everything is freed before returning. */
static void run_session(const session *s, outcome *o)
{
    uint8_t rpub[1][P11N_PUBKEY_LEN], cand[MAX_CAND][P11N_PUBKEY_LEN];
    pub_of(s->rk, rpub[0]);
    memcpy(cand, decoys, sizeof(cand));
    pub_of(s->ik, cand[s->ncand - 1]);
    p11n_handshake_config ic = { .size = sizeof(p11n_handshake_config),
        .pattern = s->pattern, .local = s->ik, .remote = rpub,
        .nremote = 1 };
    p11n_handshake_config rcfg = { .size = sizeof(p11n_handshake_config),
        .pattern = s->pattern, .local = s->rk,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])cand, .nremote = s->ncand };
    p11n_handshake *hs[2] = { NULL, NULL };
    p11n_transport *t[2] = { NULL, NULL };
    int rc = p11n_handshake_initiate(&ic, &hs[0]);
    if (!step_failed(o, "p11n_handshake_initiate", rc)) {
        rc = p11n_handshake_respond(&rcfg, &hs[1]);
        step_failed(o, "p11n_handshake_respond", rc);
    }
    if (rc != P11N_OK) {
        CU_ASSERT(hs[0] == NULL || hs[1] == NULL);
        o->dead = OBJ_NONE;
        goto out;
    }
    for (int i = 0; !p11n_handshake_done(hs[0]) || !p11n_handshake_done(hs[1]); i++)
        if (!act(hs[i % 2], hs[(i + 1) % 2], o))
            goto out;
    for (int i = 0; i < 2; i++) {
        rc = p11n_handshake_finish(hs[i], &t[i]);
        if (step_failed(o, "p11n_handshake_finish", rc)) {
            CU_ASSERT(t[i] == NULL);
            check_dead_handshake(hs[i]);
            o->dead = OBJ_DEAD;
            goto out;
        }
    }
    if (round_trip(t[0], t[1], 5, o) == P11N_OK)
        (void)round_trip(t[1], t[0], 300, o);
out:
    for (int i = 0; i < 2; i++) {
        p11n_transport_free(t[i]);
        p11n_handshake_free(hs[i]);
    }
}

/* Past a key rotation each way (1000 encryptions: 500 messages each), with
 * messages of growing size so that the receive buffer grows too. */
static void run_rotation(const session *s, outcome *o)
{
    static const uint8_t ck[32] = { 1 }, k1[32] = { 2 }, k2[32] = { 3 };
    (void)s;
    p11n_transport *a = NULL, *b = NULL;
    int rc = p11n_transport_new("Noise_XK_secp256k1_ChaChaPoly_SHA256", ck, k1, k2, &a);
    if (!step_failed(o, "p11n_transport_new", rc)) {
        rc = p11n_transport_new("Noise_XK_secp256k1_ChaChaPoly_SHA256", ck, k2, k1, &b);
        step_failed(o, "p11n_transport_new", rc);
    }
    if (rc == P11N_OK)
        for (size_t i = 0; i < 1004 && o->step == NULL; i++)
            if (round_trip(i % 2 ? b : a, i % 2 ? a : b, i < 1002 ? i % 9 : 4000, o)
                != P11N_OK)
                break;
    if (rc != P11N_OK) {
        CU_ASSERT(a == NULL || b == NULL);
        o->dead = OBJ_NONE;
    }
    p11n_transport_free(a);
    p11n_transport_free(b);
}

/* What lib/p11noise.h promises when an allocation fails in each call: the
 * error, and the state the object is left in.
 * Handshakes fail closed; a transport's feed keeps it usable after NOMEM. */
static const struct {
    const char *step;
    int rc;
    int dead;
} documented[] = {
    { "p11n_handshake_initiate", P11N_ERR_NOMEM, OBJ_NONE },
    { "p11n_handshake_respond", P11N_ERR_NOMEM, OBJ_NONE },
    { "p11n_handshake_finish", P11N_ERR_NOMEM, OBJ_DEAD },
    { "p11n_transport_seal", P11N_ERR_CRYPTO, OBJ_DEAD },
    { "p11n_transport_feed", P11N_ERR_NOMEM, OBJ_USABLE },   /* the buffer could not grow */
};

/* A promise broken, not only an error the header does not list: the
 * header promises a usable object and it is dead. */
static int broken_promise(const outcome *o)
{
    for (size_t i = 0; i < sizeof(documented) / sizeof(documented[0]); i++)
        if (strcmp(o->step, documented[i].step) == 0 && o->rc == documented[i].rc
            && documented[i].dead == OBJ_USABLE && o->dead != OBJ_USABLE)
            return 1;
    return 0;
}

/* The header's general rule: any call that runs cryptography may return
 * CRYPTO or NOMEM, and the object is then dead (or, for a constructor, not
 * made) unless the call's own comment says the error is retryable; the
 * table above lists those comments. */
static int as_documented(const outcome *o)
{
    for (size_t i = 0; i < sizeof(documented) / sizeof(documented[0]); i++)
        if (strcmp(o->step, documented[i].step) == 0 && o->rc == documented[i].rc
            && o->dead == documented[i].dead)
            return 1;
    return (o->rc == P11N_ERR_CRYPTO || o->rc == P11N_ERR_NOMEM) && o->dead != OBJ_USABLE;
}

static void print_failed_allocation(void)
{
    for (int i = 0; i < fail_depth; i++) {
#if HAVE_LSAN
        char line[512];
        __sanitizer_symbolize_pc(fail_stack[i], "%p %F %L", line, sizeof(line));
        fprintf(stderr, "    #%d %s\n", i, line);
#else
        backtrace_symbols_fd(&fail_stack[i], 1, 2);
#endif
    }
}

/* Fail allocation 1, 2, ... of `run` until a run makes fewer allocations
 * than the one failed. Each must fail cleanly (NOMEM or CRYPTO, the
 * object dead or usable, no leak). A clean failure that the header does
 * not document (another error, or a dead object where it promises a usable
 * one) is printed with its allocation's stack and fails the test. */
static void walk(const char *what, void (*run)(const session *, outcome *), const session *s)
{
    unsigned long n, absorbed = 0, undocumented = 0, broken = 0;
    for (n = 1;; n++) {
        outcome o = { NULL, 0, 0 };
        fail_depth = 0;
        t_ossl_fail_countdown = n;
        run(s, &o);
        int reached = t_ossl_fail_countdown == 0;
        t_ossl_fail_countdown = 0;
        if (!reached) {
            CU_ASSERT(o.step == NULL);   /* nothing failed: every step succeeded */
            break;
        }
        /* OpenSSL copes with some failures of its own allocations; the run
         * checked every result then, so that is clean too. */
        int clean = o.step == NULL || o.rc == P11N_ERR_NOMEM || o.rc == P11N_ERR_CRYPTO;
        int doc = o.step == NULL || as_documented(&o);
#if HAVE_LSAN
        int leaked = __lsan_do_recoverable_leak_check();
#else
        int leaked = 0;   /* without ASan, valgrind's leak check covers the run */
#endif
        absorbed += o.step == NULL;
        int promise = o.step != NULL && !doc && broken_promise(&o);
        undocumented += clean && !doc;
        broken += promise;
        if (!clean || !doc || leaked) {
            fprintf(stderr, "%s: allocation %lu: %s returned %s, object %s%s%s; the "
                "allocation made to fail:\n", what, n, o.step ? o.step : "nothing",
                o.step ? p11n_strerror(o.rc) : "-", obj_state[o.dead],
                leaked ? ", memory leaked" : "",
                promise ? " (BROKEN PROMISE: documented as usable)"
                        : doc ? "" : " (error not documented for this call)");
            if (!clean || leaked || promise)
                print_failed_allocation();   /* the others: one line each */
        }
        CU_ASSERT(clean);
        CU_ASSERT(!leaked);
    }
    printf("%s: %lu allocations, each failed in turn (%lu absorbed, %lu not as documented, "
        "%lu of them dead where documented usable)\n", what, n - 1, absorbed, undocumented,
        broken);
    CU_ASSERT(n > 1);   /* something was allocated: the hooks are in */
    CU_ASSERT(undocumented == 0);
}

static p11n_key *ik, *rk;

static void t_kk(void)
{
    session s = { "KK", 3, ik, rk };
    walk("KK, responder with 3 candidates", run_session, &s);
}

static void t_xk(void)
{
    session s = { "XK", 2, ik, rk };
    walk("XK, responder with 2 accepted keys", run_session, &s);
}

static void t_rotation(void)
{
    walk("transport past a rotation", run_rotation, NULL);
}

/* The counting sees both sources, or the walks above prove nothing. */
static void t_both_sources(void)
{
    session s = { "KK", 1, ik, rk };
    outcome o = { NULL, 0, 0 };
    unsigned long libc0 = libc_allocs, ossl0 = t_ossl_allocs;
    run_session(&s, &o);
    CU_ASSERT(o.step == NULL);
    CU_ASSERT(libc_allocs > libc0);
    CU_ASSERT(t_ossl_allocs > ossl0);
    printf("one KK session: %lu library allocations, %lu OpenSSL allocations\n",
        libc_allocs - libc0, t_ossl_allocs - ossl0);
}

int main(void)
{
    t_ossl_malloc_fn = __real_malloc;
    t_ossl_realloc_fn = __real_realloc;
    t_ossl_on_fail = note_failure;
    if (!t_hook_openssl_alloc()) {
        fprintf(stderr, "OpenSSL's allocator hooks could not be set\n");
        return 1;
    }
    void *warm[1];
    backtrace(warm, 1);   /* loads libgcc now, not inside a failing allocation */
    ik = key_of(0x11);
    rk = key_of(0x21);
    for (size_t i = 0; i < MAX_CAND; i++) {
        p11n_key *d = key_of((uint8_t)(0x41 + i));
        pub_of(d, decoys[i]);
        p11n_key_free(d);
    }
    static const p11n_test tests[] = {
        { "both sources are counted", t_both_sources },
        { "KK handshake and round trip", t_kk },
        { "XK handshake and round trip", t_xk },
        { "transport past a key rotation", t_rotation },
        { NULL, NULL },
    };
    int rc = p11n_test_main("alloc", tests);
    p11n_key_free(ik);
    p11n_key_free(rk);
    return rc;
}
