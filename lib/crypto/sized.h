/*
 * Structures that can grow (p11noise.h: the option structures and
 * p11n_handshake_config begin with their own size): one reader for all.
 */
#ifndef P11N_SIZED_H
#define P11N_SIZED_H

#include <stddef.h>

/* Copy the caller's option structure `src` (leading size_t size) into
 * dst, `known` bytes (the library's sizeof): fields the caller's size
 * leaves out are zero. Errors: INVALID_ARG (size under a size_t, or
 * non-zero bytes past `known`). */
int p11n_options_copy(void *dst, size_t known, const void *src);

#endif
