/* The fault module is loaded by p11-kit on the library's behalf; its
 * counters are found in the already loaded copy (RTLD_NOLOAD). */
#include "faultcount.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

unsigned long t_fault_calls(const char *name)
{
    void *dl = dlopen(P11N_FAULT_MODULE, RTLD_NOW | RTLD_NOLOAD);
    unsigned long (*calls)(const char *) =
        dl != NULL ? (unsigned long (*)(const char *))dlsym(dl, "faultmod_calls") : NULL;
    if (calls == NULL) {
        fprintf(stderr, "faultmod is not loaded, or has no faultmod_calls\n");
        abort();
    }
    unsigned long n = calls(name);
    dlclose(dl);
    return n;
}
