#include "cli.h"

/* Placeholder until this command group lands. */
int cmd_bench(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("bench: not implemented yet");
    return 2;
}

