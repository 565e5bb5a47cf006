/*
 * p11noise tunnel: plain TCP or Unix-socket connections carried over Noise
 * channels, one channel per plain connection (public API only).
 *
 *   cmd_tunnel.c        logging, setup, the poll() loop
 *   cmd_tunnel_args.c   the command line
 *   cmd_tunnel_side.c   what differs: the server's target, the client's
 *                       accepting socket
 *   cmd_tunnel_pump.c   one tunnelled connection: bytes both ways,
 *                       half-close, backpressure
 *   cmd_tunnel_sock.c   plain sockets: addresses, listening, connecting
 *   cmd_tunnel_ppv2.c   the PROXY protocol v2 header
 *
 * The context runs inside the tunnel's own poll() (p11n_poll_fds and
 * p11n_process), beside the plain sockets, so one thread does everything
 * and no callback ever races another.
 */
#ifndef P11N_TUNNEL_H
#define P11N_TUNNEL_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "cli.h"
#include "p11noise.h"

#define TUN_MAX_PEERS 64

/* A plain endpoint: "HOST:PORT", "[V6]:PORT" or "unix:PATH". */
struct tun_addr {
    int is_unix;
    char host[256];               /* or the socket path */
    uint16_t port;
};

struct tun_args {
    int server;                   /* 1: tunnel server, 0: tunnel client */
    const char *key;
    const char *pattern;
    const char *prologue;
    const char *peers_file;
    const char *socks5;           /* client */
    const char *listen;
    const char *target;           /* server: --target; client: the remote HOST:PORT */
    const char *peer;             /* client --peer */
    const char *server_peers[TUN_MAX_PEERS];
    size_t nserver_peers;
    unsigned mode;                /* Unix listening socket's mode */
    unsigned connect_ms;          /* server: deadline of each connect to the target */
    int proxy_protocol;
    int verbose;
    const char *log_format;       /* --log-format */
    const char *control;          /* server --control */
};

struct tun;

/* The whole command. */
struct tunnel {
    int kind;                     /* TUN_KIND_TUNNEL: see struct tun */
    p11n_ctx *ctx;
    p11n_key *key;
    struct tun_args a;
    struct tun_addr listen_addr, target_addr;
    int lfd;                      /* client: the plain listening socket, else -1 */
    long long accept_resume_ms;   /* client: out of fds, not accepting until then */
    p11n_listener *l;             /* server */
    struct cli_control *control;  /* server --control, or NULL */
    struct sockaddr_storage *targets; /* server: the target's addresses */
    socklen_t *target_lens;
    size_t ntargets;
    struct tun *conns;            /* every tunnelled connection */
    unsigned long next_id;
    long long stop_deadline_ms;   /* stopping: when the rest is cut; 0 before */
    size_t stop_count;            /* connections open when the stop began */
    struct cli_limits lim;        /* the library's limits from --config */
    int argc0;                    /* the command line as given, for a reload */
    char **argv0;
    int has_config;
};

/* The callbacks' arg is either the tunnel (a server connection before it
 * is established) or one struct tun: `kind` tells which. */
#define TUN_KIND_TUNNEL 1
#define TUN_KIND_CONN 2

/* One tunnelled connection: a plain socket and a Noise channel. */
struct tun {
    int kind;                     /* TUN_KIND_CONN */
    struct tunnel *t;
    struct tun *next;
    unsigned long id;
    p11n_conn *conn;              /* NULL once its final `closed` has run */
    int fd;                       /* the plain socket, -1 once closed */
    int connecting;               /* server: connecting to the target */
    size_t target_next;           /* server: next target address to try */
    long long deadline_ms;        /* server: when the connect in progress gives up */
    int up;                       /* both sides ready: bytes may flow */
    int closing;                  /* p11n_close called */
    int dead;                     /* nothing left: freed by the loop */
    /* plain -> Noise */
    uint8_t *held;                /* bytes p11n_send refused (WOULD_BLOCK) */
    size_t held_len;
    int blocked;                  /* `held` waits for `writable` */
    int rd_eof;                   /* the plain side has ended its stream */
    int eos_sent;                 /* ... and the end-of-stream message is queued */
    /* Noise -> plain */
    uint8_t *out;                 /* bytes not yet written to the plain socket */
    size_t out_pos, out_len, out_cap;
    int noise_paused;             /* reading paused because `out` is full */
    int eos_rcvd;                 /* the peer's end-of-stream message arrived */
    int wr_shut;                  /* ... and the plain socket's write side is shut */
    unsigned long long bytes_up, bytes_down;
};

/* cmd_tunnel_args.c: fills t->a and the addresses. Returns 0 to run, -1
 * after --help, or 2 after printing an error. */
int tun_parse_args(int argc, char **argv, struct tunnel *t);
void tun_usage(void);                     /* both usages, on stdout */
/* --config: see cli_config_apply. */
int tun_config(int *argc, char ***argv, struct tunnel *t);

/* Log through the same line format as the library's own lines. */
#define tun_log(level, ...) cli_log_event(level, NULL, __VA_ARGS__)

/* cmd_tunnel_pump.c */
struct tun *tun_new(struct tunnel *t, int fd);
void tun_start(struct tun *c);            /* both sides ready */
void tun_abort(struct tun *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
short tun_events(const struct tun *c);    /* poll events for c->fd */
void tun_ready(struct tun *c, short revents);
void tun_reap(struct tunnel *t);          /* free the dead */
int tun_queue_out(struct tun *c, const uint8_t *b, size_t len); /* -1: no memory */
extern const p11n_callbacks tun_callbacks;

/* Monotonic clock in milliseconds. */
long long tun_now_ms(void);

/* cmd_tunnel_side.c; the starts return 0 or an exit status (CLI_EXIT_*)
 * after logging. */
int tun_server_start(struct tunnel *t);
int tun_client_start(struct tunnel *t);
void tun_client_accept(struct tunnel *t);
void tun_target_ready(struct tun *c, short revents);
void tun_target_timeout(struct tun *c);   /* call when now >= c->deadline_ms */
void tun_established(p11n_conn *conn, const char *peer, void *arg);

/* cmd_tunnel_sock.c */
int tun_parse_addr(const char *s, struct tun_addr *out);
int tun_listen_plain(const struct tun_addr *a, unsigned mode, char *err, size_t cap);
int tun_resolve(const struct tun_addr *a, struct tunnel *t, char *err, size_t cap);
int tun_connect_plain(const struct sockaddr_storage *sa, socklen_t len, int *fd);
void tun_close_reset(int fd);
void tun_describe(const struct sockaddr_storage *sa, char *out, size_t cap);

/* cmd_tunnel_ppv2.c: the header for a peer carried on the target
 * connection `fd`, or 0 when `cap` is too small or fd's addresses have no
 * PROXY v2 form. */
#define PPV2_TLV_PEER 0xE0        /* the peer as p11n_conn_peer() names it */
#define PPV2_TLV_PEER_KEY 0xE1    /* the peer's static public key, 33 bytes */
size_t tun_ppv2_header(int fd, const char *peer, const uint8_t *key, uint8_t *out, size_t cap);

#endif
