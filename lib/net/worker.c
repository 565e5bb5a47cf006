/*
 * Worker threads for blocking work (handshake steps that use a token
 * key). The loop submits a job that owns its inputs; a worker runs it,
 * and the finished job comes back through the done list and the
 * context's wake-up fd, where its done() runs on the loop thread.
 * Threads start on first use. The pool knows jobs, never connections.
 *
 * Two queues, each bounded in the token derivations charged for its jobs
 * queued or running (a job's cost at worst; batches below): our own
 * connections' work (max_token_ops) and acts of peers not yet
 * authenticated (max_unauth_token_ops). A worker always
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
 * A KK responder's acts one (jobs with a batch key) are charged what
 * they will cost, not their worst case each: they go into groups of up to
 * P11N_JOB_BATCH_MAX acts of one key and one list of candidates (the
 * list is part of the group's identity, so the batch's table holds
 * exactly the N values the group was charged for, whatever other lists
 * the key serves), and one worker runs a group as one batch with one
 * table of ss values on its stack, so each candidate's ss is derived once
 * per batch and es once per act. The act that opens a group is charged
 * 1 + N, one that joins it 1 (worker.h). No two workers run one group at
 * once, but groups of one key run in parallel: a flood fills a group, the
 * next one opens and an idle worker takes it.
 *
 * Between two acts a worker looks at the outgoing queue and ends the
 * batch when work waits there. That batch has spent the group's N; the
 * worker that takes the rest of the group up derives the ss values
 * again, so the group is charged N again at once: the N spent leaves the
 * budget and the N to come takes its place (the budget's total does not
 * move, so the rest of the group always fits), and stats.charged counts
 * it. A group is thus charged N once per batch run, and the token never
 * spends more than was charged.
 */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "key.h"
#include "log.h"
#include "token.h"

/* Acts of one key, list of candidates and cost that one worker runs as
 * one batch. Lives while any of its jobs is queued or running; pool
 * mutex. */
struct p11n_job_group {
    const void *key;          /* the jobs' batch key */
    unsigned shared;          /* derivations charged once per batch run: cost - 1 */
    unsigned joined;          /* jobs ever in it (a group takes no more at the batch size) */
    unsigned members;         /* of those, queued or running */
    int running;              /* a worker has it */
    struct p11n_job_group *next;
    size_t set_len;
    unsigned char set[];      /* the jobs' batch_set (public keys: nothing secret) */
};

struct jobq {
    p11n_job *head, *tail;
    unsigned cost;            /* derivations charged for jobs queued or running */
    unsigned jobs;            /* jobs queued or running */
    unsigned waiting;         /* of those, queued */
};

struct p11n_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct jobq q[P11N_JOB_CLASSES];
    unsigned unauth_running;  /* threads running unauthenticated work */
    struct p11n_job_group *groups;  /* live batch groups */
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

/* What the job is charged on its own: its cost, less the part its group
 * carries. */
static unsigned own_cost(const p11n_job *job)
{
    return job_cost(job) - (job->group != NULL ? job->group->shared : 0);
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

/* Whether a worker may take the job: not while its group is another
 * worker's (`group`: the caller's own batch, or NULL for any job). */
static int takeable(const p11n_job *job, const struct p11n_job_group *group)
{
    if (group != NULL)
        return job->group == group;
    return job->group == NULL || !job->group->running;
}

/* Take the first job of q that the caller may take, or NULL. */
static p11n_job *take_from(struct jobq *q, const struct p11n_job_group *group)
{
    p11n_job *prev = NULL, *job = q->head;
    while (job != NULL && !takeable(job, group)) {
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
    q->waiting--;
    if (job->group != NULL)
        job->group->running = 1;
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
    w->q[job->cls].cost -= own_cost(job);
    w->q[job->cls].jobs--;
    if (job->group != NULL)
        job->group->members--;
    job->group = NULL;
    w->st.dropped_dead += job->dropped == P11N_JOB_DEAD;
    w->st.dropped_late += job->dropped == P11N_JOB_LATE;
    w->st.dropped_midway += midway;
    job->next = w->done;
    w->done = job;
    p11n_wake(ctx);
}

/* Mutex held: the worker that ran the group is done with it. A group
 * with no jobs left gives back its shared part. One whose batch ended
 * early has spent it, and the next batch spends it again: it is charged
 * again (in place of what was spent, so the budget's total stays) and
 * waits for the next worker. */
static void group_end(struct p11n_workers *w, struct p11n_job_group *g)
{
    g->running = 0;
    if (g->members > 0) {
        w->st.charged[P11N_JOB_UNAUTH] += g->shared;
        return;
    }
    w->q[P11N_JOB_UNAUTH].cost -= g->shared;
    struct p11n_job_group **pp = &w->groups;
    while (*pp != g)
        pp = &(*pp)->next;
    *pp = g->next;
    free(g);
}

/* Mutex held on entry and return. An unauthenticated job, and after it
 * the queued jobs of its group while no outgoing work waits. */
static void run_unauth(p11n_ctx *ctx, struct p11n_workers *w, p11n_job *job)
{
    struct p11n_ss_table table;
    p11n_ss_table_init(&table);
    struct p11n_job_group *g = job->group;
    unsigned n = 0;
    while (job != NULL) {
        pthread_mutex_unlock(&w->mu);
        int midway = run_job(job, g != NULL ? &table : NULL);
        pthread_mutex_lock(&w->mu);
        finish(ctx, w, job, midway);
        n++;
        job = NULL;
        if (g != NULL && n < P11N_JOB_BATCH_MAX && !w->stop
            && w->q[P11N_JOB_OUTGOING].head == NULL)
            job = take_from(&w->q[P11N_JOB_UNAUTH], g);
    }
    p11n_ss_table_wipe(&table);
    if (g != NULL)
        group_end(w, g);
    w->unauth_running--;
    w->st.batches += g != NULL;
    w->st.batched += g != NULL ? n - 1 : 0;
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

/* Whether the job belongs in g: same key, cost and candidates (public
 * keys: a plain compare). */
static int group_fits(const struct p11n_job_group *g, const p11n_job *job)
{
    return g->key == job->batch && g->shared == job_cost(job) - 1
        && g->set_len == job->batch_set_len
        && (g->set_len == 0 || memcmp(g->set, job->batch_set, g->set_len) == 0);
}

/* Mutex held: the open group the job would join (it fits, room left),
 * or NULL. */
static struct p11n_job_group *group_open(struct p11n_workers *w, const p11n_job *job)
{
    if (job->cls != P11N_JOB_UNAUTH || job->batch == NULL)
        return NULL;
    for (struct p11n_job_group *g = w->groups; g != NULL; g = g->next)
        if (g->joined < P11N_JOB_BATCH_MAX && group_fits(g, job))
            return g;
    return NULL;
}

/* Mutex held: put an unauthenticated job with a batch key in `g`, or in
 * a new group when g is NULL; other jobs stay out of groups. Errors:
 * NOMEM. */
static int group_join(struct p11n_workers *w, p11n_job *job, struct p11n_job_group *g)
{
    job->group = NULL;
    if (job->cls != P11N_JOB_UNAUTH || job->batch == NULL)
        return P11N_OK;
    if (g == NULL) {
        g = calloc(1, sizeof(*g) + job->batch_set_len);
        if (g == NULL)
            return P11N_ERR_NOMEM;
        g->set_len = job->batch_set_len;
        if (g->set_len > 0)
            memcpy(g->set, job->batch_set, g->set_len);
        g->key = job->batch;
        g->shared = job_cost(job) - 1;
        g->next = w->groups;
        w->groups = g;
        w->st.groups++;
    }
    g->joined++;
    g->members++;
    job->group = g;
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
    /* Joining an open group costs the act's own derivation; anything
     * else its whole cost. A lone job always fits: a limit below one
     * act's cost must not make the act impossible. */
    struct p11n_job_group *g = group_open(w, job);
    unsigned charge = g != NULL ? job_cost(job) - g->shared : job_cost(job);
    if (q->cost > 0 && q->cost + charge > limit) {
        w->st.refused[job->cls]++;
        pthread_mutex_unlock(&w->mu);
        return refusal[job->cls];
    }
    int rc = group_join(w, job, g);
    if (rc != P11N_OK) {
        pthread_mutex_unlock(&w->mu);
        return rc;
    }
    job->dropped = P11N_JOB_RAN;
    job->ss = NULL;
    push(q, job);
    q->cost += charge;
    w->st.charged[job->cls] += charge;
    q->jobs++;
    q->waiting++;
    if (job->cls == P11N_JOB_UNAUTH && q->waiting > w->st.depth_peak)
        w->st.depth_peak = q->waiting;
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
    for (int i = 0; i < P11N_JOB_CLASSES; i++) {
        out->cost[i] = w->q[i].cost;
        out->jobs[i] = w->q[i].jobs;
    }
    for (const struct p11n_job_group *g = w->groups; g != NULL; g = g->next)
        out->groups_live++;
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
    for (p11n_job *job = q->head; job != NULL; job = job->next) {
        job->owner = NULL;
        job->group = NULL;
    }
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
    while (w->groups != NULL) {
        struct p11n_job_group *g = w->groups;
        w->groups = g->next;
        free(g);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    ctx->workers = NULL;
}
