/*
 * p11noise keygen | pubkey | ceremony import/list/remove: the token and
 * ceremony commands, through the public API only.
 *
 * A pkcs11: URI without pin-value or pin-source makes the library ask the
 * PIN callback; here that prompts on the terminal with echo off, so the
 * PIN need not appear in the shell history or the process list.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "cli_net.h"
#include "p11noise.h"

/* Read a PIN from the controlling terminal; refuse when there is none. */
static int tty_pin(const char *token_uri, char *pin, size_t cap, void *arg)
{
    (void)arg;
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    struct termios old, quiet;
    int echo_off = tcgetattr(fd, &old) == 0;
    if (echo_off) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        echo_off = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    dprintf(fd, "PIN for %s: ", token_uri);
    size_t n = 0;
    int ok = 0;
    for (;;) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (c == '\n' || c == '\r') {
            ok = 1;
            break;
        }
        if (n + 1 < cap)
            pin[n++] = c;
    }
    pin[n < cap ? n : cap - 1] = '\0';
    if (echo_off)
        tcsetattr(fd, TCSAFLUSH, &old);
    dprintf(fd, "\n");
    close(fd);
    return ok && n > 0 ? 0 : -1;
}

/* One line for a failure: the library's token detail when there is one. */
static int fail(const char *what, int err)
{
    const char *detail = p11n_token_last_error();
    if (detail != NULL && detail[0] != '\0')
        cli_error("%s: %s", what, detail);
    else
        cli_error("%s: %s", what, p11n_strerror(err));
    return cli_exit_status(err);
}

static void print_hex(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        printf("%02x", p[i]);
}

static const struct cli_opt token_opts[] = {
    { "--token", 't', 1 },
    { "--label", 'l', 1 },
    { "--key", 'k', 1 },
    { "--replace", 'r', 0 },
    { "--fingerprint", 'f', 0 },
    { NULL, 0, 0 },
};

/* --help texts, printed on stdout. */
static const char KEYGEN_USAGE[] =
    "usage: p11noise keygen --token URI --label NAME\n"
    "Generates a secp256k1 key pair on the token and prints \"NAME PUBHEX\".\n";
static const char PUBKEY_USAGE[] =
    "usage: p11noise pubkey --key URI [--fingerprint]\n"
    "       p11noise pubkey --fingerprint PUBHEX\n"
    "Prints the key's 66-hex-digit compressed public key (URI: pkcs11:... or file:PATH).\n"
    "--fingerprint prints instead its fingerprint, to read aloud when checking a\n"
    "ceremony out of band: eight groups of four characters of base32 of SHA-256\n"
    "of the compressed key (its first 160 bits). Given PUBHEX, that key's.\n";
static const char CEREMONY_USAGE[] =
    "usage: p11noise ceremony import --token URI [--replace] FILE|-\n"
    "       p11noise ceremony list   --token URI\n"
    "       p11noise ceremony remove --token URI IDENTIFIER\n"
    "Keeps the peers' public keys on the token: import reads lines\n"
    "\"IDENTIFIER PUBHEX\" ('#' starts a comment), all or nothing; --replace\n"
    "lets an identifier take a new key (and rewrites an ignored object). list\n"
    "prints one \"IDENTIFIER PUBHEX\" line per trusted peer, and on standard error\n"
    "one \"ignored: IDENTIFIER: REASON\" line per object left out (public, modifiable,\n"
    "malformed or ambiguous; see doc/ceremony.md).\n";

struct args {
    const char *token, *label, *key;
    int replace;
    int fingerprint;
    int npos;
    char **pos;
};

/* Parse the options `allowed` (letters of token_opts) and the positional
 * arguments. Returns 0, 2 after printing an error, or -1 after printing
 * `usage` for --help (exit 0). */
static int parse_args(int argc, char **argv, const char *allowed, const char *usage,
    struct args *a)
{
    memset(a, 0, sizeof(*a));
    struct cli_parser p;
    cli_parser_init(&p, argv[0], argc, argv, token_opts);
    /* Positional arguments are gathered in order at argv[1...]: each
     * lands on a slot the parser has already read. */
    a->pos = argv + 1;
    const char *val;
    int c;
    while ((c = cli_next(&p, &val)) != CLI_END) {
        if (c == CLI_HELP) {
            fputs(usage, stdout);
            return -1;
        }
        if (c == CLI_BAD)
            return 2;
        if (c == CLI_ARG) {
            a->pos[a->npos++] = (char *)val;
        } else if (strchr(allowed, c) == NULL) {
            cli_error("%s: %s is not an option of this command (--help for usage)", argv[0],
                p.opt->name);
            return 2;
        } else if (c == 't') {
            a->token = val;
        } else if (c == 'l') {
            a->label = val;
        } else if (c == 'k') {
            a->key = val;
        } else if (c == 'r') {
            a->replace = 1;
        } else if (c == 'f') {
            a->fingerprint = 1;
        }
    }
    return 0;
}

int cmd_keygen(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, "tl", KEYGEN_USAGE, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (a.token == NULL || a.label == NULL || a.npos != 0) {
        cli_error("usage: p11noise keygen --token URI --label NAME");
        return 2;
    }
    p11n_set_pin_callback(tty_pin, NULL);
    uint8_t pub[P11N_PUBKEY_LEN];
    int err = p11n_token_keygen(a.token, a.label, pub);
    if (err != P11N_OK)
        return fail("keygen", err);
    printf("%s ", a.label);
    print_hex(pub, sizeof(pub));
    printf("\n");
    return 0;
}

/* PUBHEX, checked to be a point, into pub. Returns 0 or -1 after printing. */
static int parse_pubhex(const char *hex, uint8_t pub[P11N_PUBKEY_LEN])
{
    char line[2 * P11N_PUBKEY_LEN + 8];
    p11n_peer_entry *e = NULL;
    size_t n = 0, bad = 0;
    int ok = strlen(hex) == 2 * P11N_PUBKEY_LEN
        && snprintf(line, sizeof(line), "k %s\n", hex) < (int)sizeof(line)
        && p11n_peers_parse(line, strlen(line), &e, &n, &bad) == P11N_OK && n == 1;
    if (ok)
        memcpy(pub, e[0].pub, P11N_PUBKEY_LEN);
    else
        cli_error("pubkey: PUBHEX must be a compressed secp256k1 point in %d hex digits",
            2 * P11N_PUBKEY_LEN);
    free(e);
    return ok ? 0 : -1;
}

/* The public key of the --key URI into pub. Returns 0 or an exit status
 * after printing. */
static int load_public(const char *uri, uint8_t pub[P11N_PUBKEY_LEN])
{
    p11n_set_pin_callback(tty_pin, NULL);
    p11n_key *key = NULL;
    int err = p11n_key_load(uri, &key);
    if (err != P11N_OK && strncmp(uri, "file:", 5) == 0) {
        /* A file: URI holds no PIN: name it, readably. */
        char shown[512];
        p11n_uri_display(uri, shown, sizeof(shown));
        cli_error("pubkey: %s: %s", shown, p11n_strerror(err));
        return cli_exit_status(err);
    }
    if (err != P11N_OK)
        return fail("pubkey", err);
    size_t len = 0;
    err = p11n_key_public(key, pub, P11N_PUBKEY_LEN, &len);
    p11n_key_free(key);
    if (err != P11N_OK)
        return fail("pubkey", err);
    return 0;
}

int cmd_pubkey(int argc, char **argv)
{
    struct args a;
    int rc = parse_args(argc, argv, "kf", PUBKEY_USAGE, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    int forms_ok = a.key != NULL ? a.npos == 0 : a.fingerprint && a.npos == 1;
    if (!forms_ok) {
        cli_error("usage: p11noise pubkey --key URI [--fingerprint] | --fingerprint PUBHEX");
        return CLI_EXIT_USAGE;
    }
    uint8_t pub[P11N_PUBKEY_LEN];
    if (a.key == NULL && parse_pubhex(a.pos[0], pub) != 0)
        return CLI_EXIT_USAGE;
    if (a.key != NULL && (rc = load_public(a.key, pub)) != 0)
        return rc;
    char fp[CLI_FINGERPRINT_LEN];
    if (a.fingerprint && cli_fingerprint(pub, fp) != 0) {
        cli_error("pubkey: cannot hash the key");
        return CLI_EXIT_INTERNAL;
    }
    if (a.fingerprint)
        printf("%s\n", fp);
    else {
        print_hex(pub, P11N_PUBKEY_LEN);
        printf("\n");
    }
    return 0;
}

static int ceremony_import(const struct args *a)
{
    if (a->npos != 1) {
        cli_error("usage: p11noise ceremony import --token URI [--replace] FILE|-");
        return 2;
    }
    const char *path = a->pos[0];
    const char *name = strcmp(path, "-") == 0 ? "<stdin>" : path;
    size_t len = 0;
    char *text = cli_slurp(path, &len);
    if (text == NULL) {
        /* Not repeated when it could be a key URI given in its place. */
        const char *why = strerror(errno);
        char shown[CLI_SHOWN_MAX];
        cli_error("ceremony import: cannot read %s: %s", cli_shown(name, shown), why);
        return CLI_EXIT_USAGE;
    }
    p11n_peer_entry *entries = NULL;
    size_t n = 0, bad_line = 0, bad_index = 0;
    char why[160];
    int err = p11n_peers_parse_why(text, len, &entries, &n, &bad_line, why, sizeof(why));
    if (err != P11N_OK) {
        cli_error("ceremony import: %s:%zu: %s: %s; nothing imported", name, bad_line,
            p11n_strerror(err), why);
        free(text);
        return cli_exit_status(err);
    }
    err = p11n_ceremony_write(a->token, entries, n, a->replace, &bad_index);
    if (err != P11N_OK && bad_index < n) {
        const char *detail = p11n_token_last_error();
        cli_error("ceremony import: %s:%zu: %s; nothing imported%s", name,
            p11n_peers_line(text, len, bad_index),
            detail[0] != '\0' ? detail : p11n_strerror(err),
            err == P11N_ERR_PUBKEY_MISMATCH ? " (--replace replaces it)" : "");
    } else if (err != P11N_OK) {
        fail("ceremony import", err);
    }
    free(entries);
    free(text);
    return cli_exit_status(err);
}

static int ceremony_list(const struct args *a)
{
    if (a->npos != 0) {
        cli_error("usage: p11noise ceremony list --token URI");
        return 2;
    }
    p11n_peer_entry *e = NULL;
    p11n_ceremony_ignored *ig = NULL;
    size_t n = 0, nig = 0;
    int err = p11n_ceremony_scan(a->token, &e, &n, &ig, &nig);
    if (err != P11N_OK)
        return fail("ceremony list", err);
    for (size_t i = 0; i < n; i++) {
        printf("%s ", e[i].id);
        print_hex(e[i].pub, sizeof(e[i].pub));
        printf("\n");
    }
    fflush(stdout);
    /* Warnings, not failures: the trusted peers above are complete. The
     * identifier is escaped by the library, so it holds no control bytes. */
    for (size_t i = 0; i < nig; i++)
        fprintf(stderr, "ignored: %s: %s\n", ig[i].id, ig[i].reason);
    free(e);
    free(ig);
    return 0;
}

static int ceremony_remove(const struct args *a)
{
    if (a->npos != 1) {
        cli_error("usage: p11noise ceremony remove --token URI IDENTIFIER");
        return 2;
    }
    int err = p11n_ceremony_remove(a->token, a->pos[0]);
    if (err != P11N_OK)
        return fail("ceremony remove", err);
    return 0;
}

int cmd_ceremony(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(const struct args *);
        const char *opts;
    } subs[] = {
        { "import", ceremony_import, "tr" },
        { "list", ceremony_list, "t" },
        { "remove", ceremony_remove, "t" },
    };
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(CEREMONY_USAGE, stdout);
        return 0;
    }
    if (argc < 2) {
        cli_error("usage: p11noise ceremony import|list|remove --token URI ...");
        return 2;
    }
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[1], subs[i].name) != 0)
            continue;
        struct args a;
        int rc = parse_args(argc - 1, argv + 1, subs[i].opts, CEREMONY_USAGE, &a);
        if (rc != 0)
            return rc < 0 ? 0 : rc;
        if (a.token == NULL) {
            cli_error("ceremony %s: --token URI is required", subs[i].name);
            return 2;
        }
        p11n_set_pin_callback(tty_pin, NULL);
        return subs[i].fn(&a);
    }
    char shown[CLI_SHOWN_MAX];
    cli_error("ceremony: unknown subcommand %s (import, list or remove)",
        cli_shown(argv[1], shown));
    return 2;
}
