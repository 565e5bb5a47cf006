/* The p11noise command: one file per group of subcommands. */
#ifndef P11N_CLI_H
#define P11N_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "p11noise.h"

/* Each subcommand gets argv starting at its own name; returns the exit
 * status. Errors are one clear line on stderr. */
int cmd_vectors(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_pubkey(int argc, char **argv);
int cmd_ceremony(int argc, char **argv);
int cmd_listen(int argc, char **argv);
int cmd_connect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tunnel(int argc, char **argv);

/* Exit status by class (tools/cli_exit.c; doc/p11noise.1, EXIT STATUS).
 * Token and usage failures are never worth retrying: a service manager
 * that restarts on them could lock a token's PIN. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_INTERNAL 1   /* out of memory, a failure of the program itself */
#define CLI_EXIT_USAGE 2      /* the command line, a configuration or peers file */
#define CLI_EXIT_TOKEN 3      /* the key: token, PIN, key file */
#define CLI_EXIT_PEER 4       /* a peer rejected, unknown, revoked, or rejecting us */
#define CLI_EXIT_NETWORK 5    /* sockets, names, deadlines, the SOCKS5 proxy */

/* The exit status for a library error (a p11n_err). */
int cli_exit_status(int err);

/* The whole of a file, or of standard input for "-" (tools/cli_file.c):
 * a malloc'd buffer of *len bytes and a NUL after them, or NULL with
 * errno set. */
char *cli_slurp(const char *path, size_t *len);

/* Log lines of the commands that run a context (tools/cli_log.c): the
 * library's through cli_log_record (p11n_ctx_options.log_record), the command's
 * through cli_log_event (`event` names it in the JSON form; may be NULL). */
#define CLI_LOG_TEXT 0        /* time-stamped lines */
#define CLI_LOG_JOURNAL 1     /* "<N>" priority prefix, no time stamp */
#define CLI_LOG_JSON 2        /* one JSON object per line */
extern int cli_log_level;     /* enum p11n_log_level */
extern int cli_log_format;
/* Level from -v, format from JOURNAL_STREAM (journal when it is stderr). */
void cli_log_init(int verbose);
int cli_log_format_parse(const char *name);   /* CLI_LOG_*, or -1 */
void cli_log_record(const p11n_log_record *r, void *arg);
void cli_log_event(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic clock in milliseconds (tools/cli_log.c). */
long long cli_now_ms(void);

/* --config FILE (tools/cli_config.c). The library's limits from the
 * file (0: the library's default); the command's options are put into
 * argv before the command line's. */
struct cli_limits {
    unsigned max_handshakes, max_token_ops, workers;
    unsigned act_timeout_ms, connect_timeout_ms, idle_timeout_ms;
    size_t write_high_water;
    int log_level;                /* 0: from -v */
    unsigned act1_timeout_ms, max_unauth_token_ops, unauth_workers, max_established;
    int keepalive_idle_s;         /* -1: off */
    unsigned keepalive_interval_s, keepalive_count, log_refusals_per_s;
    unsigned stall_timeout_ms;
};
struct cli_config_opts {
    const char *cmd;              /* starts error lines */
    /* Whether the command has option `name` ("--peer", "-v"); *takes_value
     * says if it takes a value. */
    int (*known)(const char *name, int *takes_value, void *arg);
    void *arg;
};
/* Finds --config in *argv; if there, reads the file and replaces *argc and
 * *argv (valid until cli_config_free). Each limit is also a command-line
 * option (--idle-timeout MS, --max-established N, ...: the key without
 * its unit, '-' for '_'), which wins over the file's line and is taken
 * out of *argv here. Returns 0 or an exit status after printing (the
 * line of the file, or the option, named). */
int cli_config_apply(const struct cli_config_opts *co, int *argc, char ***argv,
    struct cli_limits *lim);
void cli_config_free(void);
void cli_limits_apply(const struct cli_limits *lim, p11n_ctx_options *o);
/* cli_config_opts.known for a table of struct cli_opt (tools/cli_args.c). */
int cli_opts_known(const char *name, int *takes_value, void *opts);

/* The key's fingerprint "ABCD-EFGH-...-WXYZ" (tools/cli_fingerprint.c):
 * 32 base32 characters of SHA-256(compressed key) in groups of 4.
 * Returns 0, or -1 if the hash failed. */
#define CLI_FINGERPRINT_LEN 40    /* 32 characters, 7 dashes, NUL */
int cli_fingerprint(const uint8_t pub[P11N_PUBKEY_LEN], char out[CLI_FINGERPRINT_LEN]);

/* "p11noise: " + formatted message + newline on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "p11noise: warning: " + formatted message (in the log's form when it
 * is not text). */
void cli_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * One option parser for every subcommand (tools/cli_args.c).
 *
 * "--name VALUE" and "--name=VALUE" mean the same; "-h" and "--help" ask
 * for the usage; "--" ends the options; "-" alone is an argument. Options
 * and arguments may come in any order. An error line names the option as
 * typed up to its '=', never its value nor the argument after it: a key
 * URI can hold a PIN and a proxy a password.
 */
struct cli_opt {
    const char *name;   /* "--key", "-v"; NULL ends a table */
    int id;             /* > 0: what cli_next returns for it */
    int has_value;      /* 1: takes a value */
};

struct cli_parser {
    const char *cmd;             /* starts error lines: "listen" */
    int argc;
    char **argv;                 /* argv[0] is the subcommand's name */
    int next;                    /* index of the next argument to read */
    int only_args;               /* "--" seen */
    const struct cli_opt *opts;
    const struct cli_opt *opt;   /* the option cli_next last returned */
};

#define CLI_END 0       /* no more arguments */
#define CLI_ARG (-1)    /* a positional argument, in *val */
#define CLI_HELP (-2)   /* -h or --help: print the usage on stdout, exit 0 */
#define CLI_BAD (-3)    /* an error line was printed: exit 2 */

void cli_parser_init(struct cli_parser *p, const char *cmd, int argc, char **argv,
    const struct cli_opt *opts);

/* The next option (its id; *val its value, or NULL for a flag), a
 * positional argument (CLI_ARG, *val), CLI_END, CLI_HELP or CLI_BAD. */
int cli_next(struct cli_parser *p, const char **val);

/* Text of the command line for an error line: "'TEXT'" in `buf`, or a
 * note that it is not repeated when it could hold a secret ('@', '=',
 * ';', '?': a proxy's password, a key URI's PIN) or drive the terminal
 * (bytes outside printable ASCII). Returns buf. */
#define CLI_SHOWN_MAX 160
const char *cli_shown(const char *text, char buf[CLI_SHOWN_MAX]);

#endif
