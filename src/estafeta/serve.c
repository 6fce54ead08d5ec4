/*
 * serve.c: `estafeta serve`, the daemon. One event loop (libevent; see
 * doc/architecture.md for why) on the main thread runs every SMTP session;
 * a commit thread makes messages durable (group commit); a delivery thread
 * (deliver/qmgr.c) moves them into mailboxes.
 *
 * Start-up order matters for privilege separation: load the configuration,
 * bind the listening sockets (ports below 1024 need root), create the data
 * directory, switch to the unprivileged run-as user, and only then parse
 * anything from the network. From then on every path is relative to the
 * data directory (the process chdir()s into it), so the run-as user needs
 * no access to the directories above it.
 *
 * Signals: SIGTERM/SIGINT finish (see smtpd_shutdown), SIGUSR1 retries the
 * queue now (qmgr_flush), SIGHUP reloads the
 * configuration atomically (a bad file keeps the old one and logs why).
 */
#include "estafeta/serve.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/cfgref.h"
#include "conf/config.h"
#include "deliver/qmgr.h"
#include "io/listener.h"
#include "io/tls.h"
#include "lib/authfail.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/xalloc.h"
#include "queue/queue.h"
#include "pop3d/pop3d.h"
#include "smtpd/smtpd.h"
#include "store/store.h"

struct serve {
    const char *config_path;     /* NULL: embedded default */
    struct config_overrides ov;
    struct event_base *base;
    struct cfgref *cfg;
    struct listener **listeners;
    enum listener_role *roles;
    size_t nlisteners;
    struct listener *local;       /* local-socket for estafeta sendmail */
    struct tls_server *tls;
    struct authfail *fails;       /* failed logins, all protocols */
    struct smtpd *smtpd;
    struct pop3d *pop3d;
    int open_services;            /* services not yet closed on SIGTERM */
    struct qmgr *qmgr;
    struct queue *queue;
    struct store *store;
    bool stopping;
};

struct serve_accept_arg {
    struct serve *sv;
    enum listener_role role;
};

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: estafeta serve [-c FILE] [--data-dir DIR] [--run-as USER]\n"
            "\n"
            "Runs the mail server in the foreground, logging to stderr.\n"
            "  -c, --config FILE   configuration file (default: $ESTAFETA_CONFIG,\n"
            "                      else " CONFIG_SYSTEM_PATH " if it exists,\n"
            "                      else the embedded demo configuration)\n"
            "  --data-dir DIR      overrides data-dir (default: $ESTAFETA_DATA)\n"
            "  --run-as USER       overrides run-as (used when started as root)\n"
            "Signals: SIGTERM stops cleanly, SIGHUP reloads the configuration,\n"
            "SIGUSR1 retries deferred mail now.\n");
}

static void serve_on_accept(int fd, const struct sockaddr_storage *peer,
                            const char *peer_text, void *arg)
{
    (void)peer;
    struct serve_accept_arg *a = arg;
    if (a->role == ROLE_POP3 || a->role == ROLE_POP3S)
        pop3d_accept(a->sv->pop3d, fd, peer_text, a->role);
    else
        smtpd_accept(a->sv->smtpd, fd, peer_text, a->role);
}

/* The local socket: the kernel tells who the peer is (SO_PEERCRED). */
static void serve_on_local(int fd, const struct sockaddr_storage *peer,
                           const char *peer_text, void *arg)
{
    (void)peer;
    (void)peer_text;
    struct serve *sv = arg;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
        close(fd);
        return;
    }
    char name[64];
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
    if (getpwuid_r(cred.uid, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res != NULL)
        snprintf(name, sizeof(name), "%s", pw.pw_name);
    else
        snprintf(name, sizeof(name), "uid%u", (unsigned)cred.uid);
    smtpd_accept_local(sv->smtpd, fd, (unsigned)cred.uid, name);
}

/* The certificates: configured ones, else a self-signed one in tls/
 * (created as the run-as user). NULL with a message when none loads. */
static struct tls_server *serve_load_tls(const struct config *cfg, bool self_signed_ok)
{
    struct buf err;
    buf_init(&err, 4096);
    struct tls_server *ts = NULL;
    if (cfg->ntls_certs > 0) {
        ts = tls_server_new(cfg->tls_certs, cfg->ntls_certs, &err);
    } else if (self_signed_ok) {
        struct cfg_tls_cert c = {NULL, NULL};
        if (tls_selfsigned_ensure("tls", cfg->hostname, &c.cert, &c.key, &err) == 0)
            ts = tls_server_new(&c, 1, &err);
        free(c.cert);
        free(c.key);
    } else {
        buf_appends(&err, "no tls-certificate configured");
    }
    if (ts == NULL)
        log_kv(LOG_ERR, "tls.load_failed", "error", buf_cstr(&err), NULL);
    buf_free(&err);
    return ts;
}

static void serve_on_committed(const char *id, void *arg)
{
    struct serve *sv = arg;
    qmgr_notify(sv->qmgr, id);
}

/* Called once by each service when its last session is gone. */
static void serve_all_closed(void *arg)
{
    struct serve *sv = arg;
    if (--sv->open_services == 0)
        event_base_loopexit(sv->base, NULL);
}

static void serve_on_term(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct serve *sv = arg;
    if (sv->stopping)
        return;
    sv->stopping = true;
    char s[16];
    snprintf(s, sizeof(s), "%d", (int)sig);
    log_kv(LOG_INFO, "serve.stopping", "signal", s, NULL);
    for (size_t i = 0; i < sv->nlisteners; i++)
        listener_stop(sv->listeners[i]);
    sv->open_services = 2;
    smtpd_shutdown(sv->smtpd, serve_all_closed, sv);
    pop3d_shutdown(sv->pop3d, serve_all_closed, sv);
}

/* SIGUSR1 (`estafeta queue flush`): retry deferred mail now and pick up
 * messages released from hold. */
static void serve_on_usr1(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct serve *sv = arg;
    qmgr_flush(sv->qmgr);
}

static void serve_on_etrn(const char *node, void *arg)
{
    (void)node;
    struct serve *sv = arg;
    qmgr_flush(sv->qmgr);
}

static void serve_on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct serve *sv = arg;
    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg = config_load(sv->config_path, &sv->ov, &err);
    if (cfg == NULL) {
        log_kv(LOG_ERR, "config.reload_failed", "error", buf_cstr(&err),
               "action", "keeping the running configuration", NULL);
        buf_free(&err);
        return;
    }
    buf_free(&err);
    const struct config *old = sv->cfg->cfg;
    bool same = cfg->nlisteners == old->nlisteners;
    for (size_t i = 0; same && i < cfg->nlisteners; i++)
        same = strcmp(cfg->listeners[i].host, old->listeners[i].host) == 0 &&
               cfg->listeners[i].port == old->listeners[i].port &&
               cfg->listeners[i].role == old->listeners[i].role;
    if (!same)
        log_kv(LOG_WARN, "config.listeners_changed",
               "action", "listener changes take effect after a restart", NULL);
    if (strcmp(cfg->data_dir, old->data_dir) != 0)
        log_kv(LOG_WARN, "config.data_dir_changed",
               "action", "data-dir changes take effect after a restart", NULL);
    log_set_level(cfg->log_level);
    struct tls_server *ts = serve_load_tls(cfg, true);
    if (ts != NULL) {
        smtpd_set_tls(sv->smtpd, ts);
        pop3d_set_tls(sv->pop3d, ts);
        tls_server_unref(sv->tls);
        sv->tls = ts;
    } else {
        log_kv(LOG_WARN, "tls.reload_failed", "action",
               "keeping the running certificates", NULL);
    }
    struct cfgref *ref = cfgref_new(cfg);
    smtpd_set_config(sv->smtpd, ref);
    pop3d_set_config(sv->pop3d, ref);
    qmgr_set_config(sv->qmgr, ref);
    cfgref_put(sv->cfg);
    sv->cfg = ref;
    log_kv(LOG_INFO, "config.reloaded", "source", cfg->source, NULL);
}

/* Binds every listener; logs and fails on the first that cannot be bound. */
static int serve_bind(struct serve *sv)
{
    const struct config *cfg = sv->cfg->cfg;
    sv->listeners = xcalloc(cfg->nlisteners ? cfg->nlisteners : 1,
                            sizeof(*sv->listeners));
    sv->roles = xcalloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*sv->roles));
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        sv->listeners[i] = listener_bind(l->host, l->port);
        char port[8];
        snprintf(port, sizeof(port), "%u", (unsigned)l->port);
        if (sv->listeners[i] == NULL) {
            log_kv(LOG_CRIT, "serve.bind_failed", "host", l->host, "port", port,
                   "error", strerror(errno), NULL);
            fprintf(stderr, "estafeta: cannot listen on %s port %s: %s\n", l->host,
                    port, strerror(errno));
            return -1;
        }
        sv->roles[i] = l->role;
        sv->nlisteners++;
        log_kv(LOG_INFO, "serve.listen", "host", l->host, "port", port, "role",
               listener_role_name(l->role), NULL);
    }
    return 0;
}

/*
 * As root: hands the data directory and the directories the server writes
 * to the run-as user. Each level is opened relative to its parent with
 * O_NOFOLLOW and changed with fchown, so a symlink planted inside the data
 * directory (by whoever controls the run-as user) can never make root give
 * away a directory elsewhere.
 */
static int serve_give_dirs(const char *data_dir, uid_t uid, gid_t gid)
{
    static const char *const tree[][2] = {
        {"queue", NULL}, {"queue", "incoming"}, {"queue", "msg"},
        {"queue", "corrupt"}, {"mail", NULL}, {"tls", NULL},
    };
    int top = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0 || fchown(top, uid, gid) < 0) {
        fprintf(stderr, "estafeta: cannot prepare %s: %s\n", data_dir, strerror(errno));
        if (top >= 0)
            close(top);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < sizeof(tree) / sizeof(*tree) && rc == 0; i++) {
        int parent = top, fd = -1;
        for (int k = 0; k < 2 && tree[i][k] != NULL; k++) {
            const char *name = tree[i][k];
            if (mkdirat(parent, name, 0700) < 0 && errno != EEXIST)
                fd = -1;
            else
                fd = openat(parent, name,
                            O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (parent != top)
                close(parent);
            if (fd < 0 || fchown(fd, uid, gid) < 0) {
                fprintf(stderr, "estafeta: cannot prepare %s/%s%s%s: %s (a "
                        "directory is required, not a symlink)\n", data_dir,
                        tree[i][0], k ? "/" : "", k ? name : "", strerror(errno));
                if (fd >= 0)
                    close(fd);
                rc = -1;
                break;
            }
            parent = fd;
        }
        if (rc == 0 && parent != top)
            close(parent);
    }
    close(top);
    return rc;
}

/* Creates the data directory, and as root hands it to the run-as user and
 * drops privileges. */
static int serve_prepare_dirs_and_drop(const struct config *cfg, const char *run_as)
{
    if (fs_mkdir_p(cfg->data_dir, 0700) < 0) {
        fprintf(stderr, "estafeta: cannot create data-dir %s: %s\n", cfg->data_dir,
                strerror(errno));
        return -1;
    }
    if (geteuid() == 0) {
        if (run_as == NULL) {
            fprintf(stderr,
                    "estafeta: started as root without run-as: set `run-as USER` "
                    "in the configuration or pass --run-as (network input is never "
                    "parsed as root)\n");
            return -1;
        }
        struct passwd *pw = getpwnam(run_as);
        if (pw == NULL || pw->pw_uid == 0) {
            fprintf(stderr, "estafeta: run-as user '%s' %s\n", run_as,
                    pw == NULL ? "does not exist" : "must not be root");
            return -1;
        }
        if (pw->pw_gid == 0) {
            fprintf(stderr, "estafeta: run-as user '%s' must not have group 0\n",
                    run_as);
            return -1;
        }
        if (serve_give_dirs(cfg->data_dir, pw->pw_uid, pw->pw_gid) < 0)
            return -1;
        if (chdir(cfg->data_dir) < 0 ||
            initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
            setuid(pw->pw_uid) < 0) {
            fprintf(stderr, "estafeta: cannot switch to user %s: %s\n", run_as,
                    strerror(errno));
            return -1;
        }
        if (setuid(0) == 0) {
            fprintf(stderr, "estafeta: privileges could not be dropped\n");
            return -1;
        }
        log_kv(LOG_INFO, "serve.privileges_dropped", "user", run_as, NULL);
    } else if (chdir(cfg->data_dir) < 0) {
        fprintf(stderr, "estafeta: cannot enter data-dir %s: %s\n", cfg->data_dir,
                strerror(errno));
        return -1;
    }
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, 'd'},
        {"run-as", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct serve sv;
    memset(&sv, 0, sizeof(sv));
    sv.config_path = NULL;
    sv.ov.data_dir = getenv("ESTAFETA_DATA");
    const char *run_as_opt = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            sv.config_path = optarg;
            break;
        case 'd':
            sv.ov.data_dir = optarg;
            break;
        case 'u':
            run_as_opt = optarg;
            break;
        case 'h':
            serve_usage(stdout);
            return 0;
        default:
            serve_usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        serve_usage(stderr);
        return 2;
    }
    sv.config_path = config_choose_path(sv.config_path);
    /* SIGHUP re-reads the file after we chdir() into data-dir. */
    char *config_abs = NULL;
    if (sv.config_path != NULL && sv.config_path[0] != '/') {
        config_abs = realpath(sv.config_path, NULL);
        if (config_abs == NULL) {
            fprintf(stderr, "estafeta: %s: %s\n", sv.config_path, strerror(errno));
            return 1;
        }
        sv.config_path = config_abs;
    }
    if (sv.ov.data_dir != NULL && sv.ov.data_dir[0] == '\0')
        sv.ov.data_dir = NULL;

    struct buf err;
    buf_init(&err, 4096);
    struct config *cfg = config_load(sv.config_path, &sv.ov, &err);
    if (cfg == NULL) {
        fprintf(stderr, "estafeta: %s\n", buf_cstr(&err));
        buf_free(&err);
        free(config_abs);
        return 1;
    }
    buf_free(&err);
    log_set_level(cfg->log_level);
    sv.cfg = cfgref_new(cfg);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    if (serve_bind(&sv) < 0)
        goto out;
    /* Keys configured by the admin are read before privileges go
     * (security.md 8); a self-signed one is made later, as run-as. */
    if (cfg->ntls_certs > 0 && (sv.tls = serve_load_tls(cfg, false)) == NULL) {
        fprintf(stderr, "estafeta: cannot load the TLS certificates (see log)\n");
        goto out;
    }
    if (serve_prepare_dirs_and_drop(cfg, run_as_opt ? run_as_opt : cfg->run_as) < 0)
        goto out;
    if (sv.tls == NULL && (sv.tls = serve_load_tls(cfg, true)) == NULL) {
        fprintf(stderr, "estafeta: cannot create a TLS certificate (see log)\n");
        goto out;
    }
    /* data-dir is reachable (not listable) by everyone so that local users
     * reach public/, where the sendmail socket is; queue/ and mail/ stay
     * private (0700). */
    if (cfg->local_socket != NULL) {
        if (chmod(".", 0711) < 0 || fs_mkdir_p("public", 0755) < 0 ||
            chmod("public", 0755) < 0 ||
            (sv.local = listener_bind_unix(cfg->local_socket)) == NULL) {
            fprintf(stderr, "estafeta: cannot create the local socket %s: %s\n",
                    cfg->local_socket, strerror(errno));
            goto out;
        }
    }

    struct buf qerr;
    buf_init(&qerr, 4096);
    sv.queue = queue_fs_open("queue", &qerr);
    if (sv.queue == NULL) {
        fprintf(stderr, "estafeta: queue: %s\n", buf_cstr(&qerr));
        buf_free(&qerr);
        goto out;
    }
    buf_free(&qerr);
    queue_fs_tune(sv.queue, cfg->limits[LIM_QUEUE_LOG_MESSAGE],
                  cfg->limits[LIM_QUEUE_LOG_MEMORY]);
    if (queue_recover(sv.queue) < 0) {
        fprintf(stderr, "estafeta: queue recovery failed: %s\n", strerror(errno));
        goto out;
    }
    if (fs_mkdir_p("mail", 0700) < 0) {
        fprintf(stderr, "estafeta: cannot create mail directory: %s\n",
                strerror(errno));
        goto out;
    }
    sv.store = store_maildir_new("mail", cfg->hostname);

    sv.base = event_base_new();
    if (sv.base == NULL) {
        fprintf(stderr, "estafeta: cannot create the event loop\n");
        goto out;
    }
    sv.fails = authfail_new();
    sv.smtpd = smtpd_new(sv.base, sv.queue, sv.cfg, sv.fails, serve_on_committed, &sv);
    smtpd_set_tls(sv.smtpd, sv.tls);
    smtpd_set_store(sv.smtpd, sv.store);
    sv.pop3d = pop3d_new(sv.base, sv.store, sv.cfg, sv.fails);
    pop3d_set_tls(sv.pop3d, sv.tls);
    if (sv.local != NULL)
        listener_start(sv.local, sv.base, serve_on_local, &sv);
    struct buf rerr;
    buf_init(&rerr, 4096);
    sv.qmgr = qmgr_start(sv.queue, sv.store, sv.cfg, true, &rerr);
    if (sv.qmgr == NULL) {
        fprintf(stderr, "estafeta: cannot start outbound delivery: %s\n",
                buf_cstr(&rerr));
        buf_free(&rerr);
        smtpd_free(sv.smtpd);
        pop3d_free(sv.pop3d);
        goto out;
    }
    buf_free(&rerr);
    smtpd_set_flush(sv.smtpd, serve_on_etrn, &sv);
    struct serve_accept_arg *args = xcalloc(sv.nlisteners ? sv.nlisteners : 1,
                                            sizeof(*args));
    for (size_t i = 0; i < sv.nlisteners; i++) {
        args[i].sv = &sv;
        args[i].role = sv.roles[i];
        listener_start(sv.listeners[i], sv.base, serve_on_accept, &args[i]);
    }
    struct event *ev_term = evsignal_new(sv.base, SIGTERM, serve_on_term, &sv);
    struct event *ev_int = evsignal_new(sv.base, SIGINT, serve_on_term, &sv);
    struct event *ev_hup = evsignal_new(sv.base, SIGHUP, serve_on_hup, &sv);
    struct event *ev_usr1 = evsignal_new(sv.base, SIGUSR1, serve_on_usr1, &sv);
    event_add(ev_usr1, NULL);
    event_add(ev_term, NULL);
    event_add(ev_int, NULL);
    event_add(ev_hup, NULL);
    /* For `estafeta queue flush` (SIGUSR1), written only once the handler
     * is in place (SIGUSR1's default action ends the process); data-dir is
     * the working directory. */
    char pid[32];
    int pidlen = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (fs_write_file_atomic(SERVE_PID_FILE, pid, (size_t)pidlen, 0644) < 0)
        log_kv(LOG_WARN, "serve.pid_file", "error", strerror(errno), NULL);
    log_kv(LOG_INFO, "serve.ready", "source", cfg->source, "data_dir",
           cfg->data_dir, NULL);

    event_base_dispatch(sv.base);

    /* smtpd first: its commit callbacks notify the qmgr. */
    smtpd_free(sv.smtpd);
    pop3d_free(sv.pop3d);
    qmgr_stop(sv.qmgr);
    if (queue_fs_mark_clean(sv.queue) < 0)
        log_kv(LOG_WARN, "queue.mark_clean_failed", "error", strerror(errno), NULL);
    unlink(SERVE_PID_FILE);
    event_free(ev_usr1);
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_hup);
    free(args);
    log_kv(LOG_INFO, "serve.stopped", NULL);
    status = 0;
out:
    for (size_t i = 0; i < sv.nlisteners; i++)
        listener_free(sv.listeners[i]);
    free(sv.listeners);
    if (sv.local != NULL) {
        listener_free(sv.local);
        if (sv.cfg != NULL && sv.cfg->cfg->local_socket != NULL)
            unlink(sv.cfg->cfg->local_socket);
    }
    tls_server_unref(sv.tls);
    authfail_free(sv.fails);
    free(sv.roles);
    if (sv.base)
        event_base_free(sv.base);
    if (sv.store)
        store_free(sv.store);
    if (sv.queue)
        queue_close(sv.queue);
    cfgref_put(sv.cfg);
    free(config_abs);
    return status;
}
