#include "cli.h"

/* Placeholder until this command group lands. */
int cmd_keygen(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("keygen: not implemented yet");
    return 2;
}

int cmd_pubkey(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("pubkey: not implemented yet");
    return 2;
}

int cmd_ceremony(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("ceremony: not implemented yet");
    return 2;
}

