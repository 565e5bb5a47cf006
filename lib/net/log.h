/* Context logging: one line per event, filtered by level, to the
 * application's callback or to stderr with a timestamp. */
#ifndef P11N_LOG_H
#define P11N_LOG_H

#include "p11noise.h"

/* Log a formatted line (truncated at 512 bytes). Never pass secrets. */
void p11n_log(const p11n_ctx *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* What a line is about, for the fields of p11n_log_record: NULL (or 0
 * for conn_id) where a line does not say. The strings are read during
 * the call only. */
struct p11n_log_fields {
    const char *event;            /* one word: "established", "closed", ... */
    unsigned long conn_id;        /* the connection's "#id" */
    const char *peer;             /* identifier, or hex key */
    const char *addr;             /* the remote address */
    const char *reason;           /* why it closed or failed */
};

/* Log a line with its fields (f may be NULL: none). */
void p11n_log_with(const p11n_ctx *ctx, int level, const struct p11n_log_fields *f,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* The same with the event and connection only (event NULL, conn_id 0:
 * not named). */
void p11n_log_ev(const p11n_ctx *ctx, int level, const char *event, unsigned long conn_id,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* 1 if `level` would be logged: skip formatting otherwise. */
int p11n_log_on(const p11n_ctx *ctx, int level);

/* Log the key's warning (p11n_key_warning()) at warning level, once per
 * key: called when a listener or connection starts to use it. */
void p11n_log_key_warning(const p11n_ctx *ctx, p11n_key *key);

#endif
