/*
 * Rate-limited log lines for events a peer can cause at will (refused,
 * evicted and failed connections): at most `per_s` lines in any second,
 * the rest only counted by reason, and a summary of the last period
 * ("N connections refused in the last 10 s: 812 evicted, 40 act-1
 * timeout") once one has passed with something not logged. A flood
 * then costs a few lines per second, not one per connection.
 *
 * A leaf: it takes the time and a line sink, never a connection or a
 * listener, so it is tested with a fake clock. Not thread-safe: one
 * limiter per loop-thread owner (each listener has its own).
 */
#ifndef P11N_RATELOG_H
#define P11N_RATELOG_H

#include <stddef.h>
#include <stdint.h>

/* The summary period. */
#define P11N_RATELOG_PERIOD_MS 10000
/* Reasons a limiter counts apart (the rest of the table's indexes). */
#define P11N_RATELOG_REASONS 16

/* Receives each line (no newline; valid during the call only); `summary`
 * is 1 for the period's summary line. */
typedef void (*p11n_ratelog_fn)(void *arg, int summary, const char *line);

typedef struct p11n_ratelog {
    unsigned per_s;               /* lines allowed in each second */
    const char *what;             /* "refused": the summary's verb */
    const char *const *names;     /* reason index -> "evicted", "act-1 timeout", ... */
    size_t nnames;                /* at most P11N_RATELOG_REASONS */
    p11n_ratelog_fn fn;
    void *arg;
    uint64_t sec_start;           /* the current second began */
    unsigned sec_lines;           /* lines logged in it */
    uint64_t period_start;        /* the current summary period began (0: none open) */
    unsigned long counts[P11N_RATELOG_REASONS]; /* events this period, by reason */
    unsigned long events, dropped;/* events this period; those not logged */
} p11n_ratelog;

/* Set up `rl` (no allocation). `names` (reasons by index) and `what`
 * are borrowed and must outlive it; per_s 0 logs no single line, only
 * summaries. */
void p11n_ratelog_init(p11n_ratelog *rl, unsigned per_s, const char *what,
    const char *const *names, size_t nnames, p11n_ratelog_fn fn, void *arg);

/* An event of `reason` at `now` (ms, monotonic): counted, and 1 if its
 * own line may be logged now, 0 if it is only counted. A period that
 * has run out is summarised first. A reason outside the table counts as
 * the table's last. */
int p11n_ratelog_allow(p11n_ratelog *rl, uint64_t now, size_t reason);

/* p11n_ratelog_allow, then the formatted line to the sink if allowed.
 * Returns what allow returned. */
int p11n_ratelog_event(p11n_ratelog *rl, uint64_t now, size_t reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* When the open period's summary is due (0: none is pending, nothing was
 * dropped): the owner arms a timer for it and calls p11n_ratelog_tick. */
uint64_t p11n_ratelog_due(const p11n_ratelog *rl);

/* Summarise the period if it has run out by `now` (or, with `force`,
 * now: the owner goes away) and something was dropped; then start
 * afresh. */
void p11n_ratelog_tick(p11n_ratelog *rl, uint64_t now, int force);

#endif
