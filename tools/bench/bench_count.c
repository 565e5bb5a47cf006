/*
 * Token derivations per handshake, counted rather than computed: the
 * handshakes run in a child process whose token module is tests/faultmod
 * in front of the real one; the fault module writes its call counters at
 * C_Finalize (P11N_FAULT_COUNTS).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "bench.h"

struct count_job {
    const bench_token *t;
    const char *faultmod, *pattern, *srv, *cli, *path;
    int handshakes;
    int timed;          /* latency run: the handshakes after the first timed */
    const char *fault;  /* P11N_FAULT in the child, or NULL */
};

static int load_via(const struct count_job *j, const char *label, p11n_key **key,
    uint8_t pub[P11N_PUBKEY_LEN])
{
    char uri[768];
    size_t n;
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s?pin-value=%s&module-path=%s",
        j->t->label, label, j->t->pin, j->faultmod);
    return p11n_key_load(uri, key) == P11N_OK &&
        p11n_key_public(*key, pub, P11N_PUBKEY_LEN, &n) == P11N_OK ? 0 : -1;
}

/* In the child: load both keys, run the handshakes, free the keys (the
 * module finalizes and writes its counters). */
static int count_child(void *arg)
{
    const struct count_job *j = arg;
    bench_token_use(j->t);
    setenv("P11N_FAULT_MODULE", j->t->module, 1);
    if (j->fault != NULL) {
        setenv("P11N_FAULT", j->fault, 1);
        unsetenv("P11N_FAULT_COUNTS");
    } else {
        setenv("P11N_FAULT_COUNTS", j->path, 1);
        unsetenv("P11N_FAULT");
    }
    p11n_key *sk = NULL, *ck = NULL;
    uint8_t spub[P11N_PUBKEY_LEN], cpub[P11N_PUBKEY_LEN];
    int rc = load_via(j, j->srv, &sk, spub) == 0 && load_via(j, j->cli, &ck, cpub) == 0 ? 0 : -1;
    p11n_handshake_config ci = { .size = sizeof(p11n_handshake_config),
        .pattern = j->pattern, .local = ck,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])spub, .nremote = 1 };
    p11n_handshake_config cr = { .size = sizeof(p11n_handshake_config),
        .pattern = j->pattern, .local = sk,
        .remote = (const uint8_t (*)[P11N_PUBKEY_LEN])cpub, .nremote = 1 };
    FILE *times = j->timed ? fopen(j->path, "w") : NULL;
    if (j->timed && times == NULL)
        rc = -1;
    for (int i = 0; rc == 0 && i < j->handshakes; i++) {
        double t0 = bench_now();
        rc = bench_hs_in_memory(&ci, &cr);
        /* the first handshake between the keys teaches the ss parity */
        if (times != NULL && i > 0)
            fprintf(times, "%f\n", (bench_now() - t0) * 1e3);
    }
    if (times != NULL && fclose(times) != 0)
        rc = -1;
    p11n_key_free(sk);
    p11n_key_free(ck);
    return rc;
}

/* One child run to its end; 0 if it succeeded. */
static int run_child(struct count_job *j, int handshakes)
{
    j->handshakes = handshakes;
    remove(j->path);
    pid_t pid = bench_fork(count_child, j);
    int st = 0;
    if (pid < 0)
        return -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* C_DeriveKey calls of one child run, or -1. */
static long derives_of(struct count_job *j, int handshakes)
{
    if (run_child(j, handshakes) != 0)
        return -1;
    FILE *f = fopen(j->path, "r");
    char name[64];
    unsigned long calls;
    long derives = -1;
    while (f != NULL && fscanf(f, "%63s %lu", name, &calls) == 2)
        if (strcmp(name, "C_DeriveKey") == 0)
            derives = (long)calls;
    if (f != NULL)
        fclose(f);
    return derives;
}

#define LATER_HANDSHAKES 10

int bench_count_derives(const bench_token *t, const char *faultmod, const char *pattern,
    const char *srv_label, const char *cli_label, double *first, double *steady)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/derive-counts", t->dir);
    struct count_job j = { .t = t, .faultmod = faultmod, .pattern = pattern,
        .srv = srv_label, .cli = cli_label, .path = path };
    if (access(faultmod, R_OK) != 0)
        return -1;
    /* Loading alone, then one handshake, then 1 + LATER_HANDSHAKES. */
    long load = derives_of(&j, 0), one = derives_of(&j, 1);
    long many = derives_of(&j, 1 + LATER_HANDSHAKES);
    if (load < 0 || one < 0 || many < 0)
        return -1;
    *first = (double)(one - load);
    *steady = (double)(many - one) / LATER_HANDSHAKES;
    return 0;
}

int bench_token_latency(const bench_opts *o, const bench_token *t, const char *faultmod,
    const char *pattern, const char *srv_label, const char *cli_label, int delay_ms,
    bench_stat *out)
{
    char path[160], fault[64];
    snprintf(path, sizeof(path), "%s/latencies", t->dir);
    snprintf(fault, sizeof(fault), "C_DeriveKey:delay=%d", delay_ms);
    struct count_job j = { .t = t, .faultmod = faultmod, .pattern = pattern,
        .srv = srv_label, .cli = cli_label, .path = path, .timed = 1, .fault = fault };
    if (access(faultmod, R_OK) != 0 || run_child(&j, 1 + o->reps) != 0)
        return -1;
    FILE *f = fopen(path, "r");
    double ms;
    while (f != NULL && out->n < BENCH_MAX_REPS && fscanf(f, "%lf", &ms) == 1)
        bench_stat_add(out, ms);
    if (f != NULL)
        fclose(f);
    bench_stat_finish(out);
    return out->n > 0 ? 0 : -1;
}
