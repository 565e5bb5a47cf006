/* The fault module is loaded by p11-kit on the library's behalf; its
 * counters are found in the already loaded copy (RTLD_NOLOAD). */
#include "faultutil.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "crypto.h"
#include "secure.h"

void t_token_new_key(const struct t_token *t, const char *label)
{
    uint8_t priv[32], pub[P11N_PUBKEY_LEN];
    if (p11n_dh_secp256k1.generate(priv, pub) != P11N_OK)
        abort();
    struct p11n_token *tok = t_token_open(t->uri);
    t_token_import_key(tok, label, priv, 1, 1);
    p11n_token_close(tok);
    p11n_wipe(priv, sizeof(priv));
}

p11n_key *t_fault_key(const struct t_token *t, const char *label, const char *fault)
{
    char uri[sizeof(t->fault_uri) + 64];
    snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s?module-path=%s&pin-value=" T_PIN,
        t->label, label, P11N_FAULT_MODULE);
    setenv("P11N_FAULT", fault, 1);
    p11n_key *k = NULL;
    int rc = p11n_key_load(uri, &k);
    unsetenv("P11N_FAULT");
    if (rc != P11N_OK) {
        fprintf(stderr, "cannot load %s through faultmod: %s\n", label, p11n_strerror(rc));
        abort();
    }
    return k;
}

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
