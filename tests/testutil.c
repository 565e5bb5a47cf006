#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <CUnit/Basic.h>
#include <openssl/crypto.h>

#include "crypto.h"

int p11n_test_main(const char *suite, const p11n_test *tests)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite(suite, NULL, NULL);
    if (s == NULL)
        return 2;
    for (const p11n_test *t = tests; t->name != NULL; t++)
        if (CU_add_test(s, t->name, t->fn) == NULL)
            return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned run = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    return (failed == 0 && run > 0) ? 0 : 1;
}

/* The library's own decoder: tests may use internals (the p11noise tool,
 * limited to the public API, keeps its own). */
uint8_t *t_unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex);
    uint8_t *out = malloc(n / 2 + 1);
    if (out == NULL)
        abort();
    if (n % 2 != 0 || p11n_hex_decode(hex, n, out, n / 2) != P11N_OK) {
        fprintf(stderr, "bad hex: %s\n", hex);
        abort();
    }
    *len = n / 2;
    return out;
}

const char *t_vector_path(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof(buf), "%s/%s", P11N_TEST_VECTORS, name);
    return buf;
}

uint32_t t_rand(uint64_t *seed)
{
    /* xorshift64*: reproducible, not for keys */
    uint64_t x = *seed;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *seed = x;
    return (uint32_t)((x * 2685821657736338717ULL) >> 32);
}

void t_fill(uint8_t *p, size_t len, uint64_t *seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)t_rand(seed);
}

unsigned long t_ossl_allocs;
unsigned long t_ossl_fail_countdown;
void *(*t_ossl_malloc_fn)(size_t) = malloc;
void *(*t_ossl_realloc_fn)(void *, size_t) = realloc;

void (*t_ossl_on_fail)(void);

static int injected_failure(void)
{
    if (t_ossl_fail_countdown == 0 || --t_ossl_fail_countdown != 0)
        return 0;
    if (t_ossl_on_fail != NULL)
        t_ossl_on_fail();
    return 1;
}

static void *count_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    t_ossl_allocs++;
    return injected_failure() ? NULL : t_ossl_malloc_fn(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    t_ossl_allocs++;
    return injected_failure() ? NULL : t_ossl_realloc_fn(p, n);
}

static void count_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

int t_hook_openssl_alloc(void)
{
    return CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free);
}
