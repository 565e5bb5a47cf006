/* Finding the token a URI names, logging in, and the session pool. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckr.h"
#include "secure.h"
#include "token.h"

#define P11N_PIN_MAX 256

/* p11-kit gives each caller its own managed instance of a module, so our
 * C_Initialize/C_Finalize never disturb other users of the same module in
 * the process. OS locking: several worker threads share one instance. */
static CK_RV init_module(CK_FUNCTION_LIST *fn)
{
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    return fn->C_Initialize(&args);
}

/* Count the initialized tokens of one module that match the URI; the
 * first is kept in *slot. */
static int scan_module(CK_FUNCTION_LIST *fn, P11KitUri *uri, size_t *nmatch, CK_SLOT_ID *slot)
{
    CK_INFO info;
    if (fn->C_GetInfo(&info) != CKR_OK || !p11_kit_uri_match_module_info(uri, &info))
        return P11N_OK;
    CK_ULONG n = 0;
    CK_RV rv = fn->C_GetSlotList(CK_TRUE, NULL, &n);
    if (rv != CKR_OK || n == 0)
        return P11N_OK;
    CK_SLOT_ID *slots = calloc(n, sizeof(*slots));
    if (slots == NULL)
        return P11N_ERR_NOMEM;
    rv = fn->C_GetSlotList(CK_TRUE, slots, &n);
    CK_SLOT_ID want = p11_kit_uri_get_slot_id(uri);
    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
        CK_SLOT_INFO si;
        CK_TOKEN_INFO ti;
        if (want != (CK_SLOT_ID)-1 && slots[i] != want)
            continue;
        if (fn->C_GetSlotInfo(slots[i], &si) != CKR_OK || !p11_kit_uri_match_slot_info(uri, &si))
            continue;
        if (fn->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue;
        /* Uninitialized tokens (SoftHSM always shows one) hold no keys. */
        if (!(ti.flags & CKF_TOKEN_INITIALIZED) || !p11_kit_uri_match_token_info(uri, &ti))
            continue;
        if ((*nmatch)++ == 0)
            *slot = slots[i];
    }
    free(slots);
    return P11N_OK;
}

static int match_count_error(size_t nmatch, const char *safe)
{
    if (nmatch == 0)
        return p11n_token_errorf(P11N_ERR_TOKEN_NOT_FOUND, safe,
            "no initialized token matches this URI");
    return p11n_token_errorf(P11N_ERR_URI, safe,
        "%zu tokens match this URI: add token= or serial= to name one", nmatch);
}

static int open_by_path(struct p11n_token *tok, P11KitUri *uri, const char *path)
{
    CK_FUNCTION_LIST *fn = p11_kit_module_load(path, 0);
    if (fn == NULL)
        return p11n_token_errorf(P11N_ERR_MODULE, tok->uri, "cannot load module %s: %s", path,
            p11_kit_message() ? p11_kit_message() : "unknown reason");
    CK_RV rv = init_module(fn);
    if (rv != CKR_OK) {
        p11_kit_module_release(fn);
        const char *name = p11n_ckr_name(rv);
        return p11n_token_errorf(P11N_ERR_MODULE, tok->uri, "C_Initialize of %s failed (%s)",
            path, name ? name : "unknown CKR");
    }
    size_t nmatch = 0;
    int err = scan_module(fn, uri, &nmatch, &tok->slot);
    if (err == P11N_OK && nmatch != 1)
        err = match_count_error(nmatch, tok->uri);
    if (err != P11N_OK) {
        fn->C_Finalize(NULL);
        p11_kit_module_release(fn);
        return err;
    }
    tok->fn = fn;
    return P11N_OK;
}

/* Without module-path: every module in p11-kit's configuration (or the one
 * named by module-name), keeping the one that holds the token. */
static int open_configured(struct p11n_token *tok, P11KitUri *uri, const char *name)
{
    CK_FUNCTION_LIST **mods = p11_kit_modules_load(NULL, 0);
    if (mods == NULL)
        return p11n_token_errorf(P11N_ERR_MODULE, tok->uri,
            "cannot load p11-kit's configured modules: %s",
            p11_kit_message() ? p11_kit_message() : "unknown reason");
    size_t nmods = 0;
    while (mods[nmods] != NULL)
        nmods++;
    unsigned char *inited = calloc(nmods + 1, 1);
    if (inited == NULL) {
        p11_kit_modules_release(mods);
        return P11N_ERR_NOMEM;
    }
    size_t nmatch = 0, keep = 0, named = 0;
    int err = P11N_OK;
    for (size_t i = 0; i < nmods && err == P11N_OK; i++) {
        if (name != NULL) {
            char *mname = p11_kit_module_get_name(mods[i]);
            int same = mname != NULL && strcmp(mname, name) == 0;
            free(mname);
            if (!same)
                continue;
            named++;
        }
        /* A configured module that fails to start (no reader, no daemon)
         * cannot hold the token: skip it, unless it was asked for by name. */
        CK_RV rv = init_module(mods[i]);
        if (rv != CKR_OK && name != NULL) {
            const char *ckr = p11n_ckr_name(rv);
            err = p11n_token_errorf(P11N_ERR_MODULE, tok->uri, "C_Initialize of %s failed (%s)",
                name, ckr ? ckr : "unknown CKR");
        }
        if (rv != CKR_OK)
            continue;
        inited[i] = 1;
        size_t before = nmatch;
        CK_SLOT_ID slot = 0;
        err = scan_module(mods[i], uri, &nmatch, &slot);
        if (before == 0 && nmatch > 0) {
            keep = i;
            tok->slot = slot;
        }
    }
    if (err == P11N_OK && name != NULL && named == 0)
        err = p11n_token_errorf(P11N_ERR_MODULE, tok->uri,
            "p11-kit has no module named %s", name);
    else if (err == P11N_OK && nmatch != 1)
        err = match_count_error(nmatch, tok->uri);
    for (size_t i = 0; i < nmods; i++)
        if (inited[i] && (err != P11N_OK || i != keep))
            mods[i]->C_Finalize(NULL);
    if (err == P11N_OK) {
        tok->fn = mods[keep];
        /* Release all but the kept module: take it out of the list. */
        memmove(&mods[keep], &mods[keep + 1], (nmods - keep) * sizeof(*mods));
    }
    free(inited);
    p11_kit_modules_release(mods);
    return err;
}

static int login(struct p11n_token *tok, P11KitUri *uri)
{
    CK_SESSION_INFO si;
    CK_RV rv = tok->fn->C_GetSessionInfo(tok->anchor, &si);
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_GetSessionInfo", rv);
    /* Login state is shared by the application's sessions: another handle
     * on this token may have logged in already. */
    if (si.state == CKS_RO_USER_FUNCTIONS || si.state == CKS_RW_USER_FUNCTIONS)
        return P11N_OK;
    CK_TOKEN_INFO ti;
    rv = tok->fn->C_GetTokenInfo(tok->slot, &ti);
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_GetTokenInfo", rv);
    /* A hardware token locks its PIN after a few wrong tries: never spend
     * the last one, even with a PIN we believe right. */
    if (ti.flags & CKF_USER_PIN_LOCKED)
        return p11n_token_errorf(P11N_ERR_PIN_LOCKED, tok->uri,
            "%s: the token reports its user PIN locked; unlock it with the token's own tools",
            p11n_strerror(P11N_ERR_PIN_LOCKED));
    if (ti.flags & CKF_USER_PIN_FINAL_TRY)
        return p11n_token_errorf(P11N_ERR_PIN_FINAL_TRY, tok->uri,
            "%s: one more wrong try would lock the token; check the PIN, then log in once "
            "with the token's own tools (a right PIN resets the count)",
            p11n_strerror(P11N_ERR_PIN_FINAL_TRY));
    char pin[P11N_PIN_MAX];
    size_t len = 0;
    int err = p11n_uri_pin(uri, tok->uri, (ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH) != 0,
        pin, sizeof(pin), &len);
    if (err != P11N_OK) {
        /* p11n_uri_pin wipes what it wrote; this does not rest on it. */
        p11n_wipe(pin, sizeof(pin));
        return err;
    }
    /* No PIN on a protected-path token: the reader's keypad asks. */
    rv = tok->fn->C_Login(tok->anchor, CKU_USER, len > 0 ? (CK_UTF8CHAR *)pin : NULL,
        (CK_ULONG)len);
    p11n_wipe(pin, sizeof(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        return p11n_token_fail(tok, "C_Login", rv);
    return P11N_OK;
}

void p11n_token_close(struct p11n_token *tok)
{
    if (tok == NULL)
        return;
    if (tok->fn != NULL) {
        /* In a forked child the sessions are the parent's: leave them.
         * (p11-kit skips C_Finalize in a process that did not initialize.) */
        if (tok->pid == getpid()) {
            for (size_t i = 0; i < tok->nidle; i++)
                tok->fn->C_CloseSession(tok->idle[i]);
            if (tok->anchor != CK_INVALID_HANDLE)
                tok->fn->C_CloseSession(tok->anchor);
        }
        tok->fn->C_Finalize(NULL);
        p11_kit_module_release(tok->fn);
    }
    pthread_mutex_destroy(&tok->lock);
    pthread_mutex_destroy(&tok->recovering);
    free(tok->idle);
    free(tok->uri);
    free(tok);
}

static struct p11n_token *token_new(const char *safe)
{
    struct p11n_token *tok = calloc(1, sizeof(*tok));
    if (tok == NULL)
        return NULL;
    tok->anchor = CK_INVALID_HANDLE;
    tok->key = CK_INVALID_HANDLE;
    tok->state = P11N_TOKEN_UP;
    tok->pid = getpid();
    atomic_init(&tok->point_form, P11N_FORM_UNKNOWN);
    if (pthread_mutex_init(&tok->lock, NULL) != 0) {
        free(tok);
        return NULL;
    }
    if (pthread_mutex_init(&tok->recovering, NULL) != 0) {
        pthread_mutex_destroy(&tok->lock);
        free(tok);
        return NULL;
    }
    tok->uri = strdup(safe);
    if (tok->uri == NULL) {
        p11n_token_close(tok);
        return NULL;
    }
    return tok;
}

static int open_anchor(struct p11n_token *tok, P11KitUri *uri, int flags)
{
    CK_FLAGS sflags = CKF_SERIAL_SESSION | ((flags & P11N_TOKEN_RW) ? CKF_RW_SESSION : 0);
    CK_RV rv = tok->fn->C_OpenSession(tok->slot, sflags, NULL, NULL, &tok->anchor);
    if (rv != CKR_OK) {
        tok->anchor = CK_INVALID_HANDLE;
        return p11n_token_fail(tok, "C_OpenSession", rv);
    }
    return (flags & P11N_TOKEN_LOGIN) ? login(tok, uri) : P11N_OK;
}

int p11n_token_open(P11KitUri *uri, const char *safe, int flags, struct p11n_token **out)
{
    *out = NULL;
    struct p11n_token *tok = token_new(safe);
    if (tok == NULL)
        return P11N_ERR_NOMEM;
    p11n_token_error_clear();
    const char *path = p11_kit_uri_get_module_path(uri);
    int err = path != NULL ? open_by_path(tok, uri, path)
                           : open_configured(tok, uri, p11_kit_uri_get_module_name(uri));
    if (err == P11N_OK)
        err = open_anchor(tok, uri, flags);
    if (err != P11N_OK) {
        p11n_token_close(tok);
        return err;
    }
    *out = tok;
    return P11N_OK;
}

int p11n_token_reopen(struct p11n_token *tok, P11KitUri *uri)
{
    /* A forked child must initialize the module again (p11-kit then
     * starts the module afresh in the child); anywhere else this is
     * harmless and reports CKR_CRYPTOKI_ALREADY_INITIALIZED. */
    CK_RV rv = init_module(tok->fn);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return p11n_token_fail(tok, "C_Initialize", rv);
    size_t nmatch = 0;
    CK_SLOT_ID slot = 0;
    int err = scan_module(tok->fn, uri, &nmatch, &slot);
    if (err == P11N_OK && nmatch != 1)
        err = match_count_error(nmatch, tok->uri);
    if (err != P11N_OK)
        return err;
    pthread_mutex_lock(&tok->lock);
    tok->slot = slot;
    pthread_mutex_unlock(&tok->lock);
    return open_anchor(tok, uri, P11N_TOKEN_LOGIN);
}

int p11n_token_check_ecdh(struct p11n_token *tok)
{
    CK_MECHANISM_INFO mi;
    CK_RV rv = tok->fn->C_GetMechanismInfo(tok->slot, CKM_ECDH1_DERIVE, &mi);
    if (rv == CKR_MECHANISM_INVALID || (rv == CKR_OK && !(mi.flags & CKF_DERIVE)))
        return p11n_token_errorf(P11N_ERR_NO_ECDH, tok->uri, "%s",
            p11n_strerror(P11N_ERR_NO_ECDH));
    if (rv != CKR_OK)
        return p11n_token_fail(tok, "C_GetMechanismInfo", rv);
    return P11N_OK;
}

int p11n_token_session_get(struct p11n_token *tok, struct p11n_token_use *u)
{
    u->rv = CKR_OK;
    u->dead = 0;
    pthread_mutex_lock(&tok->lock);
    u->gen = tok->gen;
    u->key = tok->key;
    CK_SLOT_ID slot = tok->slot;
    if (tok->nidle > 0) {
        u->s = tok->idle[--tok->nidle];
        pthread_mutex_unlock(&tok->lock);
        return P11N_OK;
    }
    pthread_mutex_unlock(&tok->lock);
    /* Read-only is enough: session objects may be created in any session,
     * and some tokens cap read/write sessions. */
    CK_RV rv = tok->fn->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &u->s);
    if (rv != CKR_OK) {
        u->rv = rv;
        return p11n_token_fail(tok, "C_OpenSession", rv);
    }
    return P11N_OK;
}

void p11n_token_session_put(struct p11n_token *tok, struct p11n_token_use *u)
{
    pthread_mutex_lock(&tok->lock);
    int stale = u->gen != tok->gen;
    if (!u->dead && !stale) {
        if (tok->nidle == tok->capidle) {
            size_t cap = tok->capidle ? 2 * tok->capidle : 4;
            CK_SESSION_HANDLE *p = realloc(tok->idle, cap * sizeof(*p));
            if (p != NULL) {
                tok->idle = p;
                tok->capidle = cap;
            }
        }
        if (tok->nidle < tok->capidle) {
            tok->idle[tok->nidle++] = u->s;
            pthread_mutex_unlock(&tok->lock);
            return;
        }
    }
    pthread_mutex_unlock(&tok->lock);
    /* A dead session of an older generation is forgotten, not closed: the
     * token ended it, and may have given its number to a new session. */
    if (!(stale && u->dead))
        tok->fn->C_CloseSession(u->s);
}
