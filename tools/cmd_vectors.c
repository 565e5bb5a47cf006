#include "cli.h"

/* Placeholder until this command group lands. */
int cmd_vectors(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("vectors: not implemented yet");
    return 2;
}

