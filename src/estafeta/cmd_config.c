/*
 * cmd_config: `estafeta check-config`, plus the option parsing and config
 * loading every subcommand shares (cmd.h).
 */
#include "estafeta/cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

int cmd_parse_opts(int argc, char **argv, const char *usage,
                   struct cmd_opts *o)
{
    memset(o, 0, sizeof(*o));
    char **args = xcalloc(argc > 0 ? (size_t)argc : 1, sizeof(*args));
    size_t n = 0;
    bool only_args = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        const char *val = NULL;
        if (only_args || a[0] != '-' || a[1] == '\0') {
            args[n++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            free(args);
            return 1;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            dst = &o->config_path;
        } else if (strcmp(a, "--data-dir") == 0) {
            dst = &o->data_dir;
        } else if (strncmp(a, "--config=", 9) == 0) {
            dst = &o->config_path;
            val = a + 9;
        } else if (strncmp(a, "--data-dir=", 11) == 0) {
            dst = &o->data_dir;
            val = a + 11;
        } else if (strncmp(a, "-c", 2) == 0) {
            dst = &o->config_path;
            val = a + 2;
        } else {
            fprintf(stderr, "estafeta %s: unknown option '%s'\n%s", argv[0], a,
                    usage);
            free(args);
            return 2;
        }
        if (val == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "estafeta %s: option '%s' needs a value\n%s",
                        argv[0], a, usage);
                free(args);
                return 2;
            }
            val = argv[++i];
        }
        if (val[0] == '\0') {
            fprintf(stderr, "estafeta %s: empty value for '%s'\n", argv[0], a);
            free(args);
            return 2;
        }
        *dst = val;
    }
    o->args = args;
    o->nargs = n;
    return 0;
}

static const char *env_or(const char *given, const char *name)
{
    if (given != NULL)
        return given;
    const char *e = getenv(name);
    return e != NULL && e[0] != '\0' ? e : NULL;
}

static struct config *load(const char *path, const char *data_dir,
                           bool refs, struct buf *err_r)
{
    struct config_overrides ov = {
        .data_dir = env_or(data_dir, "ESTAFETA_DATA"),
        .no_ref_check = !refs,
    };
    return config_load(config_choose_path(path), &ov, err_r);
}

struct config *cmd_load_config(const char *path, const char *data_dir,
                               struct buf *err_r)
{
    return load(path, data_dir, true, err_r);
}

struct config *cmd_load_config_norefs(const char *path, const char *data_dir,
                                      struct buf *err_r)
{
    return load(path, data_dir, false, err_r);
}

static const char check_usage[] =
    "usage: estafeta check-config [-c FILE] [--data-dir DIR]\n"
    "  Loads the configuration (with its users-file and aliases-file) and\n"
    "  checks every reference. Prints 'FILE: ok' and a summary, or the\n"
    "  first error as FILE:LINE: message.\n"
    "  -c, --config FILE   configuration file (default: $ESTAFETA_CONFIG, else\n"
    "                      " CONFIG_SYSTEM_PATH " if it exists,\n"
    "                      else the embedded default)\n"
    "  --data-dir DIR      override data-dir (default: $ESTAFETA_DATA)\n"
    "  -h, --help          this text\n";

int cmd_check_config(int argc, char **argv)
{
    struct cmd_opts o;
    int r = cmd_parse_opts(argc, argv, check_usage, &o);
    if (r != 0)
        return r == 1 ? 0 : 2;
    if (o.nargs != 0) {
        fprintf(stderr, "estafeta check-config: unexpected argument '%s'\n%s",
                o.args[0], check_usage);
        free(o.args);
        return 2;
    }
    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg = cmd_load_config(o.config_path, o.data_dir, &err);
    free(o.args);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", buf_cstr(&err));
        buf_free(&err);
        return 1;
    }
    buf_free(&err);

    printf("%s: ok\n", cfg->source);
    printf("  hostname:   %s\n", cfg->hostname);
    printf("  data-dir:   %s\n", cfg->data_dir);
    printf("  domains:    %zu (", cfg->ndomains);
    for (size_t i = 0; i < cfg->ndomains && i < 8; i++)
        printf("%s%s", i > 0 ? " " : "", cfg->domains[i].name);
    printf("%s)\n", cfg->ndomains > 8 ? " ..." : "");
    printf("  users:      %zu\n", cfg->nusers);
    printf("  aliases:    %zu\n", cfg->naliases);
    printf("  postmaster: %s\n", cfg->postmaster);
    printf("  listeners: ");
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        bool v6 = strchr(l->host, ':') != NULL;
        printf("%s %s%s%s:%u %s", i > 0 ? "," : "", v6 ? "[" : "", l->host,
               v6 ? "]" : "", l->port, listener_role_name(l->role));
    }
    printf("\n");
    config_free(cfg);
    return fflush(stdout) == 0 ? 0 : 1;
}
