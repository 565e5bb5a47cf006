/*
 * Throughput of one connection through `p11noise tunnel`, as deployed: a
 * plain sender -> tunnel client -> Noise channel -> tunnel server -> a
 * plain sink, four processes over loopback, software keys. The tunnel
 * processes are this program itself (/proc/self/exe), so the figure is the
 * command's, not a re-creation of it. Compared with the library's own
 * event-loop throughput, this shows what the two extra plain hops and the
 * pump cost.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

#define TUN_SIZE 65535            /* write size: one full message per read */
#define START_TRIES 100           /* 10 ms apart: how long a tunnel may take to start */

struct tun_env {
    char dir[64];
    char skey[96], ckey[96], speers[96], cpeers[96];
    pid_t server, client;
};

/* A random private key in a file (mode 600, as file: keys must be), and
 * its public key. Returns 0 or -1. */
static int write_key(const char *path, uint8_t pub[P11N_PUBKEY_LEN])
{
    uint8_t priv[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    int ok = fd >= 0 && read(fd, priv, sizeof(priv)) == (ssize_t)sizeof(priv);
    if (fd >= 0)
        close(fd);
    FILE *f = ok ? fopen(path, "w") : NULL;
    if (f == NULL)
        return -1;
    fchmod(fileno(f), 0600);
    for (size_t i = 0; i < sizeof(priv); i++)
        fprintf(f, "%02x", priv[i]);
    fputc('\n', f);
    fclose(f);
    memset(priv, 0, sizeof(priv));
    char uri[128];
    snprintf(uri, sizeof(uri), "file:%s", path);
    p11n_key *k = NULL;
    size_t len = 0;
    int rc = p11n_key_load(uri, &k) == P11N_OK
        && p11n_key_public(k, pub, P11N_PUBKEY_LEN, &len) == P11N_OK ? 0 : -1;
    p11n_key_free(k);
    return rc;
}

static int write_peer(const char *path, const char *id, const uint8_t pub[P11N_PUBKEY_LEN])
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%s ", id);
    for (size_t i = 0; i < P11N_PUBKEY_LEN; i++)
        fprintf(f, "%02x", pub[i]);
    fputc('\n', f);
    return fclose(f) == 0 ? 0 : -1;
}

static int env_keys(struct tun_env *e)
{
    uint8_t spub[P11N_PUBKEY_LEN], cpub[P11N_PUBKEY_LEN];
    snprintf(e->dir, sizeof(e->dir), "/tmp/p11n-bench-tunnel-XXXXXX");
    if (mkdtemp(e->dir) == NULL)
        return -1;
    snprintf(e->skey, sizeof(e->skey), "%s/s.key", e->dir);
    snprintf(e->ckey, sizeof(e->ckey), "%s/c.key", e->dir);
    snprintf(e->speers, sizeof(e->speers), "%s/s.peers", e->dir);
    snprintf(e->cpeers, sizeof(e->cpeers), "%s/c.peers", e->dir);
    if (write_key(e->skey, spub) != 0 || write_key(e->ckey, cpub) != 0)
        return -1;
    return write_peer(e->speers, "client", cpub) == 0 && write_peer(e->cpeers, "server", spub) == 0
        ? 0 : -1;
}

static void env_remove(struct tun_env *e)
{
    const char *files[] = { e->skey, e->ckey, e->speers, e->cpeers };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (files[i][0] != '\0')
            unlink(files[i]);
    if (e->dir[0] != '\0' && strchr(e->dir, 'X') == NULL)
        rmdir(e->dir);
}

/* `p11noise tunnel ...` in a child, its log discarded. */
static pid_t spawn(char *const argv[])
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDERR_FILENO);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    return pid;
}

/* A port free right now (there is a small window before the tunnel binds
 * it: acceptable for a benchmark). */
static int free_port(uint16_t *port)
{
    int fd = bench_listen(port, 1);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Until something accepts on `port`; -1 after START_TRIES. */
static int wait_listening(uint16_t port, int keep)
{
    for (int i = 0; i < START_TRIES; i++) {
        int fd = bench_connect(port);
        if (fd >= 0) {
            if (keep)
                return fd;
            bench_close_abort(fd);
            return 0;
        }
        usleep(10000);
    }
    return -1;
}

static int start_tunnels(struct tun_env *e, uint16_t sink_port, int *fd)
{
    uint16_t tport, cport;
    char listen_t[32], listen_c[32], target[32];
    if (free_port(&tport) != 0 || free_port(&cport) != 0)
        return -1;
    snprintf(listen_t, sizeof(listen_t), "127.0.0.1:%u", tport);
    snprintf(listen_c, sizeof(listen_c), "127.0.0.1:%u", cport);
    snprintf(target, sizeof(target), "127.0.0.1:%u", sink_port);
    char skey[128], ckey[128];
    snprintf(skey, sizeof(skey), "file:%s", e->skey);
    snprintf(ckey, sizeof(ckey), "file:%s", e->ckey);
    char *sargv[] = { "p11noise", "tunnel", "server", "--key", skey, "--peers", e->speers,
        "--listen", listen_t, "--target", target, NULL };
    char *cargv[] = { "p11noise", "tunnel", "client", "--key", ckey, "--peers", e->cpeers,
        "--peer", "server", "--listen", listen_c, listen_t, NULL };
    e->server = spawn(sargv);
    /* The client is started once the server listens: a plain connection
     * accepted before that would fail its handshake. */
    if (e->server < 0 || wait_listening(tport, 0) != 0)
        return -1;
    e->client = spawn(cargv);
    if (e->client < 0)
        return -1;
    *fd = wait_listening(cport, 1);
    return *fd >= 0 ? 0 : -1;
}

int bench_tunnel_throughput(const bench_opts *o, bench_stat *out)
{
    struct tun_env e = { .server = -1, .client = -1 };
    struct bench_sink_arg sink;
    uint16_t sink_port;
    pid_t sink_pid = -1;
    int fd = -1, rc = -1;
    uint8_t *msg = calloc(1, TUN_SIZE);
    uint64_t stop[2] = { 0, 0 };
    double secs;

    sink.lfd = bench_listen(&sink_port, 4);
    if (msg == NULL || sink.lfd < 0 || env_keys(&e) != 0)
        goto done;
    sink_pid = bench_fork(bench_plain_sink, &sink);
    if (sink_pid < 0 || start_tunnels(&e, sink_port, &fd) != 0)
        goto done;
    size_t count = bench_count_for(o, TUN_SIZE, 50.0);
    if (bench_plain_rep(fd, msg, TUN_SIZE, count, &secs) != 0)
        goto done;
    count = bench_count_for(o, TUN_SIZE, (double)TUN_SIZE * (double)count / secs / 1e6);
    for (int r = 0; r < o->reps; r++) {
        if (bench_plain_rep(fd, msg, TUN_SIZE, count, &secs) != 0)
            goto done;
        bench_stat_add(out, (double)TUN_SIZE * (double)count / secs / 1e6);
    }
    bench_stat_finish(out);
    rc = bench_write_all(fd, stop, sizeof(stop));
done:
    if (fd >= 0)
        close(fd);
    if (sink.lfd >= 0)
        close(sink.lfd);
    bench_child_stop(e.client);
    bench_child_stop(e.server);
    bench_child_stop(sink_pid);
    env_remove(&e);
    free(msg);
    return rc;
}
