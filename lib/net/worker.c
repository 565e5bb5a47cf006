/*
 * Worker threads for blocking work (handshake steps that use a token
 * key). The loop submits a job that owns its inputs; a worker runs it,
 * and the finished job comes back through the done list and the
 * context's wake-up fd, where its done() runs on the loop thread.
 * Threads start on first use. The pool knows jobs, never connections.
 *
 * The queue is bounded (max_token_ops), so a flood of handshakes costs a
 * bounded amount of token time; jobs run in arrival order.
 */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "token.h"

struct p11n_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    p11n_job *head, *tail;    /* waiting */
    p11n_job *done;           /* finished, newest first */
    unsigned queued;          /* waiting, running or finished, not yet collected */
    unsigned long submitted;  /* jobs ever queued (tests count worker trips) */
    int stop;
    size_t nthreads;
    pthread_t threads[];
};

static void run_job(p11n_job *job)
{
    job->rc = P11N_OK;
    job->text[0] = '\0';
    /* The thread's last token error may be another job's: a job that
     * fails for a reason of its own (a bad tag) must not carry it. */
    p11n_token_error_clear();
    job->run(job);
    /* The token's account of a failure is this thread's: take it along,
     * or the loop could never tell which call failed and how. */
    if (job->rc != P11N_OK)
        snprintf(job->text, sizeof(job->text), "%s", p11n_token_last_error());
}

static void *worker_main(void *arg)
{
    p11n_ctx *ctx = arg;
    struct p11n_workers *w = ctx->workers;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->head == NULL && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        p11n_job *job = w->head;
        w->head = job->next;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        run_job(job);
        pthread_mutex_lock(&w->mu);
        job->next = w->done;
        w->done = job;
        p11n_wake(ctx);
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
    if (ctx->workers == NULL) {
        int rc = workers_start(ctx);
        if (rc != P11N_OK)
            return rc;
    }
    struct p11n_workers *w = ctx->workers;
    pthread_mutex_lock(&w->mu);
    if (w->queued >= ctx->opt.max_token_ops) {
        unsigned q = w->queued;
        pthread_mutex_unlock(&w->mu);
        p11n_log(ctx, P11N_LOG_WARN, "%u token operations queued (limit %u)", q,
            ctx->opt.max_token_ops);
        return P11N_ERR_LIMIT;
    }
    job->next = NULL;
    if (w->tail != NULL)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    w->queued++;
    w->submitted++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return P11N_OK;
}

unsigned long p11n_worker_submitted(p11n_ctx *ctx)
{
    struct p11n_workers *w = ctx->workers;
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    unsigned long n = w->submitted;
    pthread_mutex_unlock(&w->mu);
    return n;
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
    for (p11n_job *job = done; job != NULL; job = job->next)
        w->queued--;
    pthread_mutex_unlock(&w->mu);
    finish_all(done);
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
    for (p11n_job *job = w->head; job != NULL; job = job->next)
        job->owner = NULL;
    finish_all(left);
    finish_all(w->head);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    ctx->workers = NULL;
}
