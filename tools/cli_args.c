/*
 * The option parser every subcommand shares, and the rule for repeating
 * command-line text in an error line.
 *
 * Whatever a user mistypes may be a secret typed right next to it: a key
 * URI with pin-value=, a proxy spec with USER:PASS@. So an error names the
 * option only, cut at its '=' and at the first character no option name
 * has, and never looks at the argument that follows.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* The longest option name repeated in an error line. */
#define NAME_MAX_SHOWN 40

void cli_parser_init(struct cli_parser *p, const char *cmd, int argc, char **argv,
    const struct cli_opt *opts)
{
    memset(p, 0, sizeof(*p));
    p->cmd = cmd;
    p->argc = argc;
    p->argv = argv;
    p->next = 1;
    p->opts = opts;
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '-' || c == '_';
}

/* The option name of `arg` as it may be printed: "--kye=pkcs11:..." and
 * "--kye:x" give "--kye"; a cut other than at '=' is marked with "...". */
static const char *shown_name(const char *arg, char buf[NAME_MAX_SHOWN + 4])
{
    size_t n = 0;
    while (n < NAME_MAX_SHOWN && name_char(arg[n]))
        n++;
    memcpy(buf, arg, n);
    strcpy(buf + n, arg[n] == '\0' || arg[n] == '=' ? "" : "...");
    return buf;
}

/* The table's entry named by `arg` up to `len` bytes, or NULL. */
static const struct cli_opt *lookup(const struct cli_opt *opts, const char *arg, size_t len)
{
    for (const struct cli_opt *o = opts; o->name != NULL; o++)
        if (strlen(o->name) == len && memcmp(o->name, arg, len) == 0)
            return o;
    return NULL;
}

int cli_next(struct cli_parser *p, const char **val)
{
    char name[NAME_MAX_SHOWN + 4];
    *val = NULL;
    p->opt = NULL;
    if (p->next >= p->argc)
        return CLI_END;
    const char *arg = p->argv[p->next++];
    if (p->only_args || arg[0] != '-' || arg[1] == '\0') {
        *val = arg;
        return CLI_ARG;
    }
    if (strcmp(arg, "--") == 0) {
        p->only_args = 1;
        return cli_next(p, val);
    }
    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)
        return CLI_HELP;
    const char *eq = strchr(arg, '=');
    const struct cli_opt *o = lookup(p->opts, arg, eq ? (size_t)(eq - arg) : strlen(arg));
    if (o == NULL) {
        cli_error("%s: unknown option '%s' (--help for usage)", p->cmd, shown_name(arg, name));
        return CLI_BAD;
    }
    if (!o->has_value && eq != NULL) {
        cli_error("%s: %s takes no value", p->cmd, o->name);
        return CLI_BAD;
    }
    if (o->has_value && eq != NULL) {
        *val = eq + 1;
    } else if (o->has_value) {
        if (p->next >= p->argc) {
            cli_error("%s: %s needs a value", p->cmd, o->name);
            return CLI_BAD;
        }
        *val = p->argv[p->next++];
    }
    p->opt = o;
    return o->id;
}

const char *cli_shown(const char *text, char buf[CLI_SHOWN_MAX])
{
    size_t n = strlen(text);
    int ok = n + 3 <= CLI_SHOWN_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        ok = c >= 0x20 && c < 0x7f && strchr("@=;?", c) == NULL;
    }
    if (ok)
        snprintf(buf, CLI_SHOWN_MAX, "'%s'", text);
    else
        snprintf(buf, CLI_SHOWN_MAX, "(not repeated: it may hold a secret)");
    return buf;
}

int cli_opts_known(const char *name, int *takes_value, void *opts)
{
    const struct cli_opt *o = lookup(opts, name, strlen(name));
    if (o != NULL)
        *takes_value = o->has_value;
    return o != NULL;
}
