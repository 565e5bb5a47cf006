/*
 * The worker pool's rules (lib/net/worker.c), on a context whose loop
 * does not run: the test submits jobs and collects them itself.
 *
 *  - outgoing work never waits behind queued unauthenticated work, not
 *    even behind the rest of a batch;
 *  - each queue is bounded in derivations: the newest unauthenticated act
 *    over the budget is refused (OVERLOAD) with no token call;
 *  - a cancelled or late job is dropped before the token, and a job that
 *    becomes unwanted stops between two token operations;
 *  - a batch of KK responder acts for one key derives each candidate's ss
 *    once: 16 + 1 per act instead of 17 per act;
 *  - acts are charged what they will cost: 1 + 16 for the act that opens
 *    a group of its key and candidates, 1 for one that joins it, and the
 *    group 16 again when outgoing work cut its batch short; the token
 *    spends no more than was charged (one key serving several lists
 *    included), and after a flood with drops, cancels and refusals every
 *    counter is back at zero.
 *
 * Token work is counted by the fault module's live counters; the token is
 * SoftHSM2 behind tests/faultmod.so.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "faultutil.h"
#include "hsjob.h"
#include "net/worker.h"
#include "p11noise.h"
#include "softhsm.h"
#include "testutil.h"

#define NCAND 16
#define NSETS 3     /* disjoint candidate lists of one responder key */
#define GUARD_MS 20000

static struct t_token T;

/* ---- what the jobs report ---- */

static int done_ids[1024];
static size_t ndone;
static atomic_int running_id;       /* the id of a blocker that has started */

/* A job that records its id when done(); a blocker (release != NULL)
 * holds its worker until released. */
struct tjob {
    p11n_job base;
    int id;
    atomic_int *release;
    /* a handshake step, or NULL */
    p11n_handshake *hs;
    p11n_handshake_op *op;
    int *rc_out, *dropped_out;
};

static void tjob_run(p11n_job *base)
{
    struct tjob *j = (struct tjob *)base;
    atomic_store(&running_id, j->id);
    uint64_t guard = p11n_now_ms() + GUARD_MS;
    while (j->release != NULL && !atomic_load(j->release) && p11n_now_ms() < guard)
        usleep(500);
}

static int job_wanted(void *base)
{
    return p11n_job_wanted(base);
}

/* What the connection layer's job does (lib/net/conn.c job_run), after
 * holding its worker like a blocker when it has a release flag. */
static void hsjob_run(p11n_job *base)
{
    struct tjob *j = (struct tjob *)base;
    tjob_run(base);
    base->rc = p11n_handshake_pending_run_gated(j->op, job_wanted, base, base->ss);
}

static void tjob_done(p11n_job *base)
{
    struct tjob *j = (struct tjob *)base;
    if (ndone < sizeof(done_ids) / sizeof(done_ids[0]))
        done_ids[ndone++] = j->id;
    if (j->rc_out != NULL)
        *j->rc_out = base->rc;
    if (j->dropped_out != NULL)
        *j->dropped_out = base->dropped;
    p11n_handshake_free(j->hs);
    free(j);
}

static struct tjob *tjob_new(int id, int cls, unsigned cost, const void *batch,
    atomic_int *release)
{
    struct tjob *j = calloc(1, sizeof(*j));
    CU_ASSERT_FATAL(j != NULL);
    j->base.run = tjob_run;
    j->base.done = tjob_done;
    j->base.cls = cls;
    j->base.cost = cost;
    j->base.batch = batch;
    j->id = id;
    j->release = release;
    return j;
}

static p11n_ctx *pool_ctx(unsigned workers, unsigned out_ops, unsigned unauth_ops)
{
    p11n_ctx_options o = P11N_CTX_OPTIONS_INIT;
    o.workers = workers;
    o.max_token_ops = out_ops;
    o.max_unauth_token_ops = unauth_ops;
    p11n_ctx *ctx = NULL;
    CU_ASSERT_FATAL(p11n_ctx_new(&o, &ctx) == P11N_OK);
    ndone = 0;
    atomic_store(&running_id, 0);
    return ctx;
}

static void submit(p11n_ctx *ctx, struct tjob *j)
{
    CU_ASSERT_FATAL(p11n_worker_submit(ctx, &j->base) == P11N_OK);
}

/* Collect until `n` jobs are done (the guard only stops a hung test). */
static void collect_until(p11n_ctx *ctx, size_t n)
{
    uint64_t guard = p11n_now_ms() + GUARD_MS;
    while (ndone < n && p11n_now_ms() < guard) {
        p11n_worker_collect(ctx);
        usleep(500);
    }
    CU_ASSERT_FATAL(ndone >= n);
}

/* An unauthenticated job `id` that holds its worker until *release,
 * running once this returns. */
static void block_worker(p11n_ctx *ctx, int id, const void *batch, atomic_int *release)
{
    submit(ctx, tjob_new(id, P11N_JOB_UNAUTH, 1, batch, release));
    uint64_t guard = p11n_now_ms() + GUARD_MS;
    while (atomic_load(&running_id) != id && p11n_now_ms() < guard)
        usleep(200);
    CU_ASSERT_FATAL(atomic_load(&running_id) == id);
}

/* ---- scheduling ---- */

/* One worker (it may run unauthenticated work too): after the act it is
 * running, the outgoing job goes first, before the acts queued earlier
 * -- with or without a batch between them. */
static void run_outgoing_first(const void *batch)
{
    p11n_ctx *ctx = pool_ctx(1, 0, 0);
    atomic_int release = 0;
    block_worker(ctx, 1, batch, &release);
    submit(ctx, tjob_new(2, P11N_JOB_UNAUTH, 1, batch, NULL));
    submit(ctx, tjob_new(3, P11N_JOB_UNAUTH, 1, batch, NULL));
    submit(ctx, tjob_new(4, P11N_JOB_OUTGOING, 2, NULL, NULL));
    atomic_store(&release, 1);
    collect_until(ctx, 4);
    static const int want[] = { 1, 4, 2, 3 };
    for (size_t i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(done_ids[i], want[i]);
    p11n_ctx_free(ctx);
}

static void test_outgoing_first(void)
{
    run_outgoing_first(NULL);
}

static void test_outgoing_first_batch(void)
{
    static const int key;   /* any address: the batch's key */
    run_outgoing_first(&key);
}

/* Two workers: one of them never takes unauthenticated work, so an
 * outgoing job finishes while every unauthenticated slot is held. */
static void test_outgoing_free_worker(void)
{
    p11n_ctx *ctx = pool_ctx(2, 0, 0);
    atomic_int release = 0;
    block_worker(ctx, 1, NULL, &release);
    submit(ctx, tjob_new(2, P11N_JOB_UNAUTH, 1, NULL, NULL));
    submit(ctx, tjob_new(3, P11N_JOB_OUTGOING, 1, NULL, NULL));
    collect_until(ctx, 1);
    CU_ASSERT_EQUAL(done_ids[0], 3);
    p11n_worker_collect(ctx);
    CU_ASSERT_EQUAL(ndone, 1);  /* the queued act still waits for the one slot */
    atomic_store(&release, 1);
    collect_until(ctx, 3);
    p11n_ctx_free(ctx);
}

/* Budgets in derivations, one per class; a lone job always fits. */
static void test_budgets(void)
{
    p11n_ctx *ctx = pool_ctx(2, 2, 17);
    atomic_int release = 0;
    submit(ctx, tjob_new(1, P11N_JOB_UNAUTH, 17, NULL, &release));
    struct tjob *over = tjob_new(2, P11N_JOB_UNAUTH, 1, NULL, NULL);
    CU_ASSERT_EQUAL(p11n_worker_submit(ctx, &over->base), P11N_ERR_OVERLOAD);
    submit(ctx, tjob_new(3, P11N_JOB_OUTGOING, 2, NULL, &release));
    struct tjob *full = tjob_new(4, P11N_JOB_OUTGOING, 1, NULL, NULL);
    CU_ASSERT_EQUAL(p11n_worker_submit(ctx, &full->base), P11N_ERR_LIMIT);
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 17);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_OUTGOING], 2);
    CU_ASSERT_EQUAL(st.refused[P11N_JOB_UNAUTH], 1);
    CU_ASSERT_EQUAL(st.refused[P11N_JOB_OUTGOING], 1);
    atomic_store(&release, 1);
    collect_until(ctx, 2);
    /* The budget is back: the refused jobs (still the caller's) fit now. */
    submit(ctx, over);
    submit(ctx, full);
    collect_until(ctx, 4);
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 0);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_OUTGOING], 0);
    p11n_ctx_free(ctx);
}

/* ---- with the token ---- */

struct kk {
    p11n_key *key;                  /* the responder's, on the token */
    p11n_key *init[NSETS * NCAND];  /* the candidates, software keys */
    uint8_t cand[NSETS * NCAND][P11N_PUBKEY_LEN];   /* list s: cand + s * NCAND */
    uint8_t pub[P11N_PUBKEY_LEN];
};

static void kk_setup(struct kk *k, const char *fault)
{
    k->key = t_fault_key(&T, "server", fault);
    size_t len = 0;
    CU_ASSERT_FATAL(p11n_key_public(k->key, k->pub, sizeof(k->pub), &len) == P11N_OK);
    for (int i = 0; i < NSETS * NCAND; i++) {
        uint8_t priv[32];
        CU_ASSERT_FATAL(p11n_dh_secp256k1.generate(priv, k->cand[i]) == P11N_OK);
        CU_ASSERT_FATAL(p11n_key_from_private("secp256k1", priv, 32, &k->init[i]) == P11N_OK);
    }
}

static void kk_teardown(struct kk *k)
{
    for (int i = 0; i < NSETS * NCAND; i++)
        p11n_key_free(k->init[i]);
    p11n_key_free(k->key);
}

/* Act one from candidate `who`, or (who < 0) a bogus one: a fresh valid
 * ephemeral point and a random tag. */
static void act1(const struct kk *k, int who, uint8_t act[50])
{
    static uint64_t seed = 7;
    if (who < 0) {
        uint8_t priv[32];
        act[0] = 0;
        CU_ASSERT_FATAL(p11n_dh_secp256k1.generate(priv, act + 1) == P11N_OK);
        t_fill(act + 34, 16, &seed);
        return;
    }
    p11n_handshake_config cfg = P11N_HANDSHAKE_CONFIG_INIT;
    cfg.local = k->init[who];
    cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])k->pub;
    cfg.nremote = 1;
    p11n_handshake *hs = NULL;
    CU_ASSERT_FATAL(p11n_handshake_initiate(&cfg, &hs) == P11N_OK);
    size_t n = 0;
    CU_ASSERT_FATAL(p11n_handshake_write(hs, act, 50, &n) == P11N_OK && n == 50);
    p11n_handshake_free(hs);
}

/* A KK responder's act-one step as the connection layer makes it, with
 * candidate list `set` (0 .. NSETS - 1). */
static struct tjob *kk_job_of(const struct kk *k, int set, int id, int who, int *rc,
    int *dropped)
{
    p11n_handshake_config cfg = P11N_HANDSHAKE_CONFIG_INIT;
    cfg.local = k->key;
    cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])k->cand[set * NCAND];
    cfg.nremote = NCAND;
    cfg.flags = P11N_HS_ASYNC_TOKEN;
    p11n_handshake *hs = NULL;
    CU_ASSERT_FATAL(p11n_handshake_respond(&cfg, &hs) == P11N_OK);
    uint8_t act[50];
    act1(k, who, act);
    CU_ASSERT_FATAL(p11n_handshake_read(hs, act, sizeof(act)) == P11N_ERR_PENDING);
    p11n_handshake_op *op = p11n_handshake_pending(hs);
    CU_ASSERT_EQUAL(p11n_handshake_op_cost(op), 1 + NCAND);
    CU_ASSERT(p11n_handshake_op_unauth(op));
    struct tjob *j = tjob_new(id, P11N_JOB_UNAUTH, p11n_handshake_op_cost(op),
        p11n_handshake_op_batch(op), NULL);
    j->base.batch_set_len = p11n_handshake_op_batch_set(op, &j->base.batch_set);
    j->base.run = hsjob_run;
    j->hs = hs;
    j->op = op;
    j->rc_out = rc;
    j->dropped_out = dropped;
    return j;
}

static struct tjob *kk_job(const struct kk *k, int id, int who, int *rc, int *dropped)
{
    return kk_job_of(k, 0, id, who, rc, dropped);
}

static unsigned long derived(void)
{
    return t_fault_calls("C_DeriveKey");
}

/* A late job and a cancelled one never reach the token. */
static void test_dropped_before_token(void)
{
    struct kk k;
    kk_setup(&k, "");
    p11n_ctx *ctx = pool_ctx(1, 0, 0);
    int rc[2] = { 0, 0 }, dropped[2] = { 0, 0 };
    unsigned long before = derived();

    struct tjob *late = kk_job(&k, 1, -1, &rc[0], &dropped[0]);
    late->base.deadline = p11n_now_ms() - 1;
    submit(ctx, late);
    collect_until(ctx, 1);
    CU_ASSERT_EQUAL(rc[0], P11N_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(dropped[0], P11N_JOB_LATE);

    atomic_int release = 0;
    block_worker(ctx, 2, NULL, &release);
    struct tjob *dead = kk_job(&k, 3, -1, &rc[1], &dropped[1]);
    submit(ctx, dead);
    dead->base.owner = NULL;        /* what the connection's job_orphan does */
    p11n_job_cancel(&dead->base);
    atomic_store(&release, 1);
    collect_until(ctx, 3);
    CU_ASSERT_EQUAL(rc[1], P11N_ERR_CLOSED);
    CU_ASSERT_EQUAL(dropped[1], P11N_JOB_DEAD);

    CU_ASSERT_EQUAL(derived() - before, 0);
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.dropped_late, 1);
    CU_ASSERT_EQUAL(st.dropped_dead, 1);
    CU_ASSERT_EQUAL(st.dropped_midway, 0);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

/* With the budget at one act, a second act is refused before it reaches
 * the token: the derivations are the first act's 17 alone, and the
 * refused step is still pending (never ran), the caller's to free. */
static void test_overload_no_token(void)
{
    struct kk k;
    kk_setup(&k, "");
    p11n_ctx *ctx = pool_ctx(1, 0, 1 + NCAND);
    int rc = 0;
    struct tjob *first = kk_job(&k, 1, -1, &rc, NULL);
    struct tjob *refused = kk_job(&k, 2, -1, NULL, NULL);
    /* The first act holds its worker until released: its 17 derivations
     * are in the budget when the second comes. */
    atomic_int release = 0;
    first->release = &release;
    unsigned long before = derived();
    submit(ctx, first);
    CU_ASSERT_EQUAL(p11n_worker_submit(ctx, &refused->base), P11N_ERR_OVERLOAD);
    atomic_store(&release, 1);
    collect_until(ctx, 1);
    CU_ASSERT_EQUAL(rc, P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT_EQUAL(derived() - before, 1 + NCAND);
    CU_ASSERT(p11n_handshake_pending(refused->hs) != NULL);
    tjob_done(&refused->base);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

/* The step asks before each token operation: allowed three, a KK act
 * with 16 candidates derives es and ss for the first pair (2), then ss
 * twice more, and stops. */
static int allow_left;
static int allow_some(void *arg)
{
    (void)arg;
    return allow_left-- > 0 ? P11N_OK : P11N_ERR_TIMEOUT;
}

static void test_stops_between_derivations(void)
{
    struct kk k;
    kk_setup(&k, "");
    int rc = 0;
    struct tjob *j = kk_job(&k, 1, -1, &rc, NULL);
    unsigned long before = derived();
    allow_left = 3;
    CU_ASSERT_EQUAL(p11n_handshake_pending_run_gated(j->op, allow_some, NULL, NULL),
        P11N_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(derived() - before, 4);
    tjob_done(&j->base);
    kk_teardown(&k);
}

/* On the pool: a deadline that passes while the act runs (20 ms per
 * derivation; 17 would take 340 ms) stops it before its next derivation. */
static void test_late_midway(void)
{
    struct kk k;
    kk_setup(&k, "C_DeriveKey:delay=20");
    p11n_ctx *ctx = pool_ctx(1, 0, 0);
    int rc = 0, dropped = 0;
    struct tjob *j = kk_job(&k, 1, -1, &rc, &dropped);
    j->base.deadline = p11n_now_ms() + 60;
    unsigned long before = derived();
    submit(ctx, j);
    collect_until(ctx, 1);
    CU_ASSERT_EQUAL(rc, P11N_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(dropped, P11N_JOB_LATE);
    unsigned long n = derived() - before;
    printf("\n  late act stopped after %lu of up to %d derivations\n", n, 1 + NCAND);
    CU_ASSERT(n < 1 + NCAND);
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.dropped_late, 1);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

/* Eight acts for one key queued behind a busy worker: one batch, 16 ss
 * plus one es per act. A genuine act in the batch, from the last
 * candidate, is found with the batch's ss values. Without the batch key
 * each act costs its 17. */
static void run_batch(int batched, unsigned long want)
{
    struct kk k;
    kk_setup(&k, "");
    p11n_ctx *ctx = pool_ctx(1, 0, 0);
    atomic_int release = 0;
    block_worker(ctx, 100, NULL, &release);
    int rc[8], genuine = 5;
    for (int i = 0; i < 8; i++) {
        struct tjob *j = kk_job(&k, i + 1, i == genuine ? NCAND - 1 : -1, &rc[i], NULL);
        if (!batched)
            j->base.batch = NULL;
        submit(ctx, j);
    }
    unsigned long before = derived();
    atomic_store(&release, 1);
    collect_until(ctx, 9);
    unsigned long n = derived() - before;
    printf("\n  8 acts, 16 candidates, %s: %lu derivations\n", batched ? "one batch" : "no batch",
        n);
    CU_ASSERT_EQUAL(n, want);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(rc[i], i == genuine ? P11N_OK : P11N_ERR_UNKNOWN_PEER);
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.batches, batched ? 1 : 0);
    CU_ASSERT_EQUAL(st.batched, batched ? 7 : 0);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

static void test_batch_ss_once(void)
{
    /* First act: es + 16 ss; seven more: es each (the genuine one stops
     * at its candidate, but its ss values are already in the table). */
    run_batch(1, 1 + NCAND + 7);
}

static void test_no_batch(void)
{
    /* Seven bogus acts try every candidate; the genuine one stops at the
     * last, which is every candidate too. */
    run_batch(0, 8 * (1 + NCAND));
}

/* ---- what acts are charged ---- */

static const int key_a, key_b;     /* two responders' keys: any addresses */

/* Mutex-free view of the unauthenticated charge. */
static unsigned unauth_cost(p11n_ctx *ctx)
{
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    return st.cost[P11N_JOB_UNAUTH];
}

/* Unauthenticated derivations charged so far, in all. */
static unsigned long unauth_charged(p11n_ctx *ctx)
{
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    return st.charged[P11N_JOB_UNAUTH];
}

/* Behind a busy worker: the act that opens a group is charged 1 + N, the
 * next 63 of its key 1 each, the 65th opens a new group; another key,
 * another count of candidates, or another list of as many, opens its own. The budget refuses at
 * exactly the sum; everything charged comes back when the jobs are done. */
static void test_charges(void)
{
    const unsigned budget = 1 + (17 + 63) + 17 + 17 + 5 + 5;
    p11n_ctx *ctx = pool_ctx(1, 0, budget);
    atomic_int release = 0;
    block_worker(ctx, 1, NULL, &release);
    CU_ASSERT_EQUAL(unauth_cost(ctx), 1);
    int id = 2;
    submit(ctx, tjob_new(id++, P11N_JOB_UNAUTH, 17, &key_a, NULL));
    CU_ASSERT_EQUAL(unauth_cost(ctx), 1 + 17);
    for (int i = 1; i < P11N_JOB_BATCH_MAX; i++)
        submit(ctx, tjob_new(id++, P11N_JOB_UNAUTH, 17, &key_a, NULL));
    CU_ASSERT_EQUAL(unauth_cost(ctx), 1 + 17 + 63);
    submit(ctx, tjob_new(id++, P11N_JOB_UNAUTH, 17, &key_a, NULL));   /* group full */
    CU_ASSERT_EQUAL(unauth_cost(ctx), 1 + 17 + 63 + 17);
    submit(ctx, tjob_new(id++, P11N_JOB_UNAUTH, 17, &key_b, NULL));
    submit(ctx, tjob_new(id++, P11N_JOB_UNAUTH, 5, &key_a, NULL));    /* 4 candidates */
    CU_ASSERT_EQUAL(unauth_cost(ctx), budget - 5);
    /* Key a, 4 other candidates: a group of its own, charged 5. */
    static const char other[] = "4 other candidates";
    struct tjob *j = tjob_new(id++, P11N_JOB_UNAUTH, 5, &key_a, NULL);
    j->base.batch_set = other;
    j->base.batch_set_len = sizeof(other);
    submit(ctx, j);
    CU_ASSERT_EQUAL(unauth_cost(ctx), budget);
    struct tjob *over = tjob_new(id, P11N_JOB_UNAUTH, 17, &key_a, NULL);
    CU_ASSERT_EQUAL(p11n_worker_submit(ctx, &over->base), P11N_ERR_OVERLOAD);
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.groups_live, 5);
    CU_ASSERT_EQUAL(st.jobs[P11N_JOB_UNAUTH], 1 + 64 + 4);
    CU_ASSERT_EQUAL(st.depth_peak, 64 + 4);
    atomic_store(&release, 1);
    collect_until(ctx, (size_t)id - 1);
    p11n_worker_stats(ctx, &st);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 0);
    CU_ASSERT_EQUAL(st.jobs[P11N_JOB_UNAUTH], 0);
    CU_ASSERT_EQUAL(st.groups_live, 0);
    CU_ASSERT_EQUAL(st.groups, 5);
    /* One worker, one batch per group: the first 64 acts of key a run in
     * one batch. */
    CU_ASSERT_EQUAL(st.batches, 5);
    CU_ASSERT_EQUAL(st.batched, 63);
    tjob_done(&over->base);
    p11n_ctx_free(ctx);
}

/* A job that holds its worker a random moment (0-400 us). */
static void jitter_run(p11n_job *base)
{
    struct tjob *j = (struct tjob *)base;
    usleep((useconds_t)(j->id * 7919 % 400));
}

/* Four workers under 600 jobs of three keys, a burst and then a steady
 * pace, outgoing work in between (which ends batches early), a sixth of
 * the acts late, a sixth cancelled just after submission, those over
 * the budget refused:
 * the charge never exceeds the budget while it runs, and every counter
 * is back at zero once the pool has drained. */
static void test_flood_drain(void)
{
    const unsigned budget = 200;
    p11n_ctx *ctx = pool_ctx(4, 8, budget);
    static const int *const keys[] = { &key_a, &key_b, NULL };
    size_t accepted = 0, refused = 0, over = 0;
    for (int i = 0; i < 600; i++) {
        if (i >= 300)
            usleep(100);   /* after a burst, a pace the workers keep up with */
        int out = i % 10 == 9;
        struct tjob *j = tjob_new(i + 1, out ? P11N_JOB_OUTGOING : P11N_JOB_UNAUTH,
            out ? 2 : 17, out ? NULL : keys[i % 3], NULL);
        j->base.run = jitter_run;
        if (i % 6 == 1)
            j->base.deadline = p11n_now_ms() - 1;
        int rc = p11n_worker_submit(ctx, &j->base);
        if (rc != P11N_OK) {
            CU_ASSERT(rc == P11N_ERR_OVERLOAD || rc == P11N_ERR_LIMIT);
            refused++;
            tjob_done(&j->base);
            ndone--;
            continue;
        }
        accepted++;
        if (i % 6 == 2)
            p11n_job_cancel(&j->base);
        over += unauth_cost(ctx) > budget;
        if (i % 50 == 0)
            p11n_worker_collect(ctx);
    }
    collect_until(ctx, accepted);
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    printf("\n  %zu accepted, %zu refused; %lu groups, %lu batches, %lu dropped late, "
        "%lu dead; deepest queue %u\n", accepted, refused, st.groups, st.batches,
        st.dropped_late, st.dropped_dead, st.depth_peak);
    CU_ASSERT_EQUAL(over, 0);
    CU_ASSERT(refused > 0);
    CU_ASSERT_EQUAL(st.submitted, accepted);
    CU_ASSERT_EQUAL(st.refused[P11N_JOB_UNAUTH] + st.refused[P11N_JOB_OUTGOING], refused);
    CU_ASSERT(st.dropped_late > 0 && st.dropped_dead > 0);
    for (int c = 0; c < P11N_JOB_CLASSES; c++) {
        CU_ASSERT_EQUAL(st.cost[c], 0);
        CU_ASSERT_EQUAL(st.jobs[c], 0);
    }
    CU_ASSERT_EQUAL(st.groups_live, 0);
    p11n_ctx_free(ctx);
}

/* Two workers on unauthenticated acts, 150 bogus acts of one key, no
 * outgoing work: each group runs as one batch on one worker, so the
 * token spends exactly what the acts were charged, 1 each and 16 per
 * group, and the groups run in parallel. */
static void test_token_spends_charge(void)
{
    struct kk k;
    kk_setup(&k, "C_DeriveKey:delay=1");
    p11n_ctx *ctx = pool_ctx(3, 0, 0);
    enum { ACTS = 150 };
    static int rc[ACTS];
    unsigned long before = derived(), charged = unauth_charged(ctx);
    unsigned peak = 0;
    for (int i = 0; i < ACTS; i++) {
        submit(ctx, kk_job(&k, i + 1, -1, &rc[i], NULL));
        unsigned c = unauth_cost(ctx);
        peak = c > peak ? c : peak;
    }
    collect_until(ctx, ACTS);
    unsigned long n = derived() - before;
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    printf("\n  %d acts: %lu derivations (%.2f per act), %lu groups, %lu batches, "
        "peak charge %u\n", ACTS, n, (double)n / ACTS, st.groups, st.batches, peak);
    CU_ASSERT_EQUAL(st.batches, st.groups);
    CU_ASSERT_EQUAL(n, ACTS + NCAND * st.groups);
    CU_ASSERT_EQUAL(n, st.charged[P11N_JOB_UNAUTH] - charged);
    CU_ASSERT(st.groups >= (ACTS + P11N_JOB_BATCH_MAX - 1) / P11N_JOB_BATCH_MAX);
    for (int i = 0; i < ACTS; i++)
        CU_ASSERT_EQUAL(rc[i], P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 0);
    CU_ASSERT_EQUAL(st.groups_live, 0);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

/* One key, three disjoint lists of 16 candidates (listeners sharing the
 * key, or the store reloaded), two bogus acts each, queued behind a busy
 * worker: a group per list, each with its own 16 ss, so the token spends
 * what the six acts were charged, 3 * (1 + 16) + 3. One group for the
 * key would hold 48 candidates in a table for 32 and charge 17 + 5 for
 * what costs 70. */
static void test_groups_by_candidates(void)
{
    struct kk k;
    kk_setup(&k, "");
    p11n_ctx *ctx = pool_ctx(1, 0, 0);
    atomic_int release = 0;
    block_worker(ctx, 100, NULL, &release);
    unsigned long before = derived(), charged = unauth_charged(ctx);
    int rc[2 * NSETS], genuine = 4;     /* one genuine act, in list 1 */
    for (int i = 0; i < 2 * NSETS; i++) {
        int set = i % NSETS;
        submit(ctx, kk_job_of(&k, set, i + 1, i == genuine ? set * NCAND + 9 : -1, &rc[i],
            NULL));
    }
    charged = unauth_charged(ctx) - charged;
    atomic_store(&release, 1);
    collect_until(ctx, 2 * NSETS + 1);
    unsigned long n = derived() - before;
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    printf("\n  %d acts, %d lists of %d: %lu derivations, %lu charged, %lu groups\n",
        2 * NSETS, NSETS, NCAND, n, charged, st.groups);
    CU_ASSERT_EQUAL(charged, NSETS * (1 + NCAND) + NSETS);
    CU_ASSERT_EQUAL(n, charged);
    CU_ASSERT_EQUAL(st.groups, NSETS);
    for (int i = 0; i < 2 * NSETS; i++)
        CU_ASSERT_EQUAL(rc[i], i == genuine ? P11N_OK : P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 0);
    CU_ASSERT_EQUAL(st.groups_live, 0);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

/* One worker runs the first act of a group of three; outgoing work
 * arriving meanwhile ends the batch after it, and the worker that takes
 * the group up again derives the 16 ss anew: the group is charged 16
 * again for it, so the token spends what was charged, (1 + 16) * 2 + 1,
 * and the budget holds the 16 while the rest of the group waits. */
static void test_cut_batch_charged(void)
{
    struct kk k;
    kk_setup(&k, "");
    p11n_ctx *ctx = pool_ctx(1, 0, 0);
    int rc[3];
    atomic_int release = 0;
    unsigned long before = derived(), charged = unauth_charged(ctx);
    struct tjob *first = kk_job(&k, 1, -1, &rc[0], NULL);
    first->release = &release;
    submit(ctx, first);
    uint64_t guard = p11n_now_ms() + GUARD_MS;
    while (atomic_load(&running_id) != 1 && p11n_now_ms() < guard)
        usleep(200);
    CU_ASSERT_FATAL(atomic_load(&running_id) == 1);
    submit(ctx, kk_job(&k, 2, -1, &rc[1], NULL));
    submit(ctx, kk_job(&k, 3, -1, &rc[2], NULL));
    CU_ASSERT_EQUAL(unauth_cost(ctx), 1 + NCAND + 2);
    atomic_int hold = 0;
    submit(ctx, tjob_new(4, P11N_JOB_OUTGOING, 2, NULL, &hold));
    atomic_store(&release, 1);
    /* The outgoing job runs between the batches: the first act is done,
     * the other two wait with the group's 16 still in the budget. */
    while (atomic_load(&running_id) != 4 && p11n_now_ms() < guard)
        usleep(200);
    CU_ASSERT_FATAL(atomic_load(&running_id) == 4);
    CU_ASSERT_EQUAL(unauth_cost(ctx), NCAND + 2);
    atomic_store(&hold, 1);
    collect_until(ctx, 4);
    static const int want[] = { 1, 4, 2, 3 };
    for (size_t i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(done_ids[i], want[i]);
    unsigned long n = derived() - before;
    charged = unauth_charged(ctx) - charged;
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    printf("\n  3 acts, batch cut after the first: %lu derivations, %lu charged\n", n,
        charged);
    CU_ASSERT_EQUAL(st.batches, 2);
    CU_ASSERT_EQUAL(n, 2 * (1 + NCAND) + 1);
    CU_ASSERT_EQUAL(charged, n);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(rc[i], P11N_ERR_UNKNOWN_PEER);
    CU_ASSERT_EQUAL(st.cost[P11N_JOB_UNAUTH], 0);
    CU_ASSERT_EQUAL(st.groups_live, 0);
    p11n_ctx_free(ctx);
    kk_teardown(&k);
}

/* ---- what a write is charged ---- */

/* A KK initiator's act one (ss with the responder's static key) on a
 * token key: charged 2 while the key does not know the parity of that
 * DH, and what it spends is 2; once a handshake has taught it, 1, and
 * the token spends 1. */
static void test_write_cost(void)
{
    struct kk k;
    kk_setup(&k, "");
    unsigned want[2] = { 2, 1 };
    for (int round = 0; round < 2; round++) {
        p11n_handshake_config cfg = P11N_HANDSHAKE_CONFIG_INIT;
        cfg.local = k.key;
        cfg.remote = (const uint8_t (*)[P11N_PUBKEY_LEN])k.cand[3];
        cfg.nremote = 1;
        cfg.flags = P11N_HS_ASYNC_TOKEN;
        p11n_handshake *hs = NULL;
        CU_ASSERT_FATAL(p11n_handshake_initiate(&cfg, &hs) == P11N_OK);
        uint8_t act[50];
        size_t n = 0;
        CU_ASSERT_FATAL(p11n_handshake_write(hs, act, sizeof(act), &n) == P11N_ERR_PENDING);
        p11n_handshake_op *op = p11n_handshake_pending(hs);
        CU_ASSERT(!p11n_handshake_op_unauth(op));
        CU_ASSERT_EQUAL(p11n_handshake_op_cost(op), want[round]);
        unsigned long before = derived();
        CU_ASSERT_EQUAL(p11n_handshake_pending_run(op), P11N_OK);
        CU_ASSERT_EQUAL(derived() - before, want[round]);
        p11n_handshake_free(hs);
    }
    kk_teardown(&k);
}

int main(void)
{
    t_token_setup(&T, "p11n-worker");
    t_token_new_key(&T, "server");
    static const p11n_test tests[] = {
        { "outgoing work goes before queued unauthenticated acts", test_outgoing_first },
        { "... and before the rest of a batch", test_outgoing_first_batch },
        { "one worker is kept for outgoing work", test_outgoing_free_worker },
        { "budgets in derivations: OVERLOAD and LIMIT", test_budgets },
        { "an act over the budget never reaches the token", test_overload_no_token },
        { "late and cancelled jobs never reach the token", test_dropped_before_token },
        { "an unwanted act stops between derivations", test_stops_between_derivations },
        { "a deadline passing mid-act stops it on the pool", test_late_midway },
        { "a batch derives each candidate's ss once", test_batch_ss_once },
        { "without a batch every act derives its own", test_no_batch },
        { "acts are charged 1 + N to open a group, 1 to join it", test_charges },
        { "a flood with drops, cancels and refusals drains to zero", test_flood_drain },
        { "the token spends what the acts were charged", test_token_spends_charge },
        { "a group per candidate list: one key, three lists", test_groups_by_candidates },
        { "a batch cut by outgoing work is charged again", test_cut_batch_charged },
        { "a write is charged 1 once the key knows the parity, else 2", test_write_cost },
        { NULL, NULL },
    };
    int rc = p11n_test_main("worker", tests);
    t_token_teardown(&T);
    return rc;
}
