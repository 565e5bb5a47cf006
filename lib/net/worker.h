/* Worker threads for blocking work (worker.c): jobs, never
 * connections. */
#ifndef P11N_WORKER_H
#define P11N_WORKER_H

#include <stdatomic.h>

#include "net.h"

struct p11n_ss_table;
struct p11n_job_group;

/* Room for the token's account of a failed job (p11n_token_last_error). */
#define P11N_JOB_TEXT 256

/* Whose work a job is: the two queues, each with its own budget. */
enum p11n_job_class {
    P11N_JOB_OUTGOING = 0,  /* our own connections' steps: max_token_ops */
    P11N_JOB_UNAUTH = 1,    /* an incoming peer not yet authenticated: max_unauth_token_ops */
};
#define P11N_JOB_CLASSES 2

/* Why a job did not run, or stopped between two token operations. */
enum p11n_job_drop { P11N_JOB_RAN = 0, P11N_JOB_DEAD, P11N_JOB_LATE };

/* A piece of blocking work: run() on a worker thread, done() back on the
 * loop thread. From submit until done() the job owns its inputs (the
 * submitter hands them over and keeps only the job pointer), so nothing
 * the worker touches is shared. A submitter that goes away first orphans
 * its job (owner = NULL, then p11n_job_cancel) and forgets it; done()
 * then only frees it. The pool never looks at owner: it is the
 * submitter's, on the loop thread.
 *
 * The submitter sets cls, cost, deadline and batch before submitting and
 * never changes them; the pool sets ss and dropped for run() and done().
 *
 * What a job is charged: its cost, unless it is unauthenticated work
 * with a batch key. Those jobs go into groups of up to P11N_JOB_BATCH_MAX
 * acts of one key, one batch_set and one cost, each group run by one
 * worker as one batch: of a batch job's cost, 1 is its own (es) and
 * cost - 1 is what the group shares (one ss per candidate). The job that
 * opens a group is charged its whole cost, one that joins an open group
 * 1. The shared part is charged once per batch run: a batch that
 * outgoing work ends early has spent it, and the group is charged it
 * again for the batch that takes up the rest (in the budget in place of
 * what was spent); it leaves the budget when the group's last job is
 * done. */
typedef struct p11n_job p11n_job;
struct p11n_job {
    void (*run)(p11n_job *job);     /* worker thread; sets rc */
    void (*done)(p11n_job *job);    /* loop thread; frees the job */
    void *owner;                    /* loop thread only; NULL: orphaned */
    int rc;
    char text[P11N_JOB_TEXT];       /* rc != OK: the token's words, or why it was dropped */
    int cls;                        /* enum p11n_job_class */
    unsigned cost;                  /* token derivations at worst (0 counts as 1) */
    uint64_t deadline;              /* p11n_now_ms() past which the work is useless; 0: none */
    /* Jobs with the same non-NULL batch (a KK responder's local key) and
     * the same batch_set (its candidates' public keys, in order; compared
     * byte for byte) may run one after another on one worker, sharing
     * `ss`. batch_set is read during p11n_worker_submit only (the pool
     * keeps a copy): it may point into what the job owns. */
    const void *batch;
    const void *batch_set;
    size_t batch_set_len;
    struct p11n_ss_table *ss;       /* for run(): the batch's table, or NULL */
    int dropped;                    /* enum p11n_job_drop, set on the worker */
    struct p11n_job_group *group;   /* the pool's: the batch group joined, or NULL */
    atomic_int cancelled;           /* p11n_job_cancel: read by the worker */
    p11n_job *next;                 /* the pool's queues */
};

/* Acts of one key, list and cost in one group: the 16 ss derivations of a KK
 * responder with 16 candidates are shared by 64 acts (1.25 derivations
 * per act), and the table of secrets is wiped after each batch. */
#define P11N_JOB_BATCH_MAX 64

/* Queue a job (threads start on first use). Outgoing jobs go before
 * unauthenticated ones; each class is bounded by the derivations charged
 * for its jobs queued or running (a lone job always fits). Errors (the job stays the
 * caller's): LIMIT (max_token_ops, outgoing), OVERLOAD
 * (max_unauth_token_ops; refused before any token operation), NOMEM, IO
 * (no thread), INVALID_ARG (no such class). */
int p11n_worker_submit(p11n_ctx *ctx, p11n_job *job);
/* Loop thread: the job's submitter has gone. A job not yet run is
 * dropped before the token; a running one stops before its next token
 * operation. done() still runs (and frees it). */
void p11n_job_cancel(p11n_job *job);
/* Worker thread, from run(): P11N_OK while the job is wanted; CLOSED
 * (cancelled) or TIMEOUT (deadline passed), noted in job->dropped. */
int p11n_job_wanted(p11n_job *job);
/* Jobs queued since the threads started (0 before): the count of worker
 * trips, read by tests. Loop thread. */
unsigned long p11n_worker_submitted(p11n_ctx *ctx);

/* The pool's account, for tests and status. */
struct p11n_worker_stats {
    unsigned long submitted;
    unsigned long refused[P11N_JOB_CLASSES];  /* over the class's budget */
    unsigned long dropped_dead;     /* cancelled before or during run() */
    unsigned long dropped_late;     /* deadline passed before or during run() */
    unsigned long dropped_midway;   /* of those, stopped between token operations */
    unsigned long batches;          /* batches of unauthenticated acts run */
    unsigned long batched;          /* acts run after the first in a batch */
    unsigned long groups;           /* batch groups opened (each charged its shared part) */
    unsigned long charged[P11N_JOB_CLASSES];  /* derivations charged since the start (a cut
                                               * batch's group again for its next run) */
    unsigned depth_peak;            /* most unauthenticated jobs waiting at once */
    unsigned cost[P11N_JOB_CLASSES];/* derivations charged for jobs queued or running now */
    unsigned jobs[P11N_JOB_CLASSES];/* jobs queued or running now */
    unsigned groups_live;           /* batch groups with jobs queued or running now */
};
void p11n_worker_stats(p11n_ctx *ctx, struct p11n_worker_stats *out);

/* Run on wake-up: call done() of finished jobs, oldest first. */
void p11n_worker_collect(p11n_ctx *ctx);
/* Stop the threads; jobs not yet collected are orphaned and done()
 * frees them. */
void p11n_workers_free(p11n_ctx *ctx);

#endif
