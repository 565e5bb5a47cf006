/*
 * Throughput of one connection through `p11noise tunnel`, as deployed: a
 * plain sender -> tunnel client -> Noise channel -> tunnel server -> a
 * plain sink, four processes over loopback, software keys. The tunnel
 * processes are this program itself (/proc/self/exe), so the figure is the
 * command's, not a re-creation of it. Compared with the library's own
 * event-loop throughput, this shows what the two extra plain hops and the
 * pump cost; stunnel in the same arrangement (TLS 1.3, CHACHA20-POLY1305,
 * certificates both ways) is what operators use today.
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

/* A relay's files (keys, certificates, configuration) and processes. */
struct tun_env {
    char dir[64];
    char skey[96], ckey[96], speers[96], cpeers[96];
    pid_t server, client;
    const char *prog;             /* the relay program to exec */
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
    static const char *const names[] = { "s.key", "c.key", "s.peers", "c.peers", "ca.pem",
        "server.pem", "client.pem", "server.conf", "client.conf" };
    char path[128];
    if (e->dir[0] == '\0' || strchr(e->dir, 'X') != NULL)
        return;   /* never made */
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", e->dir, names[i]);
        unlink(path);
    }
    rmdir(e->dir);
}

static int env_dir(struct tun_env *e)
{
    snprintf(e->dir, sizeof(e->dir), "/tmp/p11n-bench-tunnel-XXXXXX");
    return mkdtemp(e->dir) != NULL ? 0 : -1;
}

/* The relay program in a child, its log discarded. */
static pid_t spawn(const char *prog, char *const argv[])
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDERR_FILENO);
        execv(prog, argv);
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

/* Builds the two relay command lines for the ports given. */
typedef int (*relay_argv)(struct tun_env *e, uint16_t sink, uint16_t tport, uint16_t cport,
    char ***sargv, char ***cargv);

struct relay {
    struct tun_env *e;
    relay_argv make;
};

/* Start both relays in front of the sink; the connection through them. */
static int relay_open(void *arg, uint16_t sink_port)
{
    struct relay *r = arg;
    struct tun_env *e = r->e;
    uint16_t tport, cport;
    char **sargv, **cargv;
    if (free_port(&tport) != 0 || free_port(&cport) != 0
        || r->make(e, sink_port, tport, cport, &sargv, &cargv) != 0)
        return -1;
    e->server = spawn(e->prog, sargv);
    /* The client is started once the server listens: a plain connection
     * accepted before that would fail its handshake. */
    if (e->server < 0 || wait_listening(tport, 0) != 0)
        return -1;
    e->client = spawn(e->prog, cargv);
    return e->client < 0 ? -1 : wait_listening(cport, 1);
}

/* One connection through the relays to the plain sink, 64 KiB writes. */
static int relay_throughput(const bench_opts *o, struct tun_env *e, relay_argv make,
    bench_stat *out)
{
    struct relay r = { .e = e, .make = make };
    int rc = bench_sink_throughput(o, TUN_SIZE, relay_open, &r, out);
    bench_child_stop(e->client);
    bench_child_stop(e->server);
    return rc;
}

/* ---- p11noise tunnel ---- */

static int tunnel_argv(struct tun_env *e, uint16_t sink, uint16_t tport, uint16_t cport,
    char ***sargv, char ***cargv)
{
    static char listen_t[32], listen_c[32], target[32], skey[128], ckey[128];
    snprintf(listen_t, sizeof(listen_t), "127.0.0.1:%u", tport);
    snprintf(listen_c, sizeof(listen_c), "127.0.0.1:%u", cport);
    snprintf(target, sizeof(target), "127.0.0.1:%u", sink);
    snprintf(skey, sizeof(skey), "file:%s", e->skey);
    snprintf(ckey, sizeof(ckey), "file:%s", e->ckey);
    static char *s[] = { "p11noise", "tunnel", "server", "--key", skey, "--peers", NULL,
        "--listen", listen_t, "--target", target, NULL };
    static char *c[] = { "p11noise", "tunnel", "client", "--key", ckey, "--peers", NULL,
        "--peer", "server", "--listen", listen_c, listen_t, NULL };
    s[6] = e->speers;
    c[6] = e->cpeers;
    *sargv = s;
    *cargv = c;
    return 0;
}

int bench_tunnel_throughput(const bench_opts *o, bench_stat *out)
{
    struct tun_env e = { .server = -1, .client = -1, .prog = "/proc/self/exe" };
    int rc = env_dir(&e) == 0 && env_keys(&e) == 0 ? relay_throughput(o, &e, tunnel_argv, out)
                                                   : -1;
    env_remove(&e);
    return rc;
}

/* ---- stunnel ---- */

/* stunnel4 (Debian's name) or stunnel on the PATH, into `out`. */
static int find_stunnel(char *out, size_t cap)
{
    static const char *const names[] = { "stunnel4", "stunnel" };
    const char *path = getenv("PATH");
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        for (const char *p = path ? path : "/usr/bin:/bin"; *p != '\0';) {
            size_t len = strcspn(p, ":");
            snprintf(out, cap, "%.*s/%s", (int)len, p, names[n]);
            if (len > 0 && access(out, X_OK) == 0)
                return 0;
            p += len + (p[len] == ':');
        }
    }
    return -1;
}

/* One service in the foreground; the same cipher and verification on both
 * sides as the in-process TLS reference. */
static int write_stunnel_conf(struct tun_env *e, const char *name, int client, uint16_t accept,
    uint16_t connect)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s.conf", e->dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "foreground = yes\npid =\ndebug = 3\n[bench]\nclient = %s\n"
               "accept = 127.0.0.1:%u\nconnect = 127.0.0.1:%u\n"
               "cert = %s/%s.pem\nCAfile = %s/ca.pem\nverifyChain = yes\nrequireCert = yes\n"
               "sslVersionMin = TLSv1.3\nciphersuites = TLS_CHACHA20_POLY1305_SHA256\n",
        client ? "yes" : "no", accept, connect, e->dir, name, e->dir);
    return fclose(f) == 0 ? 0 : -1;
}

static int stunnel_argv(struct tun_env *e, uint16_t sink, uint16_t tport, uint16_t cport,
    char ***sargv, char ***cargv)
{
    static char sconf[128], cconf[128];
    static char *s[] = { "stunnel", sconf, NULL }, *c[] = { "stunnel", cconf, NULL };
    snprintf(sconf, sizeof(sconf), "%s/server.conf", e->dir);
    snprintf(cconf, sizeof(cconf), "%s/client.conf", e->dir);
    if (write_stunnel_conf(e, "server", 0, tport, sink) != 0
        || write_stunnel_conf(e, "client", 1, cport, tport) != 0)
        return -1;
    *sargv = s;
    *cargv = c;
    return 0;
}

int bench_stunnel_throughput(const bench_opts *o, bench_stat *out)
{
    char prog[256];
    if (find_stunnel(prog, sizeof(prog)) != 0)
        return -2;
    struct tun_env e = { .server = -1, .client = -1, .prog = prog };
    int rc = env_dir(&e) == 0 && bench_tls_write_pems(e.dir) == 0
        ? relay_throughput(o, &e, stunnel_argv, out) : -1;
    env_remove(&e);
    return rc;
}
