/*
 * Worker threads for handshake steps that use a token key. The loop hands
 * over a connection (its handshake and act buffer belong to the worker
 * until the job returns), a worker runs p11n_handshake_write or _read,
 * and the finished connection comes back through the done list and the
 * context's wake-up fd. Threads start on first use.
 *
 * The queue is bounded (max_token_ops), so a flood of handshakes costs a
 * bounded amount of token time; jobs run in arrival order.
 */
#include "net.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

struct p11n_workers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    p11n_conn *head, *tail;   /* waiting */
    p11n_conn *done;          /* finished, newest first */
    unsigned queued;          /* waiting or running */
    int stop;
    size_t nthreads;
    pthread_t threads[];
};

static void run_job(p11n_conn *c)
{
    if (c->job_op == P11N_JOB_WRITE)
        c->job_rc = p11n_handshake_write(c->hs, c->act, sizeof(c->act), &c->act_len);
    else
        c->job_rc = p11n_handshake_read(c->hs, c->act, c->act_len);
    /* The token's account of a failure is this thread's: take it along,
     * or the loop could never tell which call failed and how. */
    const char *why = p11n_token_last_error();
    if (c->job_rc != P11N_OK && *why != '\0')
        c->job_text = strdup(why);  /* NULL on no memory: the code alone then */
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
        p11n_conn *c = w->head;
        w->head = c->next_job;
        if (w->head == NULL)
            w->tail = NULL;
        pthread_mutex_unlock(&w->mu);
        run_job(c);
        pthread_mutex_lock(&w->mu);
        c->next_job = w->done;
        w->done = c;
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

int p11n_worker_submit(p11n_conn *c, int op)
{
    p11n_ctx *ctx = c->ctx;
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
        p11n_log(ctx, P11N_LOG_WARN, "conn #%lu: %u token operations queued (limit %u)", c->id,
            q, ctx->opt.max_token_ops);
        return P11N_ERR_LIMIT;
    }
    c->job_op = op;
    c->job_rc = P11N_OK;
    c->job_pending = 1;
    c->next_job = NULL;
    if (w->tail != NULL)
        w->tail->next_job = c;
    else
        w->head = c;
    w->tail = c;
    w->queued++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return P11N_OK;
}

void p11n_worker_collect(p11n_ctx *ctx)
{
    struct p11n_workers *w = ctx->workers;
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    p11n_conn *done = w->done;
    w->done = NULL;
    for (p11n_conn *c = done; c != NULL; c = c->next_job)
        w->queued--;
    pthread_mutex_unlock(&w->mu);
    /* Oldest first: the list was built newest first. */
    p11n_conn *rev = NULL;
    while (done != NULL) {
        p11n_conn *c = done;
        done = c->next_job;
        c->next_job = rev;
        rev = c;
    }
    while (rev != NULL) {
        p11n_conn *c = rev;
        rev = c->next_job;
        c->next_job = NULL;
        p11n_conn_job_done(c);
    }
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
    /* Jobs that never ran, or ran without being collected: their
     * connections are about to be freed with the context. */
    for (p11n_conn *c = w->head; c != NULL; c = c->next_job)
        c->job_pending = 0;
    for (p11n_conn *c = w->done; c != NULL; c = c->next_job)
        c->job_pending = 0;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    ctx->workers = NULL;
}
