#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "key.h"
#include "net.h"

#define P11N_LOG_LINE 512

static const char *level_name(int level)
{
    switch (level) {
    case P11N_LOG_ERROR: return "error";
    case P11N_LOG_WARN: return "warn";
    case P11N_LOG_INFO: return "info";
    default: return "debug";
    }
}

/* log_level 0 (no callback, no level asked): nothing at all. A record
 * callback alone (p11n_ctx_new defaults the level for `log` only) gets
 * the default level. */
int p11n_log_on(const p11n_ctx *ctx, int level)
{
    int max = ctx->opt.log_level;
    if (max == 0 && ctx->opt.log_record != NULL)
        max = P11N_LOG_INFO;
    return level <= max;
}

/* Empty strings are "not said" as much as NULL: the record has NULL. */
static const char *said(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static void deliver(const p11n_ctx *ctx, int level, const struct p11n_log_fields *f,
    const char *line)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ctx->opt.log_record != NULL) {
        static const struct p11n_log_fields none = { 0 };
        if (f == NULL)
            f = &none;
        p11n_log_record r = { .size = sizeof(r), .level = level, .text = line,
            .event = f->event, .conn_id = f->conn_id,
            .unix_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000,
            .peer = said(f->peer), .addr = said(f->addr), .reason = said(f->reason) };
        ctx->opt.log_record(&r, ctx->opt.log_arg);
        return;
    }
    if (ctx->opt.log != NULL) {
        ctx->opt.log(level, line, ctx->opt.log_arg);
        return;
    }
    /* Wall-clock UTC with milliseconds, so lines from two machines line up. */
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line: stdio locks the stream, so lines from several
     * contexts in one process do not interleave. */
    fprintf(stderr, "%s.%03ldZ p11noise %s: %s\n", stamp, ts.tv_nsec / 1000000L,
        level_name(level), line);
}

static void vlog(const p11n_ctx *ctx, int level, const struct p11n_log_fields *f,
    const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void vlog(const p11n_ctx *ctx, int level, const struct p11n_log_fields *f,
    const char *fmt, va_list ap)
{
    char line[P11N_LOG_LINE];
    vsnprintf(line, sizeof(line), fmt, ap);
    deliver(ctx, level, f, line);
}

void p11n_log(const p11n_ctx *ctx, int level, const char *fmt, ...)
{
    if (!p11n_log_on(ctx, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, level, NULL, fmt, ap);
    va_end(ap);
}

void p11n_log_with(const p11n_ctx *ctx, int level, const struct p11n_log_fields *f,
    const char *fmt, ...)
{
    if (!p11n_log_on(ctx, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, level, f, fmt, ap);
    va_end(ap);
}

void p11n_log_ev(const p11n_ctx *ctx, int level, const char *event, unsigned long conn_id,
    const char *fmt, ...)
{
    if (!p11n_log_on(ctx, level))
        return;
    struct p11n_log_fields f = { .event = event, .conn_id = conn_id };
    va_list ap;
    va_start(ap, fmt);
    vlog(ctx, level, &f, fmt, ap);
    va_end(ap);
}

void p11n_log_key_warning(const p11n_ctx *ctx, p11n_key *key)
{
    if (key == NULL || key->warning == NULL || key->warned)
        return;
    key->warned = 1;
    /* The public key says which key it is (it is no secret). */
    char hex[2 * P11N_MAXPUBLEN + 1] = "?";
    if (key->alg != NULL && key->alg->publen <= P11N_MAXPUBLEN)
        p11n_hex_encode(key->pub, key->alg->publen, hex);
    p11n_log(ctx, P11N_LOG_WARN, "static key %s: %s", hex, key->warning);
}
