/* The channel configuration (channel.h). */
#include "channel.h"

#include <stdlib.h>
#include <string.h>

int p11n_channel_new(const p11n_channel_options *o, p11n_channel **out)
{
    *out = NULL;
    if (o->key == NULL || (o->prologue == NULL && o->prologue_len > 0))
        return P11N_ERR_INVALID_ARG;
    const p11n_wire *wire = p11n_wire_by_name(o->pattern);
    if (wire == NULL)
        return P11N_ERR_UNSUPPORTED;
    p11n_channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL)
        return P11N_ERR_NOMEM;
    if (o->prologue != NULL) {
        /* +1: a zero-length prologue still needs a non-NULL pointer */
        if ((ch->prologue = malloc(o->prologue_len + 1)) == NULL) {
            free(ch);
            return P11N_ERR_NOMEM;
        }
        memcpy(ch->prologue, o->prologue, o->prologue_len);
        ch->prologue_len = o->prologue_len;
    }
    ch->refs = 1;
    ch->key = o->key;
    ch->wire = wire;
    ch->cb = o->cb;
    *out = ch;
    return P11N_OK;
}

p11n_channel *p11n_channel_ref(p11n_channel *ch)
{
    ch->refs++;
    return ch;
}

void p11n_channel_unref(p11n_channel *ch)
{
    if (ch == NULL || --ch->refs > 0)
        return;
    free(ch->prologue);
    free(ch);
}
