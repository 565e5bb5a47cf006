/*
 * Coming back after the token lost our sessions: pulled out and put back,
 * a network HSM restarted, or a forked child that must not use its
 * parent's sessions. One thread recovers (drops the sessions, reopens,
 * logs in, finds the key again); the others wait for it and retry on the
 * new sessions. While the token stays away, operations fail at once
 * without calling the module, and recovery is tried again with a capped
 * exponential backoff. A login the token refused is never tried again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "token.h"

/* The first retry comes soon (a token put back is usually ready within a
 * fraction of a second); each failure doubles the wait up to the cap,
 * so a token that stays away costs one attempt every 5 s, and one that
 * returns after a long absence is in use again within 5 s. */
#define RECOVER_FIRST_MS 100u
#define RECOVER_MAX_MS 5000u

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Errors that come from the token refusing a login (or refusing to let
 * us try): trying the same PIN again could lock a hardware token. */
static int permanent(int err)
{
    return err == P11N_ERR_PIN_INCORRECT || err == P11N_ERR_PIN_LOCKED ||
           err == P11N_ERR_PIN_FINAL_TRY;
}

/* The error an operation gets while the token is away or failed for good
 * (tok->lock held). */
static int state_error(struct p11n_token *tok, uint64_t now)
{
    if (tok->state == P11N_TOKEN_AWAY) {
        unsigned long long wait = tok->retry_at > now ? tok->retry_at - now : 0;
        return p11n_token_errorf(P11N_ERR_TOKEN_UNAVAILABLE, NULL,
            "token unavailable: %s (next try in %llu ms)", tok->why, wait);
    }
    return p11n_token_errorf(tok->state, NULL,
        "token unavailable for good, the login is not tried again: %s", tok->why);
}

/* Forget every session of the old generation: the idle ones and the
 * anchor are closed (in the parent; a forked child leaves its parent's
 * alone), the borrowed ones when they come back. */
static void drop_sessions(struct p11n_token *tok, int forked)
{
    pthread_mutex_lock(&tok->lock);
    tok->gen++;
    tok->state = P11N_TOKEN_RECOVERING;
    CK_SESSION_HANDLE *idle = tok->idle, anchor = tok->anchor;
    size_t nidle = tok->nidle;
    tok->idle = NULL;
    tok->nidle = tok->capidle = 0;
    tok->anchor = CK_INVALID_HANDLE;
    tok->pid = getpid();
    pthread_mutex_unlock(&tok->lock);
    for (size_t i = 0; i < nidle && !forked; i++)
        tok->fn->C_CloseSession(idle[i]);
    if (anchor != CK_INVALID_HANDLE && !forked)
        tok->fn->C_CloseSession(anchor);
    free(idle);
}

/* Publish the outcome of one attempt. */
static void settle(struct p11n_token *tok, int err, CK_OBJECT_HANDLE key)
{
    uint64_t now = now_ms();
    pthread_mutex_lock(&tok->lock);
    if (err == P11N_OK) {
        tok->key = key;
        tok->state = P11N_TOKEN_UP;
        tok->backoff_ms = RECOVER_FIRST_MS;
        tok->why[0] = '\0';
    } else {
        snprintf(tok->why, sizeof(tok->why), "%s",
            p11n_token_last_error()[0] ? p11n_token_last_error() : p11n_strerror(err));
        tok->state = permanent(err) ? err : P11N_TOKEN_AWAY;
        if (tok->backoff_ms == 0)
            tok->backoff_ms = RECOVER_FIRST_MS;
        tok->retry_at = now + tok->backoff_ms;
        tok->backoff_ms = tok->backoff_ms * 2 > RECOVER_MAX_MS ? RECOVER_MAX_MS
                                                               : tok->backoff_ms * 2;
    }
    pthread_mutex_unlock(&tok->lock);
}

int p11n_token_recover(struct p11n_token *tok, unsigned seen)
{
    pthread_mutex_lock(&tok->recovering);
    pthread_mutex_lock(&tok->lock);
    int again = tok->gen == seen && tok->relocate != NULL && !permanent(tok->state);
    int state = tok->state;
    uint64_t now = now_ms();
    /* Another thread recovered (or tried) since this one's failure: its
     * outcome stands; while away, only a due retry tries again. */
    if (tok->gen != seen && state == P11N_TOKEN_UP) {
        pthread_mutex_unlock(&tok->lock);
        pthread_mutex_unlock(&tok->recovering);
        return P11N_OK;
    }
    if (!again || (state == P11N_TOKEN_AWAY && now < tok->retry_at)) {
        int err = tok->relocate == NULL
            ? p11n_token_errorf(P11N_ERR_TOKEN_REMOVED, tok->uri, "%s",
                  p11n_strerror(P11N_ERR_TOKEN_REMOVED))
            : state_error(tok, now);
        pthread_mutex_unlock(&tok->lock);
        pthread_mutex_unlock(&tok->recovering);
        return err;
    }
    int forked = tok->pid != getpid();
    pthread_mutex_unlock(&tok->lock);

    drop_sessions(tok, forked);
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    p11n_token_error_clear();
    int err = tok->relocate(tok, tok->relocate_arg, &key);
    settle(tok, err, key);
    if (err != P11N_OK) {
        pthread_mutex_lock(&tok->lock);
        err = state_error(tok, now_ms());
        pthread_mutex_unlock(&tok->lock);
    }
    pthread_mutex_unlock(&tok->recovering);
    return err;
}

int p11n_token_use_begin(struct p11n_token *tok, struct p11n_token_use *u)
{
    /* Three rounds at most: wait for a recovery in progress, recover,
     * then take a session. */
    for (int round = 0; round < 3; round++) {
        pthread_mutex_lock(&tok->lock);
        int state = tok->state;
        unsigned gen = tok->gen;
        uint64_t now = now_ms();
        int due = state == P11N_TOKEN_AWAY && now >= tok->retry_at;
        int forked = tok->pid != getpid() && tok->relocate != NULL;
        if (state == P11N_TOKEN_UP && !forked) {
            pthread_mutex_unlock(&tok->lock);
            return p11n_token_session_get(tok, u);
        }
        if (state != P11N_TOKEN_RECOVERING && !due && !forked) {
            int err = state_error(tok, now);
            pthread_mutex_unlock(&tok->lock);
            return err;
        }
        pthread_mutex_unlock(&tok->lock);
        if (state == P11N_TOKEN_RECOVERING) {
            /* Wait for the thread that recovers, then look again. */
            pthread_mutex_lock(&tok->recovering);
            pthread_mutex_unlock(&tok->recovering);
            continue;
        }
        int err = p11n_token_recover(tok, gen);
        if (err != P11N_OK)
            return err;
    }
    return p11n_token_errorf(P11N_ERR_TOKEN_UNAVAILABLE, tok->uri,
        "token unavailable: it keeps losing its sessions");
}
