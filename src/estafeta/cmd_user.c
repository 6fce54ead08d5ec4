/*
 * cmd_user: `estafeta user add|passwd|del|list`, managing users-file;
 * `list` also shows each user's mailbox usage next to the quota.
 *
 * SECURITY: the password never comes from the command line (it would be
 * visible in ps and shell history): it is read from the terminal with echo
 * off, twice, or as one line from standard input when that is not a
 * terminal (for scripts: `printf '%s\n' "$pw" | estafeta user add ...`).
 * Plaintext is wiped from memory as soon as it is hashed.
 *
 * One password gives every stored form at once: the argon2id hash (PLAIN,
 * LOGIN), SCRAM-SHA-256 keys, and with --cram-md5 the HMAC-MD5 contexts,
 * since CRAM-MD5 cannot work from anything else. Passwords are at most 255
 * octets, the SASL limit (sasl.h), so every mechanism can use them.
 */
#include "estafeta/cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <termios.h>
#include <unistd.h>

#include "conf/users.h"
#include "lib/fsutil.h"
#include "lib/xalloc.h"
#include "proto/sasl.h"
#include "store/mailbox.h"
#include "store/store.h"

#define PASSWORD_MAX 1024       /* what is read; SASL_NAME_MAX is accepted */
#define FIELDS_MAX 1024         /* hash, cram-md5= and scram-sha-256= fields */

static const char user_usage[] =
    "usage: estafeta user add ADDRESS [--cram-md5]   add a user (asks for a\n"
    "                                                password)\n"
    "       estafeta user passwd ADDRESS [--cram-md5]\n"
    "                                                change a user's password\n"
    "       estafeta user del ADDRESS                remove a user\n"
    "       estafeta user list                       list users with what\n"
    "                                                their mailbox holds and\n"
    "                                                the quota; '(config)'\n"
    "                                                marks users defined in\n"
    "                                                the configuration file\n"
    "  Users are kept in the configured users-file. The password is read\n"
    "  from the terminal without echo, or as one line from standard input\n"
    "  when it is not a terminal; never from the command line. It is stored\n"
    "  as an argon2id hash and as SCRAM-SHA-256 keys.\n"
    "  --cram-md5          also store the HMAC-MD5 contexts CRAM-MD5 needs\n"
    "                      (password-equivalent for CRAM-MD5, not the password);\n"
    "                      for\n"
    "                      CRAM-MD5 (which cannot work otherwise)\n"
    "  -c, --config FILE   configuration file (default: $ESTAFETA_CONFIG, else\n"
    "                      " CONFIG_SYSTEM_PATH " if it exists,\n"
    "                      else the embedded default)\n"
    "  --data-dir DIR      override data-dir (default: $ESTAFETA_DATA)\n"
    "  -h, --help          this text\n";

/* One line from fd 0 into out; -1 on EOF before any byte or a line too
 * long. Reads byte by byte so nothing after the line is consumed. */
static int read_line(char *out, size_t cap)
{
    size_t n = 0;
    bool any = false, too_long = false;
    for (;;) {
        char c;
        ssize_t r = read(0, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        any = true;
        if (c == '\n')
            break;
        if (n + 1 >= cap)
            too_long = true;
        else
            out[n++] = c;
    }
    if (n > 0 && out[n - 1] == '\r')
        n--;
    out[n] = '\0';
    if (!any)
        return -1;
    return too_long ? -2 : 0;
}

static int ask(const char *prompt, char *out, size_t cap)
{
    struct termios old, quiet;
    fputs(prompt, stderr);
    fflush(stderr);
    if (tcgetattr(0, &old) < 0)
        return -1;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    if (tcsetattr(0, TCSAFLUSH, &quiet) < 0)
        return -1;
    int r = read_line(out, cap);
    tcsetattr(0, TCSAFLUSH, &old);
    fputc('\n', stderr);
    return r;
}

/* Every stored form of pw as users-file fields: "HASH[:cram-md5=CONTEXTS]:
 * scram-sha-256=...". No field holds the password itself. 0, or -1 with a
 * message. */
static int make_fields(const char *pw, bool cram, char *out, size_t cap)
{
    size_t len = strlen(pw);
    if (len > SASL_NAME_MAX) {
        fprintf(stderr, "estafeta user: password longer than %d bytes (the "
                "SASL limit)\n", SASL_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)pw[i] >= 0x80) {
            fprintf(stderr, "estafeta user: warning: SCRAM-SHA-256 clients may "
                    "normalise a non-ASCII password (SASLprep) and fail\n");
            break;
        }
    }
    char hash[256], scram[256];
    struct sasl_creds creds;
    int rc = -1;
    if (password_hash(pw, hash, sizeof(hash)) < 0) {
        fprintf(stderr, "estafeta user: hashing the password failed\n");
        goto done;
    }
    if (sasl_scram_derive(pw, SASL_SCRAM_ITERATIONS, &creds) < 0 ||
        users_format_scram(&creds, scram, sizeof(scram)) < 0) {
        fprintf(stderr, "estafeta user: deriving SCRAM keys failed\n");
        goto done;
    }
    /* CRAM-MD5: the HMAC-MD5 contexts, not the password (RFC 2195 5). */
    char cram_ctx[SASL_CRAM_CONTEXT_LEN + 1];
    if (cram && sasl_cram_derive(pw, cram_ctx, sizeof(cram_ctx)) < 0) {
        fprintf(stderr, "estafeta user: deriving CRAM-MD5 contexts failed\n");
        goto done;
    }
    int n = cram ? snprintf(out, cap, "%s:cram-md5=%s:%s", hash, cram_ctx, scram)
                 : snprintf(out, cap, "%s:%s", hash, scram);
    explicit_bzero(cram_ctx, sizeof(cram_ctx));
    if (n < 0 || (size_t)n >= cap) {
        fprintf(stderr, "estafeta user: entry too long\n");
        goto done;
    }
    rc = 0;
done:
    explicit_bzero(&creds, sizeof(creds));
    explicit_bzero(scram, sizeof(scram));
    explicit_bzero(hash, sizeof(hash));
    if (rc < 0)
        explicit_bzero(out, cap);
    return rc;
}

/* The new password, turned into users-file fields. 0, or -1 with a message
 * printed. */
static int get_password_fields(const char *address, bool cram, char *fields,
                               size_t fields_cap)
{
    char *pw = xmalloc(PASSWORD_MAX + 1), *again = xmalloc(PASSWORD_MAX + 1);
    int rc = -1, r;
    if (isatty(0)) {
        char prompt[CONFIG_ADDRESS_MAX + 32];
        snprintf(prompt, sizeof(prompt), "Password for %s: ", address);
        r = ask(prompt, pw, PASSWORD_MAX + 1);
        if (r == 0)
            r = ask("Retype password: ", again, PASSWORD_MAX + 1);
        if (r == 0 && strcmp(pw, again) != 0) {
            fprintf(stderr, "estafeta user: passwords do not match\n");
            goto done;
        }
    } else {
        r = read_line(pw, PASSWORD_MAX + 1);
    }
    if (r == -2) {
        fprintf(stderr, "estafeta user: password longer than %d bytes\n",
                PASSWORD_MAX);
        goto done;
    }
    if (r < 0) {
        fprintf(stderr, "estafeta user: no password given\n");
        goto done;
    }
    if (pw[0] == '\0') {
        fprintf(stderr, "estafeta user: empty password refused\n");
        goto done;
    }
    if (make_fields(pw, cram, fields, fields_cap) < 0)
        goto done;
    rc = 0;
done:
    explicit_bzero(pw, PASSWORD_MAX + 1);
    explicit_bzero(again, PASSWORD_MAX + 1);
    free(pw);
    free(again);
    return rc;
}

/* Creates the directory of the users file (data-dir may not exist yet
 * before the first start). */
static int ensure_dir(const char *file)
{
    char *dir = xstrdup(file);
    char *slash = strrchr(dir, '/');
    int r = 0;
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        r = fs_mkdir_p(dir, 0700);
        if (r < 0)
            fprintf(stderr, "estafeta user: cannot create %s: %s\n", dir,
                    strerror(errno));
    }
    free(dir);
    return r;
}

/* Every user with what their mailbox holds next to the quota:
 * "demo@example.test  12 messages, 34 KiB of 100 MiB (0%)". The usage is
 * read from the Maildir files alone (store_quota_usage_files): this may
 * run as root or as another user than the server, and must not create or
 * change anything in the mailboxes (an index made by root would lock the
 * server out of it). */
static int user_list(const struct config *cfg)
{
    char root[4096];
    int n = snprintf(root, sizeof(root), "%s/mail",
                     cfg->data_dir != NULL ? cfg->data_dir : ".");
    struct store *st = n > 0 && (size_t)n < sizeof(root)
                           ? store_maildir_new(root, cfg->hostname)
                           : NULL;
    size_t width = 0;
    for (size_t i = 0; i < cfg->nusers; i++) {
        size_t w = strlen(cfg->users[i].address) +
                   (cfg->users[i].in_config ? strlen(" (config)") : 0);
        if (w > width)
            width = w;
    }
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];
        char name[CONFIG_ADDRESS_MAX + 16], usage[160];
        snprintf(name, sizeof(name), "%s%s", u->address,
                 u->in_config ? " (config)" : "");
        uint64_t bytes, msgs;
        if (st != NULL &&
            store_quota_usage_files(st, u->address, &bytes, &msgs) == 0)
            store_quota_describe(usage, sizeof(usage), bytes, msgs,
                                 cfg->quota_bytes, cfg->quota_messages);
        else
            snprintf(usage, sizeof(usage), "usage unknown (%s)",
                     st != NULL ? strerror(errno) : "no mail directory");
        printf("%-*s  %s\n", (int)width, name, usage);
    }
    store_free(st);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* Would the configuration still hold together without this user? Only
 * refuses when it did before, so an already broken configuration can
 * still be repaired. */
static int check_del(struct config *cfg, const struct cfg_user *u)
{
    struct buf err;
    buf_init(&err, 4096);
    int rc = 0;
    if (config_check_refs(cfg, &err) == 0) {
        size_t i = (size_t)(u - cfg->users);
        struct cfg_user saved = cfg->users[i];
        memmove(&cfg->users[i], &cfg->users[i + 1],
                (cfg->nusers - i - 1) * sizeof(*cfg->users));
        cfg->nusers--;
        if (config_check_refs(cfg, &err) < 0) {
            fprintf(stderr, "estafeta user: '%s' is still needed: %s\n",
                    saved.address, buf_cstr(&err));
            rc = -1;
        }
        memmove(&cfg->users[i + 1], &cfg->users[i],
                (cfg->nusers - i) * sizeof(*cfg->users));
        cfg->users[i] = saved;
        cfg->nusers++;
    }
    buf_free(&err);
    return rc;
}

/*
 * A users file created by root would be unreadable to the server, which
 * re-reads it as the run-as user on SIGHUP: hand a new file to that user.
 * Later updates keep whatever owner the admin gave the file.
 */
static void hand_to_server(const struct config *cfg)
{
    if (geteuid() != 0 || cfg->run_as == NULL)
        return;
    struct passwd *pw = getpwnam(cfg->run_as);
    if (pw == NULL || chown(cfg->users_file, pw->pw_uid, pw->pw_gid) < 0)
        fprintf(stderr, "estafeta user: warning: cannot give %s to %s: %s\n",
                cfg->users_file, cfg->run_as, pw ? strerror(errno) : "no such user");
}

/* Takes --cram-md5 (before any "--") out of argv, which the shared option
 * parser would refuse. */
static bool take_cram_flag(int *argc, char **argv)
{
    bool found = false;
    int j = 1;
    bool only_args = false;
    for (int i = 1; i < *argc; i++) {
        if (!only_args && strcmp(argv[i], "--cram-md5") == 0) {
            found = true;
            continue;
        }
        if (strcmp(argv[i], "--") == 0)
            only_args = true;
        argv[j++] = argv[i];
    }
    *argc = j;
    argv[j] = NULL;
    return found;
}

int cmd_user(int argc, char **argv)
{
    struct cmd_opts o;
    bool cram = take_cram_flag(&argc, argv);
    int r = cmd_parse_opts(argc, argv, user_usage, &o);
    if (r != 0)
        return r == 1 ? 0 : 2;
    const char *action = o.nargs > 0 ? o.args[0] : NULL;
    bool is_list = action != NULL && strcmp(action, "list") == 0;
    bool known = action != NULL && (is_list || strcmp(action, "add") == 0 ||
                                    strcmp(action, "passwd") == 0 ||
                                    strcmp(action, "del") == 0);
    bool sets_password = known && (strcmp(action, "add") == 0 ||
                                   strcmp(action, "passwd") == 0);
    if (!known || o.nargs != (is_list ? 1u : 2u) || (cram && !sets_password)) {
        if (action != NULL && !known)
            fprintf(stderr, "estafeta user: unknown action '%s'\n", action);
        else if (cram && known && !sets_password)
            fprintf(stderr, "estafeta user: --cram-md5 goes with add or passwd\n");
        fputs(user_usage, stderr);
        free(o.args);
        return 2;
    }
    const char *arg = o.nargs > 1 ? o.args[1] : NULL;

    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg = cmd_load_config_norefs(o.config_path, o.data_dir, &err);
    free(o.args);
    if (cfg == NULL) {
        fprintf(stderr, "%s\n", buf_cstr(&err));
        buf_free(&err);
        return 1;
    }
    int rc = 1;
    if (is_list) {
        rc = user_list(cfg);
        goto out;
    }
    if (cfg->users_file == NULL) {
        fprintf(stderr, "estafeta user: %s configures no users-file\n",
                cfg->source);
        goto out;
    }
    char addr[CONFIG_ADDRESS_MAX];
    const char *why = config_check_mailbox(arg, strlen(arg), addr, sizeof(addr));
    if (why != NULL) {
        fprintf(stderr, "estafeta user: invalid address '%s': %s\n", arg, why);
        goto out;
    }
    const char *dom = strrchr(addr, '@') + 1;
    const struct cfg_user *u = config_user(cfg, addr, strlen(addr));
    char fields[FIELDS_MAX];

    if (strcmp(action, "add") == 0) {
        if (config_domain(cfg, dom, strlen(dom)) == NULL) {
            fprintf(stderr, "estafeta user: '%s' is not a local domain\n", dom);
            goto out;
        }
        if (u != NULL) {
            fprintf(stderr, "estafeta user: '%s' already exists (%s:%zu)\n",
                    addr, u->in_config ? cfg->source : cfg->users_file, u->line);
            goto out;
        }
        if (config_alias(cfg, addr, strlen(addr)) != NULL) {
            fprintf(stderr, "estafeta user: '%s' is an alias\n", addr);
            goto out;
        }
        if (ensure_dir(cfg->users_file) < 0 ||
            get_password_fields(addr, cram, fields, sizeof(fields)) < 0)
            goto out;
    } else {
        if (u == NULL) {
            fprintf(stderr, "estafeta user: no user '%s'\n", addr);
            goto out;
        }
        if (u->in_config) {
            fprintf(stderr, "estafeta user: '%s' is defined in %s:%zu; change "
                    "it there\n", addr, cfg->source, u->line);
            goto out;
        }
        if (strcmp(action, "passwd") == 0) {
            if (get_password_fields(addr, cram, fields, sizeof(fields)) < 0)
                goto out;
        } else if (check_del(cfg, u) < 0) {
            goto out;
        }
    }
    bool del = strcmp(action, "del") == 0;
    bool existed = access(cfg->users_file, F_OK) == 0;
    r = users_file_update(cfg->users_file, addr, del ? NULL : fields, &err);
    explicit_bzero(fields, sizeof(fields));
    if (r < 0) {
        fprintf(stderr, "estafeta user: %s\n", buf_cstr(&err));
        goto out;
    }
    if (!existed)
        hand_to_server(cfg);
    if (cram) {
        fprintf(stderr, "estafeta user: warning: CRAM-MD5 needs the password "
                "stored reversibly: it is now in %s in clear; anyone who can "
                "read that file can log in as %s\n", cfg->users_file, addr);
        if ((cfg->auth_mechs & (1u << SASL_MECH_CRAM_MD5)) == 0)
            fprintf(stderr, "estafeta user: note: CRAM-MD5 is not offered "
                    "until auth-mechanisms lists it\n");
    }
    printf("%s: %s\n", addr, strcmp(action, "add") == 0 ? "added"
                             : del ? "removed" : "password changed");
    rc = 0;
out:
    config_free(cfg);
    buf_free(&err);
    return rc;
}
