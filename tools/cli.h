/* The p11noise command: one file per group of subcommands. */
#ifndef P11N_CLI_H
#define P11N_CLI_H

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

/* "p11noise: " + formatted message + newline on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
