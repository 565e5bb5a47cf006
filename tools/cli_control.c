/*
 * The control socket (--control PATH) and `p11noise status`.
 *
 * The service side is a thread: it accepts on the Unix socket, reads the
 * one-word request ("text" or "json"), has the loop thread take the
 * snapshot (p11n_post: the connections belong to the loop), and writes
 * the answer itself. A slow or silent client therefore costs this thread
 * its time, never the loop's: the loop only formats some lines.
 */
#define _GNU_SOURCE /* accept4 */
#include "cli_control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cli.h"

/* How long a client may take to send its request or read the answer. */
#define CONTROL_IO_MS 2000

struct cli_control {
    p11n_ctx *ctx;
    int fd;
    int wake[2];                  /* written to stop the thread */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int json;                     /* the request being answered */
    int done;                     /* the loop has filled `text` */
    int stopping;
    char *text;
    size_t len;
    /* Sockets this one replaced on reload: stopped, but freed only with
     * this one, after p11n_ctx_free (a snapshot they posted may still
     * run until then). */
    struct cli_control *retired;
};

/* The rotation's date ("-" before the first) and the handshake hash in
 * hex ("-" before the handshake ends): what the status line adds to the
 * counters. */
struct extras {
    char rotated[32];
    char hash[2 * P11N_CONN_HASH_MAX + 1];
};

static void extras_of(const p11n_conn_info *i, struct extras *x)
{
    snprintf(x->rotated, sizeof(x->rotated), "-");
    if (i->last_rotation_unix_ms != 0) {
        time_t s = (time_t)(i->last_rotation_unix_ms / 1000);
        struct tm tm;
        gmtime_r(&s, &tm);
        char day[24];
        strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(x->rotated, sizeof(x->rotated), "%s.%03uZ", day,
            (unsigned)(i->last_rotation_unix_ms % 1000));
    }
    snprintf(x->hash, sizeof(x->hash), "-");
    for (size_t k = 0; k < i->handshake_hash_len && k < P11N_CONN_HASH_MAX; k++)
        snprintf(x->hash + 2 * k, 3, "%02x", i->handshake_hash[k]);
}

/* One connection as a line: key=value words, or a JSON object. */
static void put_line(FILE *f, const p11n_conn_info *i, int json)
{
    const char *dir = i->incoming ? "in" : "out";
    const char *peer = i->peer[0] ? i->peer : "-", *addr = i->addr[0] ? i->addr : "-";
    struct extras x;
    extras_of(i, &x);
    if (!json) {
        fprintf(f, "#%lu peer=%s remote=%s direction=%s state=%s since_ms=%llu "
            "msgs_in=%llu bytes_in=%llu msgs_out=%llu bytes_out=%llu rotations_in=%llu "
            "rotations_out=%llu last_rotation=%s handshake_hash=%s\n", i->id, peer, addr,
            dir, i->state, (unsigned long long)i->since_ms, (unsigned long long)i->msgs_in,
            (unsigned long long)i->bytes_in, (unsigned long long)i->msgs_out,
            (unsigned long long)i->bytes_out, (unsigned long long)i->rotations_in,
            (unsigned long long)i->rotations_out, x.rotated, x.hash);
        return;
    }
    /* Identifiers, hex keys, numeric addresses and dates: nothing to
     * escape. "-" is JSON's null. */
    const char *q_rot = x.rotated[0] == '-' ? "" : "\"";
    const char *q_hash = x.hash[0] == '-' ? "" : "\"";
    fprintf(f, "{\"id\":%lu,\"peer\":\"%s\",\"peer_id\":\"%s\",\"remote\":\"%s\","
        "\"direction\":\"%s\",\"state\":\"%s\",\"since_ms\":%llu,\"msgs_in\":%llu,"
        "\"bytes_in\":%llu,\"msgs_out\":%llu,\"bytes_out\":%llu,\"rotations_in\":%llu,"
        "\"rotations_out\":%llu,\"last_rotation\":%s%s%s,\"handshake_hash\":%s%s%s}\n",
        i->id, i->peer, i->peer_id, i->addr, dir, i->state, (unsigned long long)i->since_ms,
        (unsigned long long)i->msgs_in, (unsigned long long)i->bytes_in,
        (unsigned long long)i->msgs_out, (unsigned long long)i->bytes_out,
        (unsigned long long)i->rotations_in, (unsigned long long)i->rotations_out,
        q_rot, x.rotated[0] == '-' ? "null" : x.rotated, q_rot,
        q_hash, x.hash[0] == '-' ? "null" : x.hash, q_hash);
}

struct walk {
    FILE *f;
    int json;
};

static int one_conn(p11n_conn *c, void *arg)
{
    struct walk *w = arg;
    p11n_conn_info info = P11N_CONN_INFO_INIT;
    if (p11n_conn_info_get(c, &info) == P11N_OK)
        put_line(w->f, &info, w->json);
    return 0;
}

/* On the loop thread. */
static void snapshot(p11n_ctx *ctx, void *arg)
{
    struct cli_control *k = arg;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f != NULL) {
        struct walk w = { f, k->json };
        (void)p11n_conn_foreach(ctx, one_conn, &w);
        fclose(f);
    }
    pthread_mutex_lock(&k->mu);
    k->text = text;
    k->len = text != NULL ? len : 0;
    k->done = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* Wait up to CONTROL_IO_MS for `events` on fd (or the stop pipe). */
static int wait_fd(struct cli_control *k, int fd, short events)
{
    struct pollfd p[2] = { { fd, events, 0 }, { k->wake[0], POLLIN, 0 } };
    int n;
    while ((n = poll(p, 2, CONTROL_IO_MS)) < 0 && errno == EINTR)
        ;
    return n > 0 && p[1].revents == 0 && p[0].revents != 0 ? 0 : -1;
}

static void write_all(struct cli_control *k, int fd, const char *s, size_t len)
{
    while (len > 0 && wait_fd(k, fd, POLLOUT) == 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return;
        if (n > 0) {
            s += n;
            len -= (size_t)n;
        }
    }
}

static void serve(struct cli_control *k, int fd)
{
    char req[16] = "";
    ssize_t n = 0;
    if (wait_fd(k, fd, POLLIN) == 0)
        n = recv(fd, req, sizeof(req) - 1, 0);
    req[n > 0 ? n : 0] = '\0';
    pthread_mutex_lock(&k->mu);
    k->json = strncmp(req, "json", 4) == 0;
    k->done = 0;
    int posted = p11n_post(k->ctx, snapshot, k) == P11N_OK;
    while (posted && !k->done && !k->stopping)
        pthread_cond_wait(&k->cv, &k->mu);
    char *text = k->done ? k->text : NULL;
    size_t len = k->done ? k->len : 0;
    k->text = NULL;
    pthread_mutex_unlock(&k->mu);
    if (!posted)
        write_all(k, fd, "error: the service did not answer\n", 34);
    else if (text != NULL)
        write_all(k, fd, text, len);
    free(text);
}

static void *control_thread(void *arg)
{
    struct cli_control *k = arg;
    for (;;) {
        struct pollfd p[2] = { { k->fd, POLLIN, 0 }, { k->wake[0], POLLIN, 0 } };
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents != 0)
            break;
        if (!(p[0].revents & POLLIN))
            continue;
        int fd = accept4(k->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        serve(k, fd);
        close(fd);
    }
    return NULL;
}

/* What is at `path` may go: nothing, or a socket nobody answers on (a
 * previous run's). A file, or a running service's socket, stays. */
static int clear_stale(const struct sockaddr_un *sa, char *err, size_t cap)
{
    struct stat st;
    if (lstat(sa->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : (snprintf(err, cap, "%s", strerror(errno)), -1);
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, cap, "exists and is not a socket");
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int live = fd >= 0 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0;
    if (fd >= 0)
        close(fd);
    if (live) {
        snprintf(err, cap, "another process serves it");
        return -1;
    }
    unlink(sa->sun_path);
    return 0;
}

/* The socket, mode 0600 from its creation (umask), at `path`. */
static int control_bind(const char *path, char *err, size_t cap)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, cap, "path too long");
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (clear_stale(&sa, err, cap) != 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "socket: %s", strerror(errno));
        return -1;
    }
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 8) < 0) {
        snprintf(err, cap, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The socket at `path` with its thread, or NULL with `err` saying why. */
static struct cli_control *control_start(p11n_ctx *ctx, const char *path, char *err,
    size_t cap)
{
    struct cli_control *k = calloc(1, sizeof(*k));
    if (k == NULL || pipe2(k->wake, O_CLOEXEC) < 0) {
        snprintf(err, cap, "out of memory or descriptors");
        free(k);
        return NULL;
    }
    k->ctx = ctx;
    snprintf(k->path, sizeof(k->path), "%s", path);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    k->fd = control_bind(path, err, cap);
    /* Signals stay with the loop's thread: the thread starts with them
     * blocked. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = k->fd >= 0 && pthread_create(&k->thread, NULL, control_thread, k) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!started) {
        if (k->fd >= 0) {
            snprintf(err, cap, "cannot start its thread");
            close(k->fd);
            unlink(path);
        }
        k->fd = -1;
        cli_control_free(k);
        return NULL;
    }
    return k;
}

struct cli_control *cli_control_open(p11n_ctx *ctx, const char *cmd, const char *path)
{
    char err[128], shown[CLI_SHOWN_MAX];
    struct cli_control *k = control_start(ctx, path, err, sizeof(err));
    if (k == NULL)
        cli_error("%s: --control %s: %s", cmd, cli_shown(path, shown), err);
    return k;
}

void cli_control_reload(struct cli_control **k, p11n_ctx *ctx, const char *cmd,
    const char *path)
{
    struct cli_control *old = *k;
    int serving = old != NULL && old->fd >= 0;
    if ((!serving && path == NULL) || (serving && path != NULL && strcmp(old->path, path) == 0))
        return;
    char err[128], shown[CLI_SHOWN_MAX], was[CLI_SHOWN_MAX];
    if (path == NULL) {
        /* Stopped, kept: freed at the end like a running one. */
        cli_control_stop(old);
        cli_log_event(P11N_LOG_INFO, "reload", "%s: control socket closed (no --control in "
            "the configuration file)", cmd);
        return;
    }
    struct cli_control *now = control_start(ctx, path, err, sizeof(err));
    if (now == NULL) {
        cli_log_event(P11N_LOG_ERROR, "reload", "%s: --control %s from the configuration "
            "file: %s; the control socket stays %s%s", cmd, cli_shown(path, shown), err,
            serving ? "at " : "closed", serving ? cli_shown(old->path, was) : "");
        return;
    }
    cli_control_stop(old);
    now->retired = old;
    *k = now;
    cli_log_event(P11N_LOG_INFO, "reload", "%s: control socket now at %s", cmd,
        cli_shown(path, shown));
}

void cli_control_stop(struct cli_control *k)
{
    if (k == NULL || k->fd < 0)
        return;
    pthread_mutex_lock(&k->mu);
    k->stopping = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    (void)!write(k->wake[1], "x", 1);
    pthread_join(k->thread, NULL);
    close(k->fd);
    unlink(k->path);
    k->fd = -1;
}

void cli_control_free(struct cli_control *k)
{
    if (k == NULL)
        return;
    cli_control_stop(k);
    close(k->wake[0]);
    close(k->wake[1]);
    pthread_mutex_destroy(&k->mu);
    pthread_cond_destroy(&k->cv);
    free(k->text);
    cli_control_free(k->retired);
    free(k);
}
