/* What the public API's memory rules need: reading an option structure
 * that can grow (p11noise.h, before P11N_CTX_OPTIONS_INIT), and
 * p11n_free for the arrays the library returns. */
#include "net.h"

#include <stdlib.h>
#include <string.h>

void p11n_free(void *p)
{
    free(p);
}

int p11n_options_copy(void *dst, size_t known, const void *src)
{
    size_t size;
    memcpy(&size, src, sizeof(size));
    if (size < sizeof(size_t))
        return P11N_ERR_INVALID_ARG;  /* 0: not made with the _INIT macro */
    /* A newer caller: what this library does not know must be unused. */
    const unsigned char *extra = (const unsigned char *)src;
    for (size_t i = known; i < size; i++)
        if (extra[i] != 0)
            return P11N_ERR_INVALID_ARG;
    memset(dst, 0, known);
    memcpy(dst, src, size < known ? size : known);
    memcpy(dst, &known, sizeof(known));
    return P11N_OK;
}
