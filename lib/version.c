/* The library's version, built from the header's macros so the two
 * cannot disagree; configure's version must match them too. */
#include <config.h>

#include "p11noise.h"

#define P11N_STR2(x) #x
#define P11N_STR(x) P11N_STR2(x)
#define P11N_VERSION_TEXT \
    P11N_STR(P11N_VERSION_MAJOR) "." P11N_STR(P11N_VERSION_MINOR) "." P11N_STR(P11N_VERSION_PATCH)

/* A release bumps configure.ac's AC_INIT and these macros together. */
_Static_assert(sizeof(PACKAGE_VERSION) == sizeof(P11N_VERSION_TEXT),
    "P11N_VERSION_* in p11noise.h disagree with AC_INIT's version");

const char *p11n_version(void)
{
    return P11N_VERSION_TEXT;
}
