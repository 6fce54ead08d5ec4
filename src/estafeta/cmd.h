/*
 * cmd: `estafeta` subcommands other than the server, and the option
 * handling they all share.
 *
 * Every subcommand takes:
 *   -c FILE, --config FILE   configuration (else $ESTAFETA_CONFIG, else the
 *                            embedded default)
 *   --data-dir DIR           overrides data-dir (else $ESTAFETA_DATA)
 *   -h, --help               usage on stdout, exit 0
 * Options may come anywhere among the positional arguments; "--" ends them.
 *
 * Entry points get argv[0] = the subcommand name ("check-config", "user")
 * and return the process exit status: 0 success, 1 failure (message on
 * stderr), 2 bad usage; `queue` and `sendmail` use sysexits(3) codes
 * instead (64 usage, 66 no such message, 75 try again, 77 permission), as
 * the programs they stand in for do.
 */
#ifndef ESTAFETA_ESTAFETA_CMD_H
#define ESTAFETA_ESTAFETA_CMD_H

#include <stddef.h>

#include "conf/config.h"
#include "lib/buf.h"

struct cmd_opts {
    const char *config_path;    /* -c/--config as given, or NULL */
    const char *data_dir;       /* --data-dir as given, or NULL */
    char **args;                /* positional arguments (owned array of
                                   pointers into argv); free with free() */
    size_t nargs;
};

/* Parses argv[1..argc). Returns 0; 1 after printing usage for -h/--help;
 * 2 after printing an error and usage to stderr. o->args is allocated only
 * when 0 is returned. */
int cmd_parse_opts(int argc, char **argv, const char *usage,
                   struct cmd_opts *o);

/* config_load with the fallbacks: path NULL -> $ESTAFETA_CONFIG -> the
 * embedded default; data_dir NULL -> $ESTAFETA_DATA -> as configured.
 * Empty environment values count as unset. err_r must be buf_init'ed. */
struct config *cmd_load_config(const char *path, const char *data_dir,
                               struct buf *err_r);
/* The same without the cross-reference check (for `estafeta user`). */
struct config *cmd_load_config_norefs(const char *path, const char *data_dir,
                                      struct buf *err_r);

int cmd_check_config(int argc, char **argv);
int cmd_user(int argc, char **argv);

#endif
