/*
 * Figures side by side and for machines: bench_interleave measures the
 * two sides of a ratio in alternating repetitions; --json prints each
 * keyed row as one JSON object per line.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

int bench_interleave(const bench_opts *o, bench_rep_fn fa, void *aa, bench_rep_fn fb,
    void *ba, bench_stat *a, bench_stat *b, bench_stat *ratio)
{
    bench_opts one = *o;
    one.reps = 1;
    memset(a, 0, sizeof(*a));
    memset(b, 0, sizeof(*b));
    memset(ratio, 0, sizeof(*ratio));
    for (int r = 0; r < o->reps; r++) {
        bench_stat sa = { .n = 0 }, sb = { .n = 0 };
        if (fa(&one, aa, &sa) != 0 || sa.n < 1 || fb(&one, ba, &sb) != 0 || sb.n < 1)
            return -1;
        bench_stat_add(a, sa.v[0]);
        bench_stat_add(b, sb.v[0]);
        if (sb.v[0] != 0)
            bench_stat_add(ratio, sa.v[0] / sb.v[0]);
    }
    bench_stat_finish(a);
    bench_stat_finish(b);
    bench_stat_finish(ratio);
    return 0;
}

/* The keys a reader may rely on, in the order they are listed. */
static const char *const stable_keys[] = {
    "kk_soft_vs_floor", "xk_soft_vs_floor", "kk_soft_mem_vs_floor", "xk_soft_mem_vs_floor",
    "kk_soft_vs_tls_pinned", "xk_soft_vs_tls_pinned", "kk_capacity_vs_tls",
    "kk_token_derives_per_hs", "xk_token_derives_per_hs", "kk_token_vs_derive_floor",
    "xk_token_vs_derive_floor", "kk_token_latency_50ms", "xk_token_latency_50ms",
    "tput_16384_vs_tls", "tput_65535_vs_tls", "tput_65535_loop_vs_sansio",
    "conn10k_heap_kib", "conn10k_rtt_p99_vs_single",
};
#define NKEYS (sizeof(stable_keys) / sizeof(stable_keys[0]))

static int json_on;
static int printed[NKEYS];

void bench_json_enable(void)
{
    json_on = 1;
}

int bench_json_enabled(void)
{
    return json_on;
}

static void mark_printed(const char *key)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(stable_keys[i], key) == 0)
            printed[i] = 1;
}

/* A JSON string: the figures are ASCII and our own, but escape anyway. */
static void json_str(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void json_num(double v)
{
    if (isnan(v) || isinf(v))
        fputs("null", stdout);
    else
        printf("%.6g", v);
}

/* {"key", "figure", "value", "unit", "ref", "ref_value", "ratio",
 * "ratio_min", "ratio_max", "goal", "met", "note"} */
static void json_line(const char *key, const char *figure, double value, const char *unit,
    const char *ref, double ref_value, const bench_stat *ratio, double ratio_v,
    const char *goal, int met, const char *note)
{
    printf("{\"key\": ");
    json_str(key);
    printf(", \"figure\": ");
    json_str(figure);
    printf(", \"value\": ");
    json_num(value);
    printf(", \"unit\": ");
    json_str(unit);
    printf(", \"ref\": ");
    json_str(ref);
    printf(", \"ref_value\": ");
    json_num(ref_value);
    printf(", \"ratio\": ");
    json_num(ratio_v);
    printf(", \"ratio_min\": ");
    json_num(ratio != NULL && ratio->n ? ratio->lo : NAN);
    printf(", \"ratio_max\": ");
    json_num(ratio != NULL && ratio->n ? ratio->hi : NAN);
    printf(", \"goal\": ");
    json_str(goal);
    printf(", \"met\": %s", met < 0 ? "null" : met ? "true" : "false");
    if (note != NULL) {
        printf(", \"note\": ");
        json_str(note);
    }
    printf("}\n");
    fflush(stdout);
    mark_printed(key);
}

void bench_json_row(const bench_row *r, const char *unit, double ratio_v, int met)
{
    if (r->key == NULL)
        return;
    json_line(r->key, r->figure, r->ours && r->ours->n ? r->ours->median : NAN, unit,
        r->ref_name, r->ref && r->ref->n ? r->ref->median : NAN, r->ratio, ratio_v,
        r->goal_text, met, r->ratio != NULL ? "ratio: median of per-pair ratios, "
        "both sides measured in alternating repetitions" : NULL);
}

void bench_json_missing(const char *key, const char *note)
{
    if (json_on)
        json_line(key, NULL, NAN, NULL, NULL, NAN, NULL, NAN, NULL, -1, note);
}

void bench_json_value(const char *key, const char *figure, double value, const char *unit,
    const char *note)
{
    if (json_on)
        json_line(key, figure, value, unit, NULL, NAN, NULL, NAN, NULL, -1, note);
}

void bench_json_finish(void)
{
    if (!json_on)
        return;
    for (size_t i = 0; i < NKEYS; i++)
        if (!printed[i])
            json_line(stable_keys[i], NULL, NAN, NULL, NULL, NAN, NULL, NAN, NULL, -1,
                "not measured in this run (its rows were not selected, failed, or are "
                "not implemented yet)");
}
