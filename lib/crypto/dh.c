/* The DH table: lookup of the DH functions by their Noise names. */
#include <string.h>

#include "crypto.h"

static const p11n_dh_alg *const dhs[] = {
    &p11n_dh_secp256k1, &p11n_dh_25519, &p11n_dh_448,
};

const p11n_dh_alg *p11n_dh_by_name(const char *name, size_t len)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(dhs) / sizeof(dhs[0]); i++)
        if (strlen(dhs[i]->name) == len && memcmp(dhs[i]->name, name, len) == 0)
            return dhs[i];
    return NULL;
}
