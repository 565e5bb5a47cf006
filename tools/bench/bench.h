/*
 * `p11noise bench`: figures of the library next to references measured in
 * the same run (OpenSSL TLS 1.3, raw EVP AEAD, libsecp256k1, the token's
 * own C_DeriveKey). Every figure is the median of several repetitions with
 * its spread; nothing here is ever asserted on.
 */
#ifndef P11N_BENCH_H
#define P11N_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "p11noise.h"

#define BENCH_MAX_REPS 31

/* Repetitions of one measurement and their summary. */
typedef struct bench_stat {
    double v[BENCH_MAX_REPS];
    int n;
    double median, lo, hi;   /* filled by bench_stat_finish */
} bench_stat;

void bench_stat_add(bench_stat *s, double v);
void bench_stat_finish(bench_stat *s);
/* The p-th percentile (0..100) of n samples, sorting them in place. */
double bench_percentile(double *v, size_t n, double p);

/* Monotonic clock in seconds. */
double bench_now(void);
/* CPU seconds this thread has used: time lost to other processes on a
 * shared machine does not count. */
double bench_thread_cpu(void);

/* Run-wide options. */
typedef struct bench_opts {
    int quick;          /* smoke run: short repetitions, small counts */
    int reps;           /* repetitions per figure */
    double rep_seconds; /* target duration of one repetition */
    int verbose;
    unsigned sizes;     /* bit i: measure bench_sizes[i] (throughput rows) */
} bench_opts;

/* How a row's goal is judged. */
enum bench_goal_kind {
    BENCH_GOAL_NONE,       /* informative row */
    BENCH_GOAL_RATIO_MIN,  /* ours / reference >= x */
    BENCH_GOAL_RATIO_MAX,  /* ours / reference <= x */
    BENCH_GOAL_ABS_MAX     /* ours <= x (in the row's unit) */
};

/* Value formats. */
enum bench_unit {
    BENCH_MBPS,         /* MB/s (10^6 bytes) */
    BENCH_PER_SEC,      /* operations per second */
    BENCH_MS,           /* milliseconds */
    BENCH_US,           /* microseconds */
    BENCH_KIB,          /* KiB */
    BENCH_COUNT         /* a plain count (derivations) */
};

/* One line of the result table. `ours` or `ref` may be NULL (not measured
 * or no reference); `note` is appended to the reference cell. */
typedef struct bench_row {
    const char *key;        /* stable key for --json (bench_json.c), or NULL */
    const char *figure;
    enum bench_unit unit;
    const bench_stat *ours;
    const char *ref_name;
    const bench_stat *ref;
    enum bench_goal_kind goal;
    double goal_x;
    const char *goal_text;
    /* Per-pair ratios ours/ref measured in alternating repetitions
     * (bench_interleave): when set, the ratio column is their median
     * (min–max) instead of the ratio of the two medians. */
    const bench_stat *ratio;
} bench_row;

/* ---- side by side (bench_json.c) ---- */

/* One repetition of a figure into out (bench_stat_add, no finish); 0 or -1. */
typedef int (*bench_rep_fn)(const bench_opts *o, void *arg, bench_stat *out);

/* A and B in alternating repetitions within this run (A, B, A, B, ...,
 * o->reps pairs), so drift of the machine's speed hits both alike: a and
 * b get their values, ratio the per-pair a/b. 0, or -1 if either failed. */
int bench_interleave(const bench_opts *o, bench_rep_fn fa, void *aa, bench_rep_fn fb,
    void *ba, bench_stat *a, bench_stat *b, bench_stat *ratio);

/* --json: one JSON object per line instead of the Markdown table; every
 * row with a key is printed, and bench_json_finish prints each stable key
 * not printed yet with "value": null and a note. */
void bench_json_enable(void);
int bench_json_enabled(void);
/* A keyed figure that could not be measured: value null, the reason. */
void bench_json_missing(const char *key, const char *note);
/* A keyed figure that is a plain number (no reference). */
void bench_json_value(const char *key, const char *figure, double value, const char *unit,
    const char *note);
void bench_json_finish(void);
/* The table's row as JSON (bench_table_row calls it in --json mode); met
 * is 1, 0 or -1 (not judged). */
void bench_json_row(const bench_row *r, const char *unit, double ratio, int met);

void bench_table_begin(void);
void bench_table_row(const bench_row *r);
/* A row for a figure that could not be measured, with the reason. */
void bench_table_missing(const char *figure, const char *why);
/* Rows whose goal was judged, and how many of them were met. */
void bench_table_summary(int *judged, int *met);

/* Plot data: one line "system size MBps" per point, written to the file
 * named by --plot-data (NULL: none). */
void bench_plot_point(const char *system, size_t size, double mbps);
int bench_plot_open(const char *path);
void bench_plot_close(void);

/* ---- loopback plumbing shared by the two-process figures ---- */

/* A listening TCP socket on 127.0.0.1 and an ephemeral port. */
int bench_listen(uint16_t *port, int backlog);
/* Blocking connect / accept with TCP_NODELAY set (as both the library and
 * the TLS reference use it for interactive traffic). */
int bench_connect(uint16_t port);
int bench_accept(int lfd);
/* Close so that no TIME_WAIT is left behind (thousands of short
 * connections would otherwise exhaust the ephemeral ports). */
void bench_close_abort(int fd);
int bench_write_all(int fd, const void *p, size_t len);
int bench_read_all(int fd, void *p, size_t len);
/* Fork a child that runs fn(arg) and exits with its return value. The
 * parent gets the pid (or -1). */
pid_t bench_fork(int (*fn)(void *), void *arg);
/* Stop and reap a child started by bench_fork. */
void bench_child_stop(pid_t pid);
/* A server child on a listening socket of its own (127.0.0.1, an
 * ephemeral port): the set-up every two-process figure shares. */
typedef struct bench_server {
    int lfd;
    uint16_t port;
    pid_t pid;
} bench_server;
/* Listen with `backlog`, then fork a child running serve(lfd, arg). 0, or
 * -1 with nothing left running (bench_server_stop is still safe). */
int bench_server_start(bench_server *s, int backlog, int (*serve)(int lfd, void *arg),
    void *arg);
/* Close the listening socket, stop and reap the child. */
void bench_server_stop(bench_server *s);
/* Raise RLIMIT_NOFILE to at least `want`; returns the new soft limit. */
long bench_raise_nofile(long want);

/* The sizes of the throughput figures. */
#define BENCH_NSIZES 4
extern const size_t bench_sizes[BENCH_NSIZES];
/* Messages per repetition for a message size, scaled by the options. */
size_t bench_count_for(const bench_opts *o, size_t size, double est_mbps);
/* The repetitions of a rate figure: one(arg) once untimed (connections
 * and caches warm), then o->reps repetitions of o->rep_seconds, each
 * adding one(arg) calls per second to `out` (finished). 0, or -1 as soon
 * as a call fails. */
int bench_rate_reps(const bench_opts *o, int (*one)(void *arg), void *arg, bench_stat *out);
/* The repetitions of a throughput figure: rep(arg, count, &secs) moves
 * `count` messages of `size` bytes and says how long it took. One untimed
 * repetition, sized by est_mbps, sizes the others to o->rep_seconds; then
 * o->reps repetitions into `out` as MB/s (finished). 0 or -1. */
int bench_mbps_reps(const bench_opts *o, size_t size, double est_mbps,
    int (*rep)(void *arg, size_t count, double *secs), void *arg, bench_stat *out);

/* ---- the figure groups (one file each) ---- */

/* Raw single-core EVP ChaCha20-Poly1305 seal, MB/s, per size. */
int bench_aead_raw(const bench_opts *o, size_t size, bench_stat *out);
/* TLS 1.3 reference: throughput per size, full mutual-auth handshakes/s. */
int bench_tls_throughput(const bench_opts *o, size_t size, bench_stat *out);
int bench_tls_handshakes(const bench_opts *o, bench_stat *out);
/* The same with pinned self-signed P-256 certificates, no CA: each side
 * accepts exactly the other's certificate (the analogue of a ceremony). */
int bench_tls_handshakes_pinned(const bench_opts *o, bench_stat *out);
/* The pinned contexts (SSL_CTX *, the caller frees both) for other
 * figures; 0 or -1. */
int bench_tls_pinned_ctxs(void **server, void **client);
/* The same certificates as PEM files for another program: DIR/ca.pem,
 * DIR/server.pem and DIR/client.pem (certificate, then private key). */
int bench_tls_write_pems(const char *dir);
/* libsecp256k1: seconds per key generation and per ECDH. */
int bench_ecc_costs(const bench_opts *o, bench_stat *keygen_us, bench_stat *ecdh_us);
/* The same timed by `clock` (bench_now or bench_thread_cpu). */
int bench_ecc_costs_by(const bench_opts *o, double (*clock)(void), bench_stat *keygen_us,
    bench_stat *ecdh_us);


/* A throw-away SoftHSM2 token in a temporary directory of its own, as
 * each machine has its own token: two processes sharing one SoftHSM2
 * directory race on its files (a login rewrites token.object while the
 * other process scans it, and the scan then finds no token). */
typedef struct bench_token {
    char dir[64];
    char conf[96];           /* its softhsm2.conf */
    char module[256];
    char label[33];
    char pin[16];
} bench_token;

/* p11noise through the public API: the transport's sealing cost in memory,
 * throughput over loopback, handshakes per second. */
int bench_p11n_seal(const bench_opts *o, size_t size, bench_stat *out);
int bench_p11n_throughput(const bench_opts *o, size_t size, bench_stat *out);
/* Plain TCP, no encryption: what the kernel alone allows (bench_plain.c). */
int bench_plain_throughput(const bench_opts *o, size_t size, bench_stat *out);
/* Its two ends, which any byte stream can carry: the sink (the child of
 * a bench_server; arg unused) accepts one connection on `lfd` and answers
 * each request (count, size, then count * size bytes) with one byte;
 * bench_plain_rep sends one request and times it until the answer. */
int bench_plain_sink(int lfd, void *arg);
int bench_plain_rep(int fd, const uint8_t *msg, size_t size, size_t count, double *secs);
/* A warm-up request sizing the others, o->reps timed requests into `out`
 * (MB/s), then the request that stops the sink. */
int bench_plain_reps(const bench_opts *o, int fd, size_t size, bench_stat *out);
/* The sink in a child; open_fd(arg, its port) returns the connection to
 * measure through (or -1), and bench_plain_reps runs on it. */
int bench_sink_throughput(const bench_opts *o, size_t size,
    int (*open_fd)(void *arg, uint16_t sink_port), void *arg, bench_stat *out);
/* The same through `p11noise tunnel client` and `tunnel server` (this
 * program, run twice), software keys, 64 KiB writes (bench_tunnel.c). */
int bench_tunnel_throughput(const bench_opts *o, bench_stat *out);
/* The same arrangement through stunnel (TLS 1.3, CHACHA20-POLY1305, mutual
 * certificates); -2 when stunnel is not installed. */
int bench_stunnel_throughput(const bench_opts *o, bench_stat *out);
/* Connect, the pattern's acts as plain bytes, the confirmation, close:
 * handshakes per second with no cryptography at all. */
int bench_null_handshakes(const bench_opts *o, const char *pattern, bench_stat *out);
/* The same through the event loop: p11n_send() until it would block. */
int bench_loop_throughput(const bench_opts *o, size_t size, bench_stat *out);

/* One side of a handshake: a token key URI (opened in the process that
 * uses it) or a software key, and its public key. */
typedef struct bench_hs_side {
    const bench_token *token;     /* with uri: selected before opening it */
    const char *uri;
    p11n_key *key;
    uint8_t pub[P11N_PUBKEY_LEN];
} bench_hs_side;

int bench_p11n_handshakes(const bench_opts *o, const char *pattern,
    const bench_hs_side *server, const bench_hs_side *client, bench_stat *out);
/* Server capacity (bench_capacity.c): handshakes per second one listener
 * process pinned to one CPU sustains with a client process keeping 64 KK
 * handshakes in flight; one repetition into out, per wall-clock second or
 * (per_cpu) per CPU-second the server used. The same for an OpenSSL
 * TLS 1.3 server (non-blocking, one process, pinned self-signed P-256
 * mutual authentication). */
int bench_p11n_capacity(const bench_opts *o, const bench_hs_side *server,
    const bench_hs_side *client, int per_cpu, bench_stat *out);
int bench_tls_capacity(const bench_opts *o, int per_cpu, bench_stat *out);
/* Both ends in this process, no sockets (the library's own cost). With
 * token keys both must be on one token: a process sees one SoftHSM2
 * configuration. */
/* One handshake with both ends driven in this process; 0 or -1. */
int bench_hs_in_memory(const p11n_handshake_config *ci, const p11n_handshake_config *cr);
int bench_p11n_handshakes_local(const bench_opts *o, const char *pattern,
    const bench_hs_side *server, const bench_hs_side *client, bench_stat *out);


int bench_token_setup(const char *module_path, bench_token *t);
/* Point SOFTHSM2_CONF (this process and children forked later) at `t`. */
void bench_token_use(const bench_token *t);
void bench_token_teardown(bench_token *t);
/* A pkcs11: URI (with PIN and module path) for the token itself. */
void bench_token_uri(const bench_token *t, char *out, size_t cap);
/* A pkcs11: URI (with PIN and module path) for the key labelled `object`. */
void bench_token_key_uri(const bench_token *t, const char *object, char *out, size_t cap);
/* p11n_token_keygen run in a short-lived child process, so this process
 * never holds an initialized module across the fork()s that follow. */
int bench_token_keygen(const char *token_uri, const char *label, uint8_t pub[P11N_PUBKEY_LEN]);
/* The token's own derivations per second, one session. */
int bench_token_derive_rate(const bench_opts *o, const bench_token *t, bench_stat *out);

/* Token derivations (C_DeriveKey calls, counted by the fault module
 * `faultmod` in front of the token's module) per handshake in one process,
 * keys srv_label and cli_label on token t: *first for the first handshake
 * between the two keys, *steady for each later one. */
int bench_count_derives(const bench_token *t, const char *faultmod, const char *pattern,
    const char *srv_label, const char *cli_label, double *first, double *steady);

/* Milliseconds per handshake (both ends in one child process, no
 * sockets) with every derivation delayed delay_ms by the fault module:
 * o->reps handshakes after a first one between the two keys. */
int bench_token_latency(const bench_opts *o, const bench_token *t, const char *faultmod,
    const char *pattern, const char *srv_label, const char *cli_label, int delay_ms,
    bench_stat *out);

/* ---- the groups of rows (bench_rows.c) ---- */
void bench_group_aead(const bench_opts *o);
void bench_group_throughput(const bench_opts *o);
void bench_group_handshakes(const bench_opts *o);
void bench_group_capacity(const bench_opts *o);
void bench_group_token(const bench_opts *o, const char *module, const char *faultmod);
/* bench_conns.c */
void bench_group_conns(const bench_opts *o);
void bench_group_slowtoken(const bench_opts *o, const char *module, const char *faultmod);

#endif
