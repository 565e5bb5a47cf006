/*
 * Plain sockets for the tunnel: endpoint syntax, the client's listening
 * socket (TCP or Unix), the server's target addresses and non-blocking
 * connects to them.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_net.h"
#include "tunnel.h"

#define LISTEN_BACKLOG 128

int tun_parse_addr(const char *s, struct tun_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (strncmp(s, "unix:", 5) == 0) {
        size_t n = strlen(s + 5);
        if (n == 0 || n >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return -1;
        out->is_unix = 1;
        memcpy(out->host, s + 5, n + 1);
        return 0;
    }
    return cli_split_host_port(s, out->host, sizeof(out->host), &out->port);
}

static void unix_sockaddr(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, strlen(path) + 1); /* length checked when parsed */
}

/* A socket file left at PATH by an earlier run may be replaced; anything
 * else (a regular file, a live socket) is refused, so a typo in --listen
 * cannot delete a file or steal a running service's socket. */
static int clear_stale_socket(const char *path, char *err, size_t cap)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : (snprintf(err, cap, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, cap, "%s exists and is not a socket: not replacing it", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sun;
    unix_sockaddr(path, &sun);
    int live = connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    close(fd);
    if (live) {
        snprintf(err, cap, "%s is in use by a running service", path);
        return -1;
    }
    if (unlink(path) != 0) {
        snprintf(err, cap, "removing the stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int listen_unix(const char *path, unsigned mode, char *err, size_t cap)
{
    if (clear_stale_socket(path, err, cap) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "socket: %s", strerror(errno));
        return -1;
    }
    struct sockaddr_un sun;
    unix_sockaddr(path, &sun);
    /* The file gets its mode as it is created: no moment in which others
     * could connect. */
    mode_t old = umask((mode_t)(~mode & 0777));
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (rc != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, cap, "%s %s: %s", rc != 0 ? "bind" : "listen", path,
            strerror(rc != 0 ? e : errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_tcp(const struct tun_addr *a, char *err, size_t cap)
{
    struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
        .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, cap, "%s: %s (a numeric address is needed)", a->host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0
        || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        snprintf(err, cap, "%s: %s", fd < 0 ? "socket" : "bind/listen", strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int tun_listen_plain(const struct tun_addr *a, unsigned mode, char *err, size_t cap)
{
    return a->is_unix ? listen_unix(a->host, mode, err, cap) : listen_tcp(a, err, cap);
}

/* The target's addresses, resolved once at start: a name that resolves to
 * several addresses ("localhost") is tried in order for each connection. */
int tun_resolve(const struct tun_addr *a, struct tunnel *t, char *err, size_t cap)
{
    struct addrinfo *list = NULL;
    size_t n = 1;
    if (!a->is_unix) {
        struct addrinfo hints = { .ai_flags = AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
        char port[8];
        snprintf(port, sizeof(port), "%u", a->port);
        int rc = getaddrinfo(a->host, port, &hints, &list);
        if (rc != 0) {
            snprintf(err, cap, "%s: %s", a->host, gai_strerror(rc));
            return -1;
        }
        n = 0;
        for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next)
            n++;
    }
    t->targets = calloc(n, sizeof(*t->targets));
    t->target_lens = calloc(n, sizeof(*t->target_lens));
    if (t->targets == NULL || t->target_lens == NULL) {
        freeaddrinfo(list);
        snprintf(err, cap, "out of memory");
        return -1;
    }
    if (a->is_unix) {
        unix_sockaddr(a->host, (struct sockaddr_un *)&t->targets[0]);
        t->target_lens[0] = sizeof(struct sockaddr_un);
    }
    size_t i = 0;
    for (struct addrinfo *ai = list; ai != NULL; ai = ai->ai_next, i++) {
        memcpy(&t->targets[i], ai->ai_addr, ai->ai_addrlen);
        t->target_lens[i] = ai->ai_addrlen;
    }
    t->ntargets = n;
    freeaddrinfo(list);
    return 0;
}

/* Start a non-blocking connect. Returns 0 when connected at once, 1 when
 * in progress (poll for POLLOUT), or -1 with errno set. */
int tun_connect_plain(const struct sockaddr_storage *sa, socklen_t len, int *fd)
{
    *fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*fd < 0)
        return -1;
    if (sa->ss_family != AF_UNIX) {
        /* Bytes go on as they arrive: Nagle would hold small replies. */
        int one = 1;
        setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (connect(*fd, (const struct sockaddr *)sa, len) == 0)
        return 0;
    /* On a Unix socket EAGAIN means the listener's backlog is full: the
     * connect failed (it does not complete later), so the next address
     * is tried. On TCP only EINPROGRESS means in progress. */
    if (errno == EINPROGRESS)
        return 1;
    int e = errno;
    close(*fd);
    *fd = -1;
    errno = e;
    return -1;
}

/* Close so that the plain peer sees a reset, not a clean end: a stream
 * cut short must not look complete. */
void tun_close_reset(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

void tun_describe(const struct sockaddr_storage *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_UNIX) {
        snprintf(out, cap, "unix:%s", ((const struct sockaddr_un *)sa)->sun_path);
    } else if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%u", host, ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
}
