/*
 * --config FILE: options of `listen`, `connect` and `tunnel` and the
 * library's limits in "key = value" lines (doc/p11noise.conf.5).
 *
 * A command's option "--name VALUE" is the line "name = VALUE"; a flag
 * is "name = yes" (or no); `-v` is "verbose". The file's options are put
 * before the command line's, so that the one parser reads both and the
 * command line wins where an option is given once (a repeated option such
 * as --peer adds to the file's). The library's limits have no option and
 * go straight into struct cli_limits. Every line is checked before
 * anything is used: an unknown key or a bad value is an error naming the
 * line.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* How a limit's value is stored. */
enum { L_UINT, L_SIZE, L_OR_OFF /* an int; "off" is -1 */ };

#define LIM(field) offsetof(struct cli_limits, field)

/* The library's limits (p11n_ctx_options): the file's key, the command
 * line's option (the key without its unit), where the value goes, and
 * the most accepted. */
static const struct {
    const char *key;
    const char *opt;
    size_t off;                   /* into struct cli_limits */
    int kind;
    unsigned long long max;
} limits[] = {
    { "max_handshakes", "--max-handshakes", LIM(max_handshakes), L_UINT, 1000000 },
    { "max_token_ops", "--max-token-ops", LIM(max_token_ops), L_UINT, 1000000 },
    { "workers", "--workers", LIM(workers), L_UINT, 64 },
    { "act_timeout_ms", "--act-timeout", LIM(act_timeout_ms), L_UINT, 3600000 },
    { "connect_timeout_ms", "--connect-timeout", LIM(connect_timeout_ms), L_UINT, 3600000 },
    { "idle_timeout_ms", "--idle-timeout", LIM(idle_timeout_ms), L_UINT, 86400000 },
    { "write_high_water", "--write-high-water", LIM(write_high_water), L_SIZE, 1ULL << 30 },
    { "act1_timeout_ms", "--act1-timeout", LIM(act1_timeout_ms), L_UINT, 3600000 },
    { "max_unauth_token_ops", "--max-unauth-token-ops", LIM(max_unauth_token_ops), L_UINT,
        1000000 },
    { "unauth_workers", "--unauth-workers", LIM(unauth_workers), L_UINT, 64 },
    { "max_established", "--max-established", LIM(max_established), L_UINT, 10000000 },
    /* The kernel's own bounds (Linux: TCP_KEEPIDLE and TCP_KEEPINTVL up
     * to 32767 s, TCP_KEEPCNT up to 127). */
    { "keepalive_idle_s", "--keepalive-idle", LIM(keepalive_idle_s), L_OR_OFF, 32767 },
    { "keepalive_interval_s", "--keepalive-interval", LIM(keepalive_interval_s), L_UINT,
        32767 },
    { "keepalive_count", "--keepalive-count", LIM(keepalive_count), L_UINT, 127 },
    { "log_refusals_per_s", "--log-refusals-per-s", LIM(log_refusals_per_s), L_UINT, 100000 },
    { "stall_timeout_ms", "--stall-timeout", LIM(stall_timeout_ms), L_UINT, 86400000 },
};

static const struct {
    const char *word;
    int yes;
} bools[] = {
    { "yes", 1 }, { "true", 1 }, { "1", 1 }, { "no", 0 }, { "false", 0 }, { "0", 0 },
};

static const char *const log_levels[] = { "", "error", "warn", "info", "debug" };

/* The arguments made from the file, and the argument vectors made of
 * them, freed by cli_config_free only: after a reload the options of the
 * first reading may still be in use. */
static char **made;
static size_t nmade;
static char ***argvs;
static size_t nargvs;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\r", s[n - 1]) != NULL)
        s[--n] = '\0';
    return s;
}

static int add_arg(const char *a, const char *b)
{
    char **m = realloc(made, (nmade + 1) * sizeof(*m));
    if (m == NULL)
        return -1;
    made = m;
    size_t len = strlen(a) + strlen(b) + 1;
    if ((made[nmade] = malloc(len)) == NULL)
        return -1;
    snprintf(made[nmade++], len, "%s%s", a, b);
    return 0;
}

/* limits[i] = val, or an error naming `name` (the key or the option) in
 * `why`. */
static void set_value(size_t i, const char *name, const char *val, struct cli_limits *lim,
    char *why, size_t cap)
{
    char *at = (char *)lim + limits[i].off;
    if (limits[i].kind == L_OR_OFF && strcmp(val, "off") == 0) {
        *(int *)(void *)at = -1;
        return;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(val, &end, 10);
    if (val[0] < '0' || val[0] > '9' || *end != '\0' || errno != 0 || v == 0
        || v > limits[i].max)
        snprintf(why, cap, "%s wants a whole number from 1 to %llu%s", name, limits[i].max,
            limits[i].kind == L_OR_OFF ? ", or off" : "");
    else if (limits[i].kind == L_SIZE)
        *(size_t *)(void *)at = (size_t)v;
    else if (limits[i].kind == L_OR_OFF)
        *(int *)(void *)at = (int)v;
    else
        *(unsigned *)(void *)at = (unsigned)v;
}

/* A library limit or the log level: 1 if `key` is one (then set, or an
 * error in `why`), 0 if not. */
static int set_limit(const char *key, const char *val, struct cli_limits *lim, char *why,
    size_t cap)
{
    if (strcmp(key, "log_level") == 0) {
        for (int i = 1; i <= 4; i++)
            if (strcmp(val, log_levels[i]) == 0) {
                lim->log_level = i;
                return 1;
            }
        snprintf(why, cap, "log_level must be error, warn, info or debug");
        return 1;
    }
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        if (strcmp(key, limits[i].key) == 0) {
            set_value(i, key, val, lim, why, cap);
            return 1;
        }
    }
    return 0;
}

/* One "key = value" line. Returns 0, or -1 with `why`. */
static int one_line(char *line, const struct cli_config_opts *co, struct cli_limits *lim,
    char *why, size_t cap)
{
    char *eq = strchr(line, '=');
    if (eq == NULL) {
        snprintf(why, cap, "\"key = value\" expected");
        return -1;
    }
    *eq = '\0';
    char *key = trim(line), *val = trim(eq + 1);
    /* Keys are written with '_' (log_format); '-' is accepted too. */
    for (char *k = key; *k; k++)
        *k = *k == '-' ? '_' : *k;
    why[0] = '\0';
    if (set_limit(key, val, lim, why, cap))
        return why[0] ? -1 : 0;
    char name[80];
    snprintf(name, sizeof(name), strcmp(key, "verbose") == 0 ? "-v" : "--%s", key);
    for (char *k = name; *k; k++)
        *k = *k == '_' ? '-' : *k;
    int takes_value = 0;
    if (key[0] == '\0' || strcmp(key, "config") == 0 || !co->known(name, &takes_value, co->arg)) {
        char shown[CLI_SHOWN_MAX];
        snprintf(why, cap, "unknown key %s for %s", cli_shown(key, shown), co->cmd);
        return -1;
    }
    if (!takes_value) {
        int yes = -1;
        for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++)
            if (strcmp(val, bools[i].word) == 0)
                yes = bools[i].yes;
        if (yes < 0)
            snprintf(why, cap, "%s wants yes or no", key);
        else if (yes && add_arg(name, "") != 0)
            snprintf(why, cap, "out of memory");
        return why[0] ? -1 : 0;
    }
    if (val[0] == '\0') {
        snprintf(why, cap, "%s needs a value", key);
        return -1;
    }
    /* "--name=VALUE": one argument, so that a value starting with '-'
     * stays a value. */
    strncat(name, "=", sizeof(name) - strlen(name) - 1);
    if (add_arg(name, val) != 0) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    return 0;
}

/* Where --config is in argv (its index; *path its value), or 0. */
static int find_config(int argc, char **argv, const char **path)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return 0;
        if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
            return i;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            *path = argv[i + 1];
            return i;
        }
    }
    return 0;
}

/* A new argument vector of up to n arguments and its NULL, freed by
 * cli_config_free; NULL (after printing) when out of memory. */
static char **new_argv(const char *cmd, size_t n)
{
    char **nv = malloc((n + 1) * sizeof(*nv));
    char ***av = realloc(argvs, (nargvs + 1) * sizeof(*av));
    if (av != NULL)
        argvs = av;
    if (nv == NULL || av == NULL) {
        free(nv);
        cli_error("%s: out of memory", cmd);
        return NULL;
    }
    argvs[nargvs++] = nv;
    return nv;
}

/* --config FILE, when given: the limits into *lim, the options into a
 * new *argv. Returns 0 or an exit status after printing. */
static int read_config(const struct cli_config_opts *co, int *argc, char ***argv,
    struct cli_limits *lim)
{
    size_t from = nmade;          /* this reading's first argument */
    const char *path = NULL;
    int at = find_config(*argc, *argv, &path);
    if (at == 0)
        return 0;
    int width = strchr((*argv)[at], '=') != NULL ? 1 : 2;
    size_t len = 0;
    char *text = cli_slurp(path, &len), shown[CLI_SHOWN_MAX];
    if (text == NULL) {
        cli_error("%s: --config %s: %s", co->cmd, cli_shown(path, shown), strerror(errno));
        return CLI_EXIT_USAGE;
    }
    char why[200];
    size_t lineno = 0;
    int bad = memchr(text, '\0', len) != NULL;
    if (bad)
        snprintf(why, sizeof(why), "a NUL byte: not a text file");
    for (char *line = text, *next; !bad && line < text + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        next = nl ? nl + 1 : text + len;
        if (nl != NULL)
            *nl = '\0';
        lineno++;
        char *t = trim(line);
        if (t[0] == '#' || t[0] == '\0')
            continue;
        bad = one_line(t, co, lim, why, sizeof(why)) != 0;
    }
    free(text);
    if (bad) {
        cli_error("%s: --config %s: line %zu: %s", co->cmd, cli_shown(path, shown), lineno, why);
        return CLI_EXIT_USAGE;
    }
    /* argv[0], the file's options, then the command line without --config. */
    char **nv = new_argv(co->cmd, (size_t)*argc + nmade - from);
    if (nv == NULL)
        return CLI_EXIT_INTERNAL;
    size_t n = 0;
    nv[n++] = (*argv)[0];
    for (size_t i = from; i < nmade; i++)
        nv[n++] = made[i];
    for (int i = 1; i < *argc; i++)
        if (i < at || i >= at + width)
            nv[n++] = (*argv)[i];
    nv[n] = NULL;
    *argc = (int)n;
    *argv = nv;
    return 0;
}

/* The limit named by the command-line argument `arg` ("--workers" or
 * "--workers=4"), or -1. */
static int limit_option(const char *arg)
{
    size_t len = strcspn(arg, "=");
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++)
        if (strlen(limits[i].opt) == len && strncmp(arg, limits[i].opt, len) == 0)
            return (int)i;
    return -1;
}

/* av[*i] is limits[k]'s option: its value (after '=' or the next
 * argument) into *lim. Returns 0 or an exit status after printing. */
static int take_one(const struct cli_config_opts *co, int k, char **av, int argc, int *i,
    struct cli_limits *lim)
{
    const char *eq = strchr(av[*i], '='), *val = eq ? eq + 1 : NULL;
    if (val == NULL && *i + 1 >= argc) {
        cli_error("%s: %s needs a value", co->cmd, limits[k].opt);
        return CLI_EXIT_USAGE;
    }
    if (val == NULL)
        val = av[++*i];
    char why[200] = "";
    set_value((size_t)k, limits[k].opt, val, lim, why, sizeof(why));
    if (why[0] == '\0')
        return 0;
    cli_error("%s: %s", co->cmd, why);
    return CLI_EXIT_USAGE;
}

/* The limits given as options: set in *lim (over the file's) and taken
 * out of *argv, so that each command's parser sees only its own. A
 * value-taking option's value is skipped, so "--prologue --workers" is
 * a prologue. Returns 0 or an exit status after printing. */
static int take_limit_options(const struct cli_config_opts *co, int *argc, char ***argv,
    struct cli_limits *lim)
{
    char **av = *argv;
    char **nv = new_argv(co->cmd, (size_t)*argc);
    if (nv == NULL)
        return CLI_EXIT_INTERNAL;
    int n = 0, rc = 0, taken = 0;
    nv[n++] = av[0];
    for (int i = 1; i < *argc && rc == 0; i++) {
        if (strcmp(av[i], "--") == 0) {  /* the rest are arguments */
            while (i < *argc)
                nv[n++] = av[i++];
            break;
        }
        /* A command's own option of the same name stays the command's
         * (tunnel server --connect-timeout). */
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(av[i], "="), av[i]);
        int k = limit_option(av[i]), takes = 0;
        if (k >= 0 && !co->known(name, &takes, co->arg)) {
            rc = take_one(co, k, av, *argc, &i, lim);
            taken = 1;
            continue;
        }
        nv[n++] = av[i];
        if (strchr(av[i], '=') == NULL && co->known(av[i], &takes, co->arg) && takes
            && i + 1 < *argc)
            nv[n++] = av[++i];
    }
    nv[n] = NULL;
    if (rc == 0 && taken) {
        *argc = n;
        *argv = nv;
    }
    return rc;
}

int cli_config_apply(const struct cli_config_opts *co, int *argc, char ***argv,
    struct cli_limits *lim)
{
    memset(lim, 0, sizeof(*lim));
    int rc = read_config(co, argc, argv, lim);
    return rc != 0 ? rc : take_limit_options(co, argc, argv, lim);
}

void cli_config_free(void)
{
    for (size_t i = 0; i < nmade; i++)
        free(made[i]);
    free(made);
    for (size_t i = 0; i < nargvs; i++)
        free(argvs[i]);
    free(argvs);
    argvs = NULL;
    nargvs = 0;
    made = NULL;
    nmade = 0;
}

void cli_limits_apply(const struct cli_limits *lim, p11n_ctx_options *o)
{
    o->max_handshakes = lim->max_handshakes;
    o->max_token_ops = lim->max_token_ops;
    o->workers = lim->workers;
    o->act_timeout_ms = lim->act_timeout_ms;
    o->connect_timeout_ms = lim->connect_timeout_ms;
    o->idle_timeout_ms = lim->idle_timeout_ms;
    o->write_high_water = lim->write_high_water;
    o->act1_timeout_ms = lim->act1_timeout_ms;
    o->max_unauth_token_ops = lim->max_unauth_token_ops;
    o->unauth_workers = lim->unauth_workers;
    o->max_established = lim->max_established;
    o->keepalive_idle_s = lim->keepalive_idle_s;
    o->keepalive_interval_s = lim->keepalive_interval_s;
    o->keepalive_count = lim->keepalive_count;
    o->log_refusals_per_s = lim->log_refusals_per_s;
    o->stall_timeout_ms = lim->stall_timeout_ms;
}
