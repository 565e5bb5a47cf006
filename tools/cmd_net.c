#include "cli.h"

/* Placeholder until this command group lands. */
int cmd_listen(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("listen: not implemented yet");
    return 2;
}

int cmd_connect(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("connect: not implemented yet");
    return 2;
}

