/*
 * p11noise bench [--quick] [--json] [--rows LIST] [--sizes LIST] [--reps N] [--seconds S]
 *                [--plot-data FILE] [--softhsm-module PATH] [--fault-module PATH]
 *
 * Prints the machine and a Markdown table: every p11noise figure next to
 * references measured in the same run, with the ratio and the goal. With
 * --json, one JSON object per line for each figure with a stable key
 * (tools/bench_json.c), and a null value with a note for those not
 * measured.
 */
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "bench.h"

#ifndef P11N_BENCH_FAULTMOD
#define P11N_BENCH_FAULTMOD "tests/.libs/faultmod.so"
#endif
#ifndef P11N_BENCH_SOFTHSM
#define P11N_BENCH_SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"
#endif

enum {
    ROW_AEAD = 1 << 0,
    ROW_TPUT = 1 << 1,
    ROW_HS = 1 << 2,
    ROW_TOKEN = 1 << 3,
    ROW_CONNS = 1 << 4,
    ROW_SLOW = 1 << 5,
    ROW_CAP = 1 << 6,
    ROW_ALL = (1 << 7) - 1
};

static const struct {
    const char *name;
    unsigned bit;
    const char *what;
} groups[] = {
    { "aead", ROW_AEAD, "transport sealing in memory vs raw EVP ChaCha20-Poly1305" },
    { "throughput", ROW_TPUT, "one connection over loopback vs TLS 1.3 and the AEAD limit" },
    { "handshakes", ROW_HS, "KK/XK with software keys vs TLS 1.3 and the libsecp256k1 floor" },
    { "capacity", ROW_CAP, "one listener process on one CPU, 64 KK handshakes in flight" },
    { "token", ROW_TOKEN, "KK/XK with SoftHSM2 keys vs the token's derivation rate" },
    { "conns", ROW_CONNS, "1,000 and 10,000 idle connections: memory, busy-connection RTT" },
    { "slowtoken", ROW_SLOW, "RTT p99 while handshakes wait on a 100 ms token" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: p11noise bench [--quick] [--json] [--rows LIST] [--sizes LIST] [--reps N] [--seconds S]\n"
               "                      [--plot-data FILE] [--softhsm-module PATH] [--fault-module PATH]\n"
               "LIST is a comma-separated choice of (default: all):\n");
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        fprintf(f, "  %-11s %s\n", groups[i].name, groups[i].what);
}

static int parse_rows(const char *list, unsigned *rows)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", list);
    *rows = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t i;
        if (strcmp(tok, "all") == 0) {
            *rows = ROW_ALL;
            continue;
        }
        for (i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
            if (strcmp(tok, groups[i].name) == 0)
                break;
        if (i == sizeof(groups) / sizeof(groups[0])) {
            cli_error("bench: unknown row group '%s'", tok);
            return -1;
        }
        *rows |= groups[i].bit;
    }
    return *rows ? 0 : -1;
}

/* A comma-separated subset of the throughput message sizes. */
static int parse_sizes(const char *list, unsigned *mask)
{
    char buf[128], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", list);
    *mask = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int i;
        for (i = 0; i < BENCH_NSIZES; i++)
            if ((size_t)strtoul(tok, NULL, 10) == bench_sizes[i])
                break;
        if (i == BENCH_NSIZES) {
            cli_error("bench: --sizes takes 64, 1024, 16384, 65535, not '%s'", tok);
            return -1;
        }
        *mask |= 1u << i;
    }
    return *mask ? 0 : -1;
}

static void print_machine(const bench_opts *o)
{
    struct utsname u;
    char model[128] = "unknown", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    time_t now = time(NULL);
    char date[64];

    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            snprintf(model, sizeof(model), "%s", colon + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    uname(&u);
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
    printf("- date: %s\n", date);
    printf("- machine: %s, %ld online CPUs, Linux %s %s\n", model, sysconf(_SC_NPROCESSORS_ONLN),
        u.release, u.machine);
    printf("- OpenSSL: %s\n", OpenSSL_version(OPENSSL_VERSION));
    printf("- repetitions per figure: %d of %.2f s each%s; cells are median (min–max)\n\n",
        o->reps, o->rep_seconds, o->quick ? " (--quick: smoke run, figures are rough)" : "");
    fflush(stdout);
}

enum { B_QUICK = 1, B_VERBOSE, B_ROWS, B_SIZES, B_REPS, B_SECONDS, B_PLOT, B_FAULTMOD, B_SOFTHSM,
    B_JSON };
static const struct cli_opt bench_opts_table[] = {
    { "--quick", B_QUICK, 0 }, { "-v", B_VERBOSE, 0 }, { "--rows", B_ROWS, 1 },
    { "--sizes", B_SIZES, 1 }, { "--reps", B_REPS, 1 }, { "--seconds", B_SECONDS, 1 },
    { "--plot-data", B_PLOT, 1 }, { "--fault-module", B_FAULTMOD, 1 },
    { "--softhsm-module", B_SOFTHSM, 1 }, { "--json", B_JSON, 0 }, { NULL, 0, 0 },
};

int cmd_bench(int argc, char **argv)
{
    bench_opts o = { .reps = 5, .rep_seconds = 0.5, .sizes = (1u << BENCH_NSIZES) - 1 };
    unsigned rows = ROW_ALL;
    const char *plot = NULL, *module = getenv("SOFTHSM_MODULE"), *faultmod = P11N_BENCH_FAULTMOD;
    int reps = 0, judged, met;
    double secs = 0;

    if (module == NULL || module[0] == '\0')
        module = P11N_BENCH_SOFTHSM;
    struct cli_parser p;
    cli_parser_init(&p, "bench", argc, argv, bench_opts_table);
    const char *v;
    int id;
    while ((id = cli_next(&p, &v)) != CLI_END) {
        if (id == CLI_HELP) {
            usage(stdout);
            return 0;
        }
        if (id == CLI_BAD || id == CLI_ARG) {
            if (id == CLI_ARG)
                cli_error("bench: unexpected argument %d", p.next - 1);
            usage(stderr);
            return 2;
        }
        if (id == B_QUICK)
            o.quick = 1;
        else if (id == B_VERBOSE)
            o.verbose = 1;
        else if (id == B_ROWS && parse_rows(v, &rows) != 0)
            return 2;
        else if (id == B_SIZES && parse_sizes(v, &o.sizes) != 0)
            return 2;
        else if (id == B_REPS)
            reps = atoi(v);
        else if (id == B_SECONDS)
            secs = atof(v);
        else if (id == B_PLOT)
            plot = v;
        else if (id == B_FAULTMOD)
            faultmod = v;
        else if (id == B_SOFTHSM)
            module = v;
        else if (id == B_JSON)
            bench_json_enable();
    }
    if (o.quick) {
        o.reps = 3;
        o.rep_seconds = 0.02;
    }
    if (reps > 0)
        o.reps = reps < BENCH_MAX_REPS ? reps : BENCH_MAX_REPS;
    if (secs > 0)
        o.rep_seconds = secs;
    if (plot != NULL && bench_plot_open(plot) != 0) {
        cli_error("bench: cannot write %s", plot);
        return 1;
    }

    if (!bench_json_enabled())
        print_machine(&o);
    bench_table_begin();
    if (rows & ROW_AEAD)
        bench_group_aead(&o);
    if (rows & ROW_TPUT)
        bench_group_throughput(&o);
    if (rows & ROW_HS)
        bench_group_handshakes(&o);
    if (rows & ROW_CAP)
        bench_group_capacity(&o);
    if (rows & ROW_TOKEN)
        bench_group_token(&o, module, faultmod);
    if (rows & ROW_CONNS)
        bench_group_conns(&o);
    if (rows & ROW_SLOW)
        bench_group_slowtoken(&o, module, faultmod);
    bench_plot_close();
    bench_table_summary(&judged, &met);
    if (bench_json_enabled())
        bench_json_finish();
    else
        printf("\n%d of %d goals met.\n", met, judged);
    return 0;
}
