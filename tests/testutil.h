/* Shared helpers for the CUnit test programs. */
#ifndef P11N_TESTUTIL_H
#define P11N_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <CUnit/CUnit.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} p11n_test;

/* Run one suite of tests (NULL-terminated array) with CUnit's basic
 * interface; returns the process exit status (non-zero on any failure). */
int p11n_test_main(const char *suite, const p11n_test *tests);

/* Decode a hex string into a malloc'd buffer; aborts the test on bad hex. */
uint8_t *t_unhex(const char *hex, size_t *len);
/* Path of a vector file in tests/vectors (static buffer). */
const char *t_vector_path(const char *name);
/* Deterministic pseudo-random bytes for reproducible tests. */
void t_fill(uint8_t *p, size_t len, uint64_t *seed);
uint32_t t_rand(uint64_t *seed);

/* OpenSSL's allocations, counted and failed on demand through its
 * allocator hooks. t_hook_openssl_alloc() must run first thing in main,
 * before OpenSSL allocates anything; it returns 1 if the hooks are in.
 * When t_ossl_fail_countdown is non-zero, the allocation that brings it to
 * zero fails. */
extern unsigned long t_ossl_allocs;
extern unsigned long t_ossl_fail_countdown;
int t_hook_openssl_alloc(void);
/* What the hooks allocate with (malloc, realloc). A program that wraps
 * libc's allocator to count the library's own allocations in the same
 * countdown (tests/test_alloc.c) points them at the unwrapped functions,
 * so that an OpenSSL allocation is counted once. */
extern void *(*t_ossl_malloc_fn)(size_t);
extern void *(*t_ossl_realloc_fn)(void *, size_t);
/* Called (when set) as an allocation is made to fail, e.g. to record where. */
extern void (*t_ossl_on_fail)(void);

#endif
