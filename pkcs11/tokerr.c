/* The thread's last token error, as one line naming the URI (never a PIN)
 * and the failing call: what the CLI and the event loop's log print. */
#include <stdarg.h>
#include <stdio.h>

#include "ckr.h"
#include "token.h"

static _Thread_local char last_error[512];

const char *p11n_token_last_error(void)
{
    return last_error;
}

void p11n_token_error_clear(void)
{
    last_error[0] = '\0';
}

int p11n_token_errorf(int err, const char *uri, const char *fmt, ...)
{
    size_t off = 0;
    if (uri != NULL) {
        int n = snprintf(last_error, sizeof(last_error), "%s: ", uri);
        off = n < 0 ? 0 : (size_t)n < sizeof(last_error) ? (size_t)n : sizeof(last_error) - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error + off, sizeof(last_error) - off, fmt, ap);
    va_end(ap);
    return err;
}

int p11n_token_fail(const struct p11n_token *tok, const char *call, CK_RV rv)
{
    int err = p11n_ckr_err(rv);
    if (err == P11N_OK)     /* a success code used as a failure */
        err = P11N_ERR_TOKEN;
    const char *name = p11n_ckr_name(rv);
    if (name != NULL)
        return p11n_token_errorf(err, tok->uri, "%s: %s (%s)", call, p11n_strerror(err), name);
    return p11n_token_errorf(err, tok->uri, "%s: %s (CKR 0x%lx)", call, p11n_strerror(err),
        (unsigned long)rv);
}
