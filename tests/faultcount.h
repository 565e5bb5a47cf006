/* Live call counts of tests/faultmod.so while the library uses it. */
#ifndef P11N_TEST_FAULTCOUNT_H
#define P11N_TEST_FAULTCOUNT_H

/* Calls of the PKCS#11 function `name` ("C_DeriveKey") through the fault
 * module since its last C_Initialize. Aborts the test program if the
 * module is not loaded. */
unsigned long t_fault_calls(const char *name);

#endif
