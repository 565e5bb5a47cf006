/*
 * Rate-limited log lines (ratelog.h): a per-second budget of lines and
 * a per-period count by reason.
 */
#include "ratelog.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Longest line this file formats; the log truncates longer ones anyway. */
#define LINE_MAX_LEN 512

void p11n_ratelog_init(p11n_ratelog *rl, unsigned per_s, const char *what,
    const char *const *names, size_t nnames, p11n_ratelog_fn fn, void *arg)
{
    memset(rl, 0, sizeof(*rl));
    rl->per_s = per_s;
    rl->what = what;
    rl->names = names;
    rl->nnames = nnames < P11N_RATELOG_REASONS ? nnames : P11N_RATELOG_REASONS;
    rl->fn = fn;
    rl->arg = arg;
}

/* "N connections refused in the last 10 s (M not logged one by one):
 * 812 evicted, 40 act-1 timeout", reasons in table order. */
static void summarise(p11n_ratelog *rl, uint64_t now)
{
    char line[LINE_MAX_LEN];
    int len = snprintf(line, sizeof(line), "%lu connections %s in the last %llu s (%lu not "
        "logged one by one)", rl->events, rl->what,
        (unsigned long long)((now - rl->period_start + 999) / 1000), rl->dropped);
    /* With one reason alone, the verb says it already. */
    const char *sep = ": ";
    for (size_t i = 0; i < rl->nnames && rl->nnames > 1; i++) {
        if (rl->counts[i] == 0 || len < 0 || (size_t)len >= sizeof(line))
            continue;
        len += snprintf(line + len, sizeof(line) - (size_t)len, "%s%lu %s", sep, rl->counts[i],
            rl->names[i]);
        sep = ", ";
    }
    rl->fn(rl->arg, 1, line);
}

void p11n_ratelog_tick(p11n_ratelog *rl, uint64_t now, int force)
{
    if (rl->events == 0 || (!force && now - rl->period_start < P11N_RATELOG_PERIOD_MS))
        return;
    if (rl->dropped > 0)
        summarise(rl, now);
    memset(rl->counts, 0, sizeof(rl->counts));
    rl->events = rl->dropped = 0;
    rl->period_start = 0;
}

uint64_t p11n_ratelog_due(const p11n_ratelog *rl)
{
    return rl->dropped > 0 ? rl->period_start + P11N_RATELOG_PERIOD_MS : 0;
}

int p11n_ratelog_allow(p11n_ratelog *rl, uint64_t now, size_t reason)
{
    if (rl->nnames == 0)
        return 0;
    p11n_ratelog_tick(rl, now, 0);
    if (rl->events == 0)
        rl->period_start = now;
    rl->events++;
    rl->counts[reason < rl->nnames ? reason : rl->nnames - 1]++;
    if (now - rl->sec_start >= 1000) {
        rl->sec_start = now;
        rl->sec_lines = 0;
    }
    if (rl->sec_lines < rl->per_s) {
        rl->sec_lines++;
        return 1;
    }
    rl->dropped++;
    return 0;
}

int p11n_ratelog_event(p11n_ratelog *rl, uint64_t now, size_t reason, const char *fmt, ...)
{
    if (!p11n_ratelog_allow(rl, now, reason))
        return 0;
    char line[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    rl->fn(rl->arg, 0, line);
    return 1;
}
