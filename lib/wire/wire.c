/* The wire-pattern table (wire.h). */
#include "wire.h"

#include <string.h>

#define WIRE_ROW(n, proto, prologue, chooses, act)                                    \
    { .name = #n, .protocol = (proto), .default_prologue = (prologue),                \
      .responder_chooses = (chooses), .max_act = (act) },
static const p11n_wire wires[] = { P11N_WIRE_PATTERNS(WIRE_ROW) };

const p11n_wire *p11n_wire_by_name(const char *name)
{
    if (name == NULL)
        return &wires[0];
    for (size_t i = 0; i < sizeof(wires) / sizeof(wires[0]); i++)
        if (strcmp(wires[i].name, name) == 0)
            return &wires[i];
    return NULL;
}
