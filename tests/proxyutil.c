/* Running microsocks for tests: see proxyutil.h. */
#include "proxyutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A port may be taken by someone else between our probe and the proxy's
 * bind; a fresh port is tried that many times. */
#define START_ATTEMPTS 5
/* Upper bound on waiting for the proxy to listen (10 ms steps): a guard
 * against hanging, not a timing assertion. */
#define READY_POLLS 1000

static const char *binary(void)
{
    const char *b = getenv("MICROSOCKS");
    return b != NULL && *b != '\0' ? b : "microsocks";
}

int t_proxy_available(void)
{
    const char *b = binary();
    if (strchr(b, '/') != NULL)
        return access(b, X_OK) == 0;
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/bin:/bin";
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        char full[4096];
        if (snprintf(full, sizeof(full), "%.*s/%s", (int)n, path, b) < (int)sizeof(full)
            && access(full, X_OK) == 0)
            return 1;
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

static void loopback(struct sockaddr_in *sa, uint16_t port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa->sin_port = htons(port);
}

int t_listen_loopback(uint16_t *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    loopback(&sa, 0);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 16) != 0
        || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

uint16_t t_closed_port(void)
{
    uint16_t port = 0;
    int fd = t_listen_loopback(&port);
    if (fd < 0)
        return 0;
    close(fd); /* the kernel now refuses connections to it */
    return port;
}

int t_connect_loopback(uint16_t port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    loopback(&sa, port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static pid_t spawn(uint16_t port, const char *user, const char *pass)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    const char *argv[] = {
        binary(), "-i", "127.0.0.1", "-p", portstr,
        user != NULL ? "-u" : NULL, user, "-P", pass, NULL,
    };

    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Child: die with the test, keep the test's output clean. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        if (getenv("P11N_PROXY_VERBOSE") == NULL)
            dup2(devnull, STDERR_FILENO);
    }
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

/* Wait until the proxy accepts a connection: 0; -1 if it exited (say,
 * port taken); -2 if it cannot run at all. */
static int wait_ready(t_proxy *px)
{
    for (int i = 0; i < READY_POLLS; i++) {
        int status;
        if (waitpid(px->pid, &status, WNOHANG) == px->pid) {
            px->pid = 0;
            if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
                fprintf(stderr, "proxyutil: cannot run %s\n", binary());
                return -2;
            }
            return -1;
        }
        int fd = t_connect_loopback(px->port);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "proxyutil: %s never started listening\n", binary());
    t_proxy_kill(px);
    return -1;
}

int t_proxy_start(t_proxy *px, const char *user, const char *pass)
{
    px->pid = 0;
    px->port = 0;
    if ((user == NULL) != (pass == NULL))
        return -1;
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        px->port = t_closed_port();
        if (px->port == 0)
            continue;
        px->pid = spawn(px->port, user, pass);
        if (px->pid < 0) {
            fprintf(stderr, "proxyutil: fork: %s\n", strerror(errno));
            px->pid = 0;
            return -1;
        }
        int rc = wait_ready(px);
        if (rc == 0)
            return 0;
        if (rc == -2)
            return -1;
    }
    fprintf(stderr, "proxyutil: could not start %s\n", binary());
    return -1;
}

static void stop_with(t_proxy *px, int sig)
{
    if (px->pid <= 0)
        return;
    kill(px->pid, sig);
    while (waitpid(px->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    px->pid = 0;
}

void t_proxy_stop(t_proxy *px)
{
    stop_with(px, SIGTERM);
}

void t_proxy_kill(t_proxy *px)
{
    stop_with(px, SIGKILL);
}
