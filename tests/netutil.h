/* Helpers shared by the event-loop tests (test_net, test_net_token):
 * a log sink that keeps every line for grepping, one poll() driving
 * several contexts through the external-loop interface, and a tiny DNS
 * server on 127.0.0.1 so that name resolution through c-ares can be
 * tested without the system's resolver. */
#ifndef P11N_NETUTIL_H
#define P11N_NETUTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

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
