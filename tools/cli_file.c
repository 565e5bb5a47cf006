/* Reading a whole text file: ceremony files, configuration files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The whole of a file, or of standard input for "-". */
char *cli_slurp(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *p = realloc(buf, cap * 2);
        if (p == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = p;
        cap *= 2;
    }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0'; /* the loop leaves n < cap */
    *len = n;
    return buf;
}
