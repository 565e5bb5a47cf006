/*
 * Worker threads for blocking work (handshake steps that use a token
 * key). The loop submits a job that owns its inputs; a worker runs it,
 * and the finished job comes back through the done list and the
 * context's wake-up fd, where its done() runs on the loop thread.
 * Threads start on first use. The pool knows jobs, never connections.
 *
 * Two queues, each bounded in token derivations (a job's cost at worst),
 * queued or running: our own connections' work (max_token_ops) and acts
 * of peers not yet authenticated (max_unauth_token_ops). A worker always
 * takes outgoing work first, and at most unauth_workers threads run
 * unauthenticated work at once, so a flood of bogus acts never holds
 * every token session. A full unauthenticated queue refuses the newest
 * act before it reaches the token.
 *
 * Dead or late work never reaches the token: a job whose submitter went
 * away (p11n_job_cancel) or whose deadline passed is dropped before it
 * runs, and run() asks again before each token operation
 * (p11n_job_wanted).
 *
 * A worker that takes a KK responder's act one (a job with a batch key)
 * goes on with the other queued acts for the same key, up to BATCH_MAX,
 * with one table of ss values on its stack: each candidate's ss is
 * derived once per batch, es once per act. Between two acts it looks at
 * the outgoing queue and ends the batch when work waits there.
 */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"
#include "log.h"
#include "token.h"

/* Acts in one batch: long enough that the 16 ss derivations are shared
 * by many acts (1 derivation per act plus 16 per batch: 1.25 per act),
 * short enough that the table of secrets is wiped often (a full batch
 * takes well under a second of token time at 5 ms per derivation). */
#define BATCH_MAX 64

struct jobq {
    p11n_job *head, *tail;
    unsigned cost;            /* derivations queued or running */
};

struct p11n_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct jobq q[P11N_JOB_CLASSES];
    unsigned unauth_running;  /* threads running unauthenticated work */
    p11n_job *done;           /* finished, newest first */
    struct p11n_worker_stats st;
    int stop;
    size_t nthreads;
    pthread_t threads[];
};

static unsigned job_cost(const p11n_job *job)
{
    return job->cost > 0 ? job->cost : 1;
}

void p11n_job_cancel(p11n_job *job)
{
    atomic_store(&job->cancelled, 1);
}

int p11n_job_wanted(p11n_job *job)
{
    if (atomic_load(&job->cancelled)) {
        job->dropped = P11N_JOB_DEAD;
        return P11N_ERR_CLOSED;
    }
    if (job->deadline != 0 && p11n_now_ms() >= job->deadline) {
        job->dropped = P11N_JOB_LATE;
        return P11N_ERR_TIMEOUT;
    }
    return P11N_OK;
}

static const char *const drop_text[] = {
    [P11N_JOB_RAN] = "",
    [P11N_JOB_DEAD] = "its connection has gone",
    [P11N_JOB_LATE] = "the act's deadline passed while it waited for the token",
};

/* Worker thread, mutex not held. Returns 1 if the job stopped between
 * two token operations. */
static int run_job(p11n_job *job, struct p11n_ss_table *ss)
{
    job->rc = P11N_OK;
    job->text[0] = '\0';
    job->dropped = P11N_JOB_RAN;
    int rc = p11n_job_wanted(job);
    if (rc != P11N_OK) {
        job->rc = rc;
        snprintf(job->text, sizeof(job->text), "dropped before the token: %s",
            drop_text[job->dropped]);
        return 0;
    }
    /* The thread's last token error may be another job's: a job that
     * fails for a reason of its own (a bad tag) must not carry it. */
    p11n_token_error_clear();
    job->ss = ss;
    job->run(job);
    job->ss = NULL;
    if (job->dropped != P11N_JOB_RAN) {
        snprintf(job->text, sizeof(job->text), "stopped between two token operations: %s",
            drop_text[job->dropped]);
        return 1;
    }
    /* The token's account of a failure is this thread's: take it along,
     * or the loop could never tell which call failed and how. */
    if (job->rc != P11N_OK)
        snprintf(job->text, sizeof(job->text), "%s", p11n_token_last_error());
    return 0;
}

static void push(struct jobq *q, p11n_job *job)
{
    job->next = NULL;
    if (q->tail != NULL)
        q->tail->next = job;
    else
        q->head = job;
    q->tail = job;
}

/* Take the first job of q (of the batch, unless NULL), or NULL. */
static p11n_job *take_from(struct jobq *q, const void *batch)
{
    p11n_job *prev = NULL, *job = q->head;
    while (job != NULL && batch != NULL && job->batch != batch) {
        prev = job;
        job = job->next;
    }
    if (job == NULL)
        return NULL;
    if (prev != NULL)
        prev->next = job->next;
    else
        q->head = job->next;
    if (q->tail == job)
        q->tail = prev;
    job->next = NULL;
    return job;
}

/* Mutex held: the next job this thread may run, outgoing first. */
static p11n_job *take(p11n_ctx *ctx, struct p11n_workers *w)
{
    p11n_job *job = take_from(&w->q[P11N_JOB_OUTGOING], NULL);
    if (job != NULL || w->unauth_running >= ctx->opt.unauth_workers)
        return job;
    job = take_from(&w->q[P11N_JOB_UNAUTH], NULL);
    if (job != NULL)
        w->unauth_running++;
    return job;
}

/* Mutex held: the job has run; its cost leaves the budget, and it goes
 * to the done list for the loop thread. */
static void finish(p11n_ctx *ctx, struct p11n_workers *w, p11n_job *job, int midway)
{
    w->q[job->cls].cost -= job_cost(job);
    w->st.dropped_dead += job->dropped == P11N_JOB_DEAD;
    w->st.dropped_late += job->dropped == P11N_JOB_LATE;
    w->st.dropped_midway += midway;
    job->next = w->done;
    w->done = job;
    p11n_wake(ctx);
}

/* Mutex held on entry and return. An unauthenticated job, and after it
 * the queued jobs of its batch while no outgoing work waits. */
static void run_unauth(p11n_ctx *ctx, struct p11n_workers *w, p11n_job *job)
{
    struct p11n_ss_table table;
    p11n_ss_table_init(&table);
    const void *batch = job->batch;
    unsigned n = 0;
    while (job != NULL) {
        pthread_mutex_unlock(&w->mu);
        int midway = run_job(job, batch != NULL ? &table : NULL);
        pthread_mutex_lock(&w->mu);
        finish(ctx, w, job, midway);
        n++;
        job = NULL;
        if (batch != NULL && n < BATCH_MAX && !w->stop
            && w->q[P11N_JOB_OUTGOING].head == NULL)
            job = take_from(&w->q[P11N_JOB_UNAUTH], batch);
    }
    p11n_ss_table_wipe(&table);
    w->unauth_running--;
    w->st.batches += batch != NULL;
    w->st.batched += batch != NULL ? n - 1 : 0;
    /* The thread slot is free: another worker may take unauthenticated
     * work now. */
    pthread_cond_broadcast(&w->cv);
}

static void *worker_main(void *arg)
{
    p11n_ctx *ctx = arg;
    struct p11n_workers *w = ctx->workers;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        p11n_job *job = NULL;
        while (!w->stop && (job = take(ctx, w)) == NULL)
            pthread_cond_wait(&w->cv, &w->mu);
        if (job == NULL)
            break;
        if (job->cls == P11N_JOB_UNAUTH) {
            run_unauth(ctx, w, job);
            continue;
        }
        pthread_mutex_unlock(&w->mu);
        int midway = run_job(job, NULL);
        pthread_mutex_lock(&w->mu);
        finish(ctx, w, job, midway);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}
static int workers_start(p11n_ctx *ctx)
{
    size_t n = ctx->opt.workers;
    struct p11n_workers *w = calloc(1, sizeof(*w) + n * sizeof(pthread_t));
    if (w == NULL)
        return P11N_ERR_NOMEM;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    ctx->workers = w;
    for (size_t i = 0; i < n; i++) {
        if (pthread_create(&w->threads[i], NULL, worker_main, ctx) != 0) {
            p11n_log(ctx, P11N_LOG_ERROR, "cannot start worker thread %zu of %zu", i + 1, n);
            if (i == 0) {
                pthread_cond_destroy(&w->cv);
                pthread_mutex_destroy(&w->mu);
                free(w);
                ctx->workers = NULL;
                return P11N_ERR_IO;
            }
            break; /* fewer threads still work */
        }
        w->nthreads++;
    }
    p11n_log(ctx, P11N_LOG_DEBUG, "started %zu worker thread%s for token operations",
        w->nthreads, w->nthreads == 1 ? "" : "s");
    return P11N_OK;
}

int p11n_worker_submit(p11n_ctx *ctx, p11n_job *job)
{
    if (job->cls < 0 || job->cls >= P11N_JOB_CLASSES)
        return P11N_ERR_INVALID_ARG;
    if (ctx->workers == NULL) {
        int rc = workers_start(ctx);
        if (rc != P11N_OK)
            return rc;
    }
    struct p11n_workers *w = ctx->workers;
    static const int refusal[P11N_JOB_CLASSES] = {
        [P11N_JOB_OUTGOING] = P11N_ERR_LIMIT, [P11N_JOB_UNAUTH] = P11N_ERR_OVERLOAD,
    };
    unsigned limit = job->cls == P11N_JOB_UNAUTH ? ctx->opt.max_unauth_token_ops
                                                 : ctx->opt.max_token_ops;
    struct jobq *q = &w->q[job->cls];
    pthread_mutex_lock(&w->mu);
    /* A lone job always fits: a limit below one act's cost must not make
     * the act impossible. */
    if (q->cost > 0 && q->cost + job_cost(job) > limit) {
        w->st.refused[job->cls]++;
        pthread_mutex_unlock(&w->mu);
        return refusal[job->cls];
    }
    job->dropped = P11N_JOB_RAN;
    job->ss = NULL;
    push(q, job);
    q->cost += job_cost(job);
    w->st.submitted++;
    /* Broadcast: the thread woken must be one allowed to take this class. */
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return P11N_OK;
}

unsigned long p11n_worker_submitted(p11n_ctx *ctx)
{
    struct p11n_worker_stats st;
    p11n_worker_stats(ctx, &st);
    return st.submitted;
}

void p11n_worker_stats(p11n_ctx *ctx, struct p11n_worker_stats *out)
{
    memset(out, 0, sizeof(*out));
    struct p11n_workers *w = ctx->workers;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    *out = w->st;
    for (int i = 0; i < P11N_JOB_CLASSES; i++)
        out->cost[i] = w->q[i].cost;
    pthread_mutex_unlock(&w->mu);
}

/* Call done() on a list built newest first, oldest first. */
static void finish_all(p11n_job *newest_first)
{
    p11n_job *rev = NULL;
    while (newest_first != NULL) {
        p11n_job *job = newest_first;
        newest_first = job->next;
        job->next = rev;
        rev = job;
    }
    while (rev != NULL) {
        p11n_job *job = rev;
        rev = job->next;
        job->next = NULL;
        job->done(job);
    }
}

void p11n_worker_collect(p11n_ctx *ctx)
{
    struct p11n_workers *w = ctx->workers;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    p11n_job *done = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->mu);
    finish_all(done);
}

/* Orphan every job of a queue and let done() free it. */
static void orphan_queue(struct jobq *q)
{
    for (p11n_job *job = q->head; job != NULL; job = job->next)
        job->owner = NULL;
    finish_all(q->head);
    q->head = q->tail = NULL;
}

void p11n_workers_free(p11n_ctx *ctx)
{
    struct p11n_workers *w = ctx->workers;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    /* Jobs that never ran, or ran without being collected: nobody is
     * left to finish them, so done() only frees each. */
    p11n_job *left = w->done;
    for (p11n_job *job = left; job != NULL; job = job->next)
        job->owner = NULL;
    finish_all(left);
    for (int i = 0; i < P11N_JOB_CLASSES; i++)
        orphan_queue(&w->q[i]);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    ctx->workers = NULL;
}
