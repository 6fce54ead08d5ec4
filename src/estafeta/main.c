/*
 * estafeta: one command, several subcommands. Each subcommand lives in its
 * own file and parses its own options; this file only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "estafeta/cmd.h"
#include "estafeta/sendmail.h"
#include "estafeta/serve.h"

#define ESTAFETA_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: estafeta COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  serve          run the mail server (foreground)\n"
            "  check-config   validate a configuration file\n"
            "  queue list|show|flush|hold|release|delete|bounce   manage the queue\n"
            "  user add|passwd|del|list   manage users\n"
            "  sendmail       sendmail(1) for local programs (also as 'sendmail')\n"
            "  mailq          list the queue (also as 'mailq')\n"
            "  version        print the version\n"
            "\n"
            "Every command accepts -c FILE and --help. See estafeta(8).\n");
}

int main(int argc, char **argv)
{
    /* Installed as /usr/sbin/sendmail or mailq (a symlink), programs call
     * us by those names with sendmail's own flags. */
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    if (strcmp(base, "sendmail") == 0)
        return cmd_sendmail(argc, argv);
    if (strcmp(base, "mailq") == 0)
        return cmd_mailq(argc, argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_check_config(argc - 1, argv + 1);
    if (strcmp(cmd, "queue") == 0)
        return cmd_queue(argc - 1, argv + 1);
    if (strcmp(cmd, "user") == 0)
        return cmd_user(argc - 1, argv + 1);
    if (strcmp(cmd, "sendmail") == 0)
        return cmd_sendmail(argc - 1, argv + 1);
    if (strcmp(cmd, "mailq") == 0)
        return cmd_mailq(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("estafeta %s\n", ESTAFETA_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
        strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "estafeta: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
