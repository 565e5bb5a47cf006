/* A real SOCKS5 proxy for tests: microsocks (Debian package microsocks)
 * started on 127.0.0.1 on a free port, and stopped afterwards.
 *
 *   t_proxy px;
 *   if (t_proxy_start(&px, NULL, NULL) != 0) ...      // no authentication
 *   if (t_proxy_start(&px, "user", "pass") != 0) ...  // RFC 1929 required
 *   ... connect to 127.0.0.1:px.port ...
 *   t_proxy_stop(&px);
 *
 * The binary is $MICROSOCKS if set, else "microsocks" from PATH. The
 * proxy dies with the test process even if the test crashes. */
#ifndef P11N_PROXYUTIL_H
#define P11N_PROXYUTIL_H

#include <stdint.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;      /* 0 when not running */
    uint16_t port;  /* on 127.0.0.1 */
} t_proxy;

/* 1 if the microsocks binary can be found, else 0 (callers skip). */
int t_proxy_available(void);

/* Start the proxy, requiring `user`/`pass` when user is not NULL, and
 * return 0 once it accepts connections; -1 (reason on stderr) if it could
 * not be started. */
int t_proxy_start(t_proxy *px, const char *user, const char *pass);

/* Stop it (SIGTERM) and reap it; t_proxy_kill uses SIGKILL, for tests of
 * a proxy dying mid-session. Both do nothing when it is not running. */
void t_proxy_stop(t_proxy *px);
void t_proxy_kill(t_proxy *px);

/* A listening TCP socket on 127.0.0.1 on a free port (returned in
 * `*port`); returns the fd or -1. */
int t_listen_loopback(uint16_t *port);

/* A loopback port with nothing listening on it right now (a closed port
 * for "connection refused" tests); 0 on failure. */
uint16_t t_closed_port(void);

/* A blocking TCP connection to 127.0.0.1:port; returns the fd or -1. */
int t_connect_loopback(uint16_t port);

#endif
