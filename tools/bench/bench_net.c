/* Loopback sockets and child processes for the two-process figures. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

static void loopback(struct sockaddr_in *sa, uint16_t port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

int bench_listen(uint16_t *port, int backlog)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    loopback(&sa, 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, backlog) != 0
        || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* TCP_NODELAY, and a deadline on every blocking read and write: if the
 * other process dies, the bench reports a failed row instead of hanging. */
static void nodelay(int fd)
{
    int one = 1;
    struct timeval tv = { .tv_sec = 30 };
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int bench_connect(uint16_t port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    loopback(&sa, port);
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    nodelay(fd);
    return fd;
}

int bench_accept(int lfd)
{
    int fd;
    do
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd >= 0)
        nodelay(fd);
    return fd;
}

void bench_close_abort(int fd)
{
    struct linger l = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

/* Move all `len` bytes with read() or write(), through EINTR. */
static int io_all(ssize_t (*io)(int, void *, size_t), int fd, uint8_t *b, size_t len)
{
    while (len > 0) {
        ssize_t n = io(fd, b, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

/* write() with read()'s signature: the buffer is only read. */
static ssize_t write_mut(int fd, void *p, size_t len)
{
    return write(fd, p, len);
}

int bench_write_all(int fd, const void *p, size_t len)
{
    return io_all(write_mut, fd, (uint8_t *)(uintptr_t)p, len);
}

int bench_read_all(int fd, void *p, size_t len)
{
    return io_all(read, fd, p, len);
}

pid_t bench_fork(int (*fn)(void *), void *arg)
{
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        /* The parent owns the terminal's output; a child only measures. */
        _exit(fn(arg) == 0 ? 0 : 1);
    }
    return pid;
}

void bench_child_stop(pid_t pid)
{
    int st;
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

struct served {
    int (*fn)(int lfd, void *arg);
    int lfd;
    void *arg;
};

static int served_run(void *p)
{
    struct served *s = p;
    return s->fn(s->lfd, s->arg);
}

int bench_server_start(bench_server *s, int backlog, int (*serve)(int lfd, void *arg),
    void *arg)
{
    s->pid = -1;
    s->lfd = bench_listen(&s->port, backlog);
    if (s->lfd < 0)
        return -1;
    /* The child gets its own copy of `sv`: it may live on this stack. */
    struct served sv = { serve, s->lfd, arg };
    s->pid = bench_fork(served_run, &sv);
    if (s->pid > 0)
        return 0;
    bench_server_stop(s);
    return -1;
}

void bench_server_stop(bench_server *s)
{
    if (s->lfd >= 0)
        close(s->lfd);
    bench_child_stop(s->pid);
    s->lfd = -1;
    s->pid = -1;
}

long bench_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur < want) {
        rl.rlim_cur = (rlim_t)want;
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
            rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}
