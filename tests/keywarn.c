/*
 * Prints what the library says about a key, so that tests/cli.sh can
 * check that the command line repeats it exactly once:
 *
 *   keywarn KEY_URI [dev]
 *
 * prints p11n_key_warning() of the key loaded with p11n_key_load_ex()
 * ("dev": with P11N_KEY_DEV_ALLOW_EXTRACTABLE), or nothing when there is
 * none. Exits 1 if the key does not load.
 */
#include <stdio.h>
#include <string.h>

#include "p11noise.h"

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: keywarn KEY_URI [dev]\n");
        return 2;
    }
    unsigned flags = argc == 3 && strcmp(argv[2], "dev") == 0 ? P11N_KEY_DEV_ALLOW_EXTRACTABLE : 0;
    p11n_key *key = NULL;
    int rc = p11n_key_load_ex(argv[1], flags, &key);
    if (rc != P11N_OK) {
        fprintf(stderr, "keywarn: %s\n", p11n_strerror(rc));
        return 1;
    }
    if (p11n_key_warning(key) != NULL)
        printf("%s\n", p11n_key_warning(key));
    p11n_key_free(key);
    return 0;
}
