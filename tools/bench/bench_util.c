/* Statistics, the result table and the plot data of `p11noise bench`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

const size_t bench_sizes[BENCH_NSIZES] = { 64, 1024, 16384, 65535 };

static double clock_seconds(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double bench_now(void)
{
    return clock_seconds(CLOCK_MONOTONIC);
}

double bench_thread_cpu(void)
{
    return clock_seconds(CLOCK_THREAD_CPUTIME_ID);
}

void bench_stat_add(bench_stat *s, double v)
{
    if (s->n < BENCH_MAX_REPS)
        s->v[s->n++] = v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof(*v), cmp_double);
    /* nearest rank: the smallest sample with at least p% at or below it */
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

void bench_stat_finish(bench_stat *s)
{
    double tmp[BENCH_MAX_REPS];

    if (s->n == 0) {
        s->median = s->lo = s->hi = NAN;
        return;
    }
    memcpy(tmp, s->v, (size_t)s->n * sizeof(double));
    qsort(tmp, (size_t)s->n, sizeof(double), cmp_double);
    s->lo = tmp[0];
    s->hi = tmp[s->n - 1];
    s->median = (s->n % 2) ? tmp[s->n / 2] : (tmp[s->n / 2 - 1] + tmp[s->n / 2]) / 2;
}

size_t bench_count_for(const bench_opts *o, size_t size, double est_mbps)
{
    double bytes = est_mbps * 1e6 * o->rep_seconds;
    size_t n = (size_t)(bytes / (double)size);
    return n < 16 ? 16 : n;
}

int bench_rate_reps(const bench_opts *o, int (*one)(void *arg), void *arg, bench_stat *out)
{
    if (one(arg) != 0)
        return -1;
    for (int r = 0; r < o->reps; r++) {
        double t0 = bench_now(), t;
        long n = 0;
        do {
            if (one(arg) != 0)
                return -1;
            n++;
            t = bench_now() - t0;
        } while (t < o->rep_seconds);
        bench_stat_add(out, (double)n / t);
    }
    bench_stat_finish(out);
    return 0;
}

int bench_mbps_reps(const bench_opts *o, size_t size, double est_mbps,
    int (*rep)(void *arg, size_t count, double *secs), void *arg, bench_stat *out)
{
    size_t count = bench_count_for(o, size, est_mbps);
    double secs;
    if (rep(arg, count, &secs) != 0)
        return -1;
    count = bench_count_for(o, size, (double)size * (double)count / secs / 1e6);
    for (int r = 0; r < o->reps; r++) {
        if (rep(arg, count, &secs) != 0)
            return -1;
        bench_stat_add(out, (double)size * (double)count / secs / 1e6);
    }
    bench_stat_finish(out);
    return 0;
}

/* ---- table ---- */

static int judged_rows, met_rows;

static const char *unit_name(enum bench_unit u)
{
    switch (u) {
    case BENCH_MBPS: return "MB/s";
    case BENCH_PER_SEC: return "/s";
    case BENCH_MS: return "ms";
    case BENCH_US: return "µs";
    case BENCH_KIB: return "KiB";
    case BENCH_COUNT: return "";
    }
    return "";
}

/* Three significant digits are all the noise of this machine allows. */
static void fmt_num(char *out, size_t cap, double v)
{
    double a = fabs(v);
    if (isnan(v))
        snprintf(out, cap, "—");
    else if (a >= 100 || a == 0)
        snprintf(out, cap, "%.0f", v);
    else if (a >= 10)
        snprintf(out, cap, "%.1f", v);
    else if (a >= 1)
        snprintf(out, cap, "%.2f", v);
    else
        snprintf(out, cap, "%.3f", v);
}

static void fmt_stat(char *out, size_t cap, const bench_stat *s, enum bench_unit u)
{
    char m[32], lo[32], hi[32];
    if (s == NULL || s->n == 0) {
        snprintf(out, cap, "—");
        return;
    }
    fmt_num(m, sizeof(m), s->median);
    fmt_num(lo, sizeof(lo), s->lo);
    fmt_num(hi, sizeof(hi), s->hi);
    if (s->n == 1)
        snprintf(out, cap, "%s %s", m, unit_name(u));
    else
        snprintf(out, cap, "%s %s (%s–%s)", m, unit_name(u), lo, hi);
}

void bench_table_begin(void)
{
    if (bench_json_enabled())
        return;
    printf("| figure | p11noise | reference | ratio | goal | met? |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    fflush(stdout);
}

void bench_table_row(const bench_row *r)
{
    char ours[128], ref[128], ratio[32] = "—";
    const char *met = "—";
    double rv = NAN;

    fmt_stat(ours, sizeof(ours), r->ours, r->unit);
    fmt_stat(ref, sizeof(ref), r->ref, r->unit);
    if (r->ratio != NULL && r->ratio->n) {
        /* measured side by side: the median of the per-pair ratios */
        rv = r->ratio->median;
        snprintf(ratio, sizeof(ratio), "%.2f× (%.2f–%.2f, paired)", rv, r->ratio->lo,
            r->ratio->hi);
    } else if (r->ours && r->ours->n && r->ref && r->ref->n && r->ref->median != 0) {
        rv = r->ours->median / r->ref->median;
        snprintf(ratio, sizeof(ratio), "%.2f×", rv);
    }
    if (r->goal != BENCH_GOAL_NONE && r->ours && r->ours->n) {
        int ok = -1;
        if (r->goal == BENCH_GOAL_ABS_MAX)
            ok = r->ours->median <= r->goal_x;
        else if (!isnan(rv))
            ok = r->goal == BENCH_GOAL_RATIO_MIN ? rv >= r->goal_x : rv <= r->goal_x;
        if (ok >= 0) {
            judged_rows++;
            met_rows += ok;
            met = ok ? "yes" : "**no**";
        }
    }
    if (bench_json_enabled()) {
        bench_json_row(r, unit_name(r->unit), rv, met[0] == 'y' ? 1 : met[0] == '*' ? 0 : -1);
        return;
    }
    printf("| %s | %s | %s%s%s | %s | %s | %s |\n", r->figure, ours,
        r->ref_name ? r->ref_name : "", r->ref_name && r->ref ? ": " : "",
        r->ref ? ref : (r->ref_name ? "" : "—"), ratio,
        r->goal_text ? r->goal_text : "—", met);
    fflush(stdout);
}

void bench_table_missing(const char *figure, const char *why)
{
    if (bench_json_enabled())
        return;
    printf("| %s | not measured: %s | — | — | — | — |\n", figure, why);
    fflush(stdout);
}

void bench_table_summary(int *judged, int *met)
{
    *judged = judged_rows;
    *met = met_rows;
}

/* ---- plot data ---- */

static FILE *plot_file;

int bench_plot_open(const char *path)
{
    plot_file = fopen(path, "w");
    if (plot_file == NULL)
        return -1;
    fprintf(plot_file, "# system size_bytes MB_per_s (median)\n");
    return 0;
}

void bench_plot_point(const char *system, size_t size, double mbps)
{
    if (plot_file != NULL && !isnan(mbps))
        fprintf(plot_file, "\"%s\" %zu %.1f\n", system, size, mbps);
}

void bench_plot_close(void)
{
    if (plot_file != NULL)
        fclose(plot_file);
    plot_file = NULL;
}
