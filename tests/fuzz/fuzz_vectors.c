/* Fuzz the vector-file reader of `p11noise vectors` (tools/cmd_vectors.c,
 * linked as it is): the input is written to a file and the command runs
 * on it, so the JSON reader, both formats (cacophony/snow and BOLT #8)
 * and every case runner see it as a user's file.
 *
 * Checks besides memory safety: the command ends with 0 (all passed or
 * skipped) or 1 (something failed), never with anything else, for any
 * file. The committed seeds are the repository's vector files, cut to a
 * few cases each, so they run green; the repository's whole files are
 * run by `make check` (tests/vectors.sh). */
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int cmd_vectors(int argc, char **argv);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

/* The tool's main() owns this; the harness discards what it would print. */
void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
}

static char path[64];

static void setup(void)
{
    snprintf(path, sizeof(path), "/tmp/p11n-fuzz-vectors-%ld.json", (long)getpid());
    /* One line per failed case on stdout: not wanted while fuzzing. */
    CHECK(freopen("/dev/null", "w", stdout) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (path[0] == '\0')
        setup();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
    CHECK(close(fd) == 0);
    char *argv[] = { (char *)"vectors", path, NULL };
    int rc = cmd_vectors(2, argv);
    CHECK(rc == 0 || rc == 1);
    unlink(path);
    return 0;
}
