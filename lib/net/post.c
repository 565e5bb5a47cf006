/*
 * p11n_post: work handed to the loop thread from any thread, as
 * uv_async_send does. The calls wait in a locked queue; the poster wakes
 * the loop through the backend's wake-up fd, and the loop runs them in
 * the order they were posted.
 */
#include "net.h"

#include <stdlib.h>

struct p11n_posted {
    p11n_post_fn fn;
    void *arg;
    struct p11n_posted *next;
};

int p11n_post_init(p11n_ctx *ctx)
{
    return pthread_mutex_init(&ctx->post_mu, NULL) == 0 ? P11N_OK : P11N_ERR_NOMEM;
}

int p11n_post(p11n_ctx *ctx, p11n_post_fn fn, void *arg)
{
    if (ctx == NULL || fn == NULL)
        return P11N_ERR_INVALID_ARG;
    struct p11n_posted *p = malloc(sizeof(*p));
    if (p == NULL)
        return P11N_ERR_NOMEM;
    *p = (struct p11n_posted){ .fn = fn, .arg = arg };
    pthread_mutex_lock(&ctx->post_mu);
    if (ctx->post_tail != NULL)
        ctx->post_tail->next = p;
    else
        ctx->post_head = p;
    ctx->post_tail = p;
    pthread_mutex_unlock(&ctx->post_mu);
    p11n_wake(ctx);
    return P11N_OK;
}

void p11n_post_run(p11n_ctx *ctx)
{
    pthread_mutex_lock(&ctx->post_mu);
    struct p11n_posted *p = ctx->post_head;
    ctx->post_head = ctx->post_tail = NULL;
    pthread_mutex_unlock(&ctx->post_mu);
    /* Calls posted by these run at the next wake-up, which they caused. */
    while (p != NULL) {
        struct p11n_posted *next = p->next;
        p->fn(ctx, p->arg);
        free(p);
        p = next;
    }
}

void p11n_post_free(p11n_ctx *ctx)
{
    struct p11n_posted *p = ctx->post_head;
    while (p != NULL) {
        struct p11n_posted *next = p->next;
        free(p);
        p = next;
    }
    ctx->post_head = ctx->post_tail = NULL;
    pthread_mutex_destroy(&ctx->post_mu);
}
