/*
 * How much a hand-off between two processes costs on this machine, as a
 * function of how long the waiting side was idle: a one-byte round trip
 * over a socketpair, the peer working W microseconds (busy, no sleep)
 * before it answers; prints the time beyond W (median and 90th
 * percentile of 2,000). On a machine whose idle CPUs halt, the cost
 * grows with W; pinned to one CPU (taskset -c 0) it does not.
 * Not built by default (doc/benchmarks.md cites its figures):
 *   cc -O2 -o wakeup-rtt tools/bench/wakeup-rtt.c
 *   for w in 0 50 100 200 400 800; do ./wakeup-rtt $w; done
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { ROUNDS = 2000 };

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Busy work, so the answering CPU does not halt during W. */
static void spin(double us)
{
    double t0 = now_us();
    while (now_us() - t0 < us) {
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static double d[ROUNDS];
    int w = argc > 1 ? atoi(argv[1]) : 0, sv[2];
    char c = 'x';

    if (w < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        close(sv[0]);   /* so the parent's close ends this loop */
        while (read(sv[1], &c, 1) == 1) {
            spin(w);
            if (write(sv[1], &c, 1) != 1)
                break;
        }
        _exit(0);
    }
    close(sv[1]);
    for (int i = 0; i < ROUNDS; i++) {
        double t0 = now_us();
        if (write(sv[0], &c, 1) != 1 || read(sv[0], &c, 1) != 1)
            return 1;
        d[i] = now_us() - t0 - w;
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
    qsort(d, ROUNDS, sizeof(d[0]), cmp);
    printf("work %4d us: beyond it p50 %.1f us, p90 %.1f us\n", w, d[ROUNDS / 2],
        d[ROUNDS * 9 / 10]);
    return 0;
}
