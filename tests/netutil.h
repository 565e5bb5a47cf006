/* Helpers shared by the event-loop tests (test_net, test_net_token,
 * test_net_trust, test_loop): a log sink that keeps every line for
 * grepping, one poll() driving several contexts through the external-loop
 * interface, one connection's view with its callbacks and the dial and
 * listen that use it, and a tiny DNS server on 127.0.0.1 so that name
 * resolution through c-ares can be tested without the system's
 * resolver. */
#ifndef P11N_NETUTIL_H
#define P11N_NETUTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "p11noise.h"

/* ---- logs ----
 * Pass t_log_cb as the context's log callback with a short name as its
 * argument: lines are kept as "[NAME] LEVEL TEXT" (and echoed on stderr
 * when P11N_TEST_VERBOSE is set). */
void t_log_cb(int level, const char *line, void *name);
/* Position to search from later (the current end of the log). */
size_t t_log_mark(void);
/* Everything logged so far ("" before the first line). */
const char *t_log_text(void);
/* 1 if a line logged since `mark` holds `a` and (unless NULL) `b`. */
int t_log_has(size_t mark, const char *a, const char *b);
/* How many lines since `mark` hold `a`. */
size_t t_log_count(size_t mark, const char *a);
void t_log_free(void);

/* ---- loop ----
 * One round: poll the fds of every non-NULL context together (waiting at
 * most `max_wait` ms, less if a context has an earlier deadline), then
 * let each process its own. */
void t_pump(p11n_ctx *const *ctxs, size_t n, int max_wait);

/* Pump the `n` contexts of `ctxs` until `cond` holds, then assert it. The
 * guard only stops a hung test (a correct run is far quicker, valgrind
 * included); the assertion reports the failure. */
#define T_PUMP_GUARD_S 120
#define T_PUMP_UNTIL(ctxs, n, cond)                                \
    do {                                                           \
        time_t guard_ = time(NULL) + T_PUMP_GUARD_S;               \
        while (!(cond) && time(NULL) < guard_)                     \
            t_pump((ctxs), (n), 50);                               \
        CU_ASSERT(cond);                                           \
    } while (0)

/* Context options with the log sink (named `name`) at debug level. */
p11n_ctx_options t_ctx_options(const char *name);

/* n software secp256k1 keys from deterministic private keys (seed), and
 * their compressed public keys; aborts on failure. */
void t_soft_keys(uint64_t seed, p11n_key **keys, uint8_t (*pubs)[P11N_PUBKEY_LEN], size_t n);

/* ---- one connection's view ----
 * t_side_cb with a t_side as its argument counts what happens to one
 * connection: established (the peer's identifier kept), messages (echoed
 * back if `echo`, or handed to `on_message` if set), closes (the last
 * reason and text; `conn` cleared by the final one). */
typedef struct t_side {
    int established, closed, reason, final;
    int unavailable;        /* closes with P11N_ERR_TOKEN_UNAVAILABLE */
    uint64_t msgs;
    int echo;
    char peer[80];
    char text[400];
    p11n_conn *conn;
    void (*on_message)(struct t_side *s, p11n_conn *c, const uint8_t *m, size_t len);
} t_side;

extern const p11n_callbacks t_side_cb;
void t_side_up(p11n_conn *c, const char *peer, void *side);

/* Dial host:port as `pattern` with `key` towards `peer`, callbacks
 * t_side_cb on `s` (cleared first); fails the test if the call does. */
p11n_conn *t_dial(p11n_ctx *ctx, const char *host, uint16_t port, const char *peer,
    const char *pattern, p11n_key *key, t_side *s);
/* The same with the caller's options: each callback left NULL is
 * t_side_cb's, and their argument is `s`. */
p11n_conn *t_dial_with(p11n_ctx *ctx, const char *host, uint16_t port, const char *peer,
    p11n_connect_options *co, t_side *s);
/* Listen on 127.0.0.1 (a free port) as `pattern` with `key`, accepting the
 * `nids` peers of `ids` (none: the whole store), with callbacks `cb` and
 * their argument `arg`; fails the test if the call does. */
p11n_listener *t_listen(p11n_ctx *ctx, p11n_key *key, const char *pattern,
    const char *const *ids, size_t nids, const p11n_callbacks *cb, void *arg);

/* ---- DNS ----
 * Answers A and AAAA queries for one name over UDP on 127.0.0.1 (other
 * names: NXDOMAIN). `drop_first` ignores the first query, so that the
 * client must retransmit. */
typedef struct t_dns {
    int fd;
    uint16_t port;
    pthread_t thread;
    int stop;
    int drop_first;
    char name[128];
    uint8_t a4[4], a6[16];
    int has_a4, has_a6;
    unsigned queries;      /* read after t_dns_stop */
} t_dns;

/* Serve `name` with the given addresses (either may be NULL); 0 on
 * success, -1 (reason on stderr) otherwise. */
int t_dns_start(t_dns *d, const char *name, const char *ipv4, const char *ipv6,
    int drop_first);
void t_dns_stop(t_dns *d);

#endif
