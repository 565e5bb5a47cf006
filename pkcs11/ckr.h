/*
 * PKCS#11 return values: their names (for messages and for the fault
 * module's configuration) and the library error each one maps to.
 */
#ifndef P11N_CKR_H
#define P11N_CKR_H

#include <p11-kit/pkcs11.h>

/* "CKR_PIN_INCORRECT", or NULL for a value not in the table. */
const char *p11n_ckr_name(CK_RV rv);

/* Value of a CKR_ name; 0 if found, -1 if unknown. */
int p11n_ckr_value(const char *name, size_t len, CK_RV *rv);

/* The p11n_err a failed call maps to (P11N_ERR_TOKEN when nothing more
 * specific applies). */
int p11n_ckr_err(CK_RV rv);

/* 1 if the session is unusable after this error and must be closed. */
int p11n_ckr_session_dead(CK_RV rv);

/* 1 if the token has lost our sessions, login or object handles (pulled
 * out and put back, restarted, or a forked child): reopen and retry. */
int p11n_ckr_lost(CK_RV rv);

#endif
