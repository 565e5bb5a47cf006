#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bolt8case.h"
#include "testutil.h"
#include "../tools/vectors.h"

uint8_t *t_hex_field(json_t *obj, const char *field, size_t want)
{
    const char *s = json_string_value(json_object_get(obj, field));
    CU_ASSERT_FATAL(s != NULL);
    size_t n;
    uint8_t *p = t_unhex(s, &n);
    CU_ASSERT_FATAL(want == 0 || n == want);
    return p;
}

void t_bolt8_run_case(json_t *c, p11n_key *local, const uint8_t *ck,
    const uint8_t *initiator_pub)
{
    json_error_t jerr;
    json_t *root = json_load_file(t_vector_path("bolt8.json"), 0, &jerr);
    CU_ASSERT_FATAL(root != NULL);
    vec_bolt8_file f;
    vec_why why = { "" };
    CU_ASSERT_FATAL(vec_bolt8_file_init(&f, root, &why) == VEC_PASS);
    /* The caller's ck and initiator key, not only what the file offers. */
    memcpy(f.ck, ck, sizeof(f.ck));
    memcpy(f.initiator_pub, initiator_pub, sizeof(f.initiator_pub));
    f.has_ck = f.has_initiator_pub = 1;
    int result = vec_bolt8_run_case(&f, c, local, &why);
    if (result != VEC_PASS)
        fprintf(stderr, "bolt8 case '%s': %s\n",
            json_string_value(json_object_get(c, "name")),
            result == VEC_SKIP ? "skipped" : why.text);
    CU_ASSERT(result == VEC_PASS);
    json_decref(root);
}
