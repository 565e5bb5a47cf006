/* The command line's option parser (tools/cli_args.c): what each argument
 * vector parses to, and that no error line holds a value. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "testutil.h"

/* The tool's cli_error, kept for checking instead of printed. */
static char last_error[512];

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

enum { O_KEY = 1, O_ECHO, O_V };
static const struct cli_opt opts[] = {
    { "--key", O_KEY, 1 }, { "--echo", O_ECHO, 0 }, { "-v", O_V, 0 }, { NULL, 0, 0 },
};

#define SECRET "pin-value=80417"
#define MAX_ARGS 6

/* Each row: the arguments after the command's name, and what cli_next
 * returns for them in turn as "ID:VALUE" ("A" an argument, "H" help, "B"
 * an error, VALUE "-" for none), with the error line expected to hold
 * `error` (or no error when NULL). */
static const struct {
    const char *what;
    const char *args[MAX_ARGS];
    const char *want;
    const char *error;
} rows[] = {
    { "value after a space", { "--key", "k1" }, "1:k1", NULL },
    { "value after =", { "--key=k1" }, "1:k1", NULL },
    { "empty value after =", { "--key=" }, "1:", NULL },
    { "value holding =", { "--key=pkcs11:a?pin-value=1" }, "1:pkcs11:a?pin-value=1", NULL },
    { "value starting with -", { "--key", "-x" }, "1:-x", NULL },
    { "flags and arguments in any order", { "a", "--echo", "-v", "b" }, "A:a 2:- 3:- A:b", NULL },
    { "- alone is an argument", { "-" }, "A:-", NULL },
    { "-- ends the options", { "--", "--echo", "-v" }, "A:--echo A:-v", NULL },
    { "help", { "x", "--help" }, "A:x H:-", NULL },
    { "-h", { "-h" }, "H:-", NULL },
    { "unknown --opt=secret: the name only", { "--kye=" SECRET }, "B:-", "'--kye'" },
    { "unknown --opt secret: not the next", { "--kye", SECRET }, "B:-", "'--kye'" },
    { "unknown -osecret: cut at the first odd byte", { "-kpkcs11:" SECRET }, "B:-",
        "'-kpkcs11...'" },
    { "a flag given a value", { "--echo=" SECRET }, "B:-", "--echo takes no value" },
    { "a short flag given a value", { "-v=" SECRET }, "B:-", "-v takes no value" },
    { "missing value", { "--echo", "--key" }, "2:- B:-", "--key needs a value" },
    { "a prefix is no abbreviation", { "--ke=" SECRET }, "B:-", "'--ke'" },
    { "a long name is cut", { "--aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }, "B:-",
        "'--aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'" },
};

/* What the parser makes of one row, in the `want` notation. */
static void run_row(size_t r, char *got, size_t cap)
{
    char *argv[MAX_ARGS + 1] = { "cmd" };
    int argc = 1;
    while (argc <= MAX_ARGS && rows[r].args[argc - 1] != NULL) {
        argv[argc] = (char *)rows[r].args[argc - 1];
        argc++;
    }
    struct cli_parser p;
    cli_parser_init(&p, "cmd", argc, argv, opts);
    last_error[0] = '\0';
    got[0] = '\0';
    const char *val;
    int id;
    while ((id = cli_next(&p, &val)) != CLI_END) {
        char one[128];
        snprintf(one, sizeof(one), "%s%c:%s", got[0] ? " " : "",
            id == CLI_ARG ? 'A' : id == CLI_HELP ? 'H' : id == CLI_BAD ? 'B' : '0' + id,
            val ? val : "-");
        strncat(got, one, cap - strlen(got) - 1);
        if (id == CLI_BAD || id == CLI_HELP)
            break;
    }
}

static void test_rows(void)
{
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        char got[512];
        run_row(r, got, sizeof(got));
        int ok = strcmp(got, rows[r].want) == 0 && strstr(last_error, SECRET) == NULL
            && strstr(last_error, "80417") == NULL
            && (rows[r].error ? strstr(last_error, rows[r].error) != NULL : !last_error[0]);
        if (!ok)
            fprintf(stderr, "%s: got \"%s\", error \"%s\"\n", rows[r].what, got, last_error);
        CU_ASSERT(ok);
    }
}

static void test_shown(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        { "127.0.0.1:99999", "'127.0.0.1:99999'" },
        { "[::1]:80", "'[::1]:80'" },
        { "peers file.txt", "'peers file.txt'" },
        { "user:pw@127.0.0.1:1080", NULL },
        { "pkcs11:token=t;object=k?pin-value=1234", NULL },
        { "a;b", NULL },
        { "a?b", NULL },
        { "\x1b[2J", NULL },
        { "caf\xc3\xa9", NULL },
    };
    char buf[CLI_SHOWN_MAX];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *want = cases[i].want ? cases[i].want : "(not repeated: it may hold a secret)";
        CU_ASSERT_STRING_EQUAL(cli_shown(cases[i].text, buf), want);
    }
    /* Too long to repeat whole: not repeated at all. */
    char long_text[CLI_SHOWN_MAX + 1];
    memset(long_text, 'a', CLI_SHOWN_MAX);
    long_text[CLI_SHOWN_MAX] = '\0';
    CU_ASSERT_STRING_EQUAL(cli_shown(long_text, buf), "(not repeated: it may hold a secret)");
}

int main(void)
{
    static const p11n_test tests[] = {
        { "argument vectors, table", test_rows },
        { "what an error line may repeat", test_shown },
        { NULL, NULL },
    };
    return p11n_test_main("cli_args", tests);
}
