/* Worker threads for blocking work (worker.c): jobs, never
 * connections. */
#ifndef P11N_WORKER_H
#define P11N_WORKER_H

#include "net.h"

/* Room for the token's account of a failed job (p11n_token_last_error). */
#define P11N_JOB_TEXT 256

/* A piece of blocking work: run() on a worker thread, done() back on the
 * loop thread. From submit until done() the job owns its inputs (the
 * submitter hands them over and keeps only the job pointer), so nothing
 * the worker touches is shared. A submitter that goes away first orphans
 * its job (owner = NULL) and forgets it; done() then only frees it. The
 * pool never looks at owner: it is the submitter's, on the loop thread. */
typedef struct p11n_job p11n_job;
struct p11n_job {
    void (*run)(p11n_job *job);     /* worker thread; sets rc */
    void (*done)(p11n_job *job);    /* loop thread; frees the job */
    void *owner;                    /* loop thread only; NULL: orphaned */
    int rc;
    char text[P11N_JOB_TEXT];       /* rc != OK: the token's words, or "" */
    p11n_job *next;                 /* the pool's queues */
};

/* Queue a job (threads start on first use). Errors (the job stays the
 * caller's): LIMIT (max_token_ops queued), NOMEM, IO (no thread). */
int p11n_worker_submit(p11n_ctx *ctx, p11n_job *job);
/* Jobs queued since the threads started (0 before): the count of worker
 * trips, read by tests. Loop thread. */
unsigned long p11n_worker_submitted(p11n_ctx *ctx);
/* Run on wake-up: call done() of finished jobs, oldest first. */
void p11n_worker_collect(p11n_ctx *ctx);
/* Stop the threads; jobs not yet collected are orphaned and done()
 * frees them. */
void p11n_workers_free(p11n_ctx *ctx);

#endif
