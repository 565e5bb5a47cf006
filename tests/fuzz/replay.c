/* Stand-in for libFuzzer's main() in ordinary builds: runs every file of
 * the given corpus directories (or files) through LLVMFuzzerTestOneInput
 * once. With no arguments it replays the harness's own seed corpus
 * (P11N_FUZZ_CORPUS, set by the build), so `make check` needs no flags.
 *
 * Each input gets a heap buffer of exactly its size, so that the
 * sanitizers of the normal build catch a harness reading past the end. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0) {
        fprintf(stderr, "%s: cannot stat\n", path);
        fclose(f);
        return -1;
    }
    size_t size = (size_t)sb.st_size;
    uint8_t *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL || fread(buf, 1, size, f) != size) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, size);
    free(buf);
    return 0;
}

/* Replay a file, or every regular file in a directory; returns the
 * number of inputs run, or -1 on error. */
static long replay_path(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode))
        return replay_file(path) == 0 ? 1 : -1;

    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    long count = 0;
    for (int i = 0; i < n; i++) {
        char full[4096];
        if (count >= 0 && names[i]->d_name[0] != '.'
            && snprintf(full, sizeof(full), "%s/%s", path, names[i]->d_name) < (int)sizeof(full)
            && stat(full, &sb) == 0 && S_ISREG(sb.st_mode))
            count = replay_file(full) == 0 ? count + 1 : -1;
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
#ifdef P11N_FUZZ_CORPUS
    static char *fallback[] = { NULL, (char *)P11N_FUZZ_CORPUS, NULL };
    if (argc < 2) {
        fallback[0] = argv[0];
        argv = fallback;
        argc = 2;
    }
#endif
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    long total = 0;
    for (int i = 1; i < argc; i++) {
        long n = replay_path(argv[i]);
        if (n < 0)
            return 1;
        total += n;
    }
    /* An empty corpus would make the check pass without testing anything. */
    if (total == 0) {
        fprintf(stderr, "%s: no inputs found\n", argv[0]);
        return 1;
    }
    printf("%s: %ld inputs replayed\n", argv[0], total);
    return 0;
}
