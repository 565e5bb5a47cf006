/* p11n_free for the arrays the library returns (p11noise.h). Option
 * structures that can grow are read by p11n_options_copy (lib/util.c). */
#include "net.h"

#include <stdlib.h>

void p11n_free(void *p)
{
    free(p);
}
