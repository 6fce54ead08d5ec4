/*
 * session: private to src/smtpd. One SMTP session: the state machine of
 * RFC 5321 3.3 driven by proto/ parsers, reading and writing only through
 * io/conn. Split by phase: session.c (I/O events, the command loop,
 * replies), cmd.c (commands other than DATA/BDAT), data.c (DATA, BDAT, the
 * Received: header, commit).
 */
#ifndef ESTAFETA_SMTPD_SESSION_H
#define ESTAFETA_SMTPD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/cfgref.h"
#include "io/batch.h"
#include "io/conn.h"
#include "proto/rfc5322.h"
#include "proto/smtp_cmd.h"
#include "proto/smtp_data.h"
#include "proto/msgfix.h"
#include "proto/sasl.h"
#include "proto/smtp_status.h"
#include "queue/queue.h"
#include "smtpd/smtpd.h"

#define SESSION_ADDR_MAX (SMTP_LOCAL_MAX * 2 + SMTP_DOMAIN_MAX + 8)

enum session_state {
    SS_CMD,      /* reading commands */
    SS_DATA,     /* reading DATA content */
    SS_BDAT,     /* reading a BDAT chunk */
    SS_COMMIT,   /* message handed to the commit worker; input paused */
    SS_CLOSED,   /* QUIT or 421 sent; waiting for the flush */
    SS_TLS,      /* TLS handshake running (STARTTLS or implicit TLS) */
    SS_AUTH,     /* AUTH exchange: reading the client's base64 lines */
    SS_AUTH_WAIT,/* AUTH: password check or failure delay; input paused */
    SS_RCPT_WAIT,/* RCPT: the quota check on its worker; input paused */
};

struct session_rcpt {
    char address[SESSION_ADDR_MAX];
    char orcpt[SMTP_ORCPT_MAX + 1];
    unsigned notify;
};

struct client_slot;

struct session {
    struct smtpd *srv;
    struct session *prev, *next;
    struct cfgref *cfgref;
    const struct config *cfg;
    struct conn *conn;
    struct client_slot *client;
    enum listener_role role;
    char sid[24];
    char peer[64];
    enum session_state state;
    bool helo_seen;
    bool esmtp;
    char helo[256];
    unsigned errors;
    struct smtp_line_reader lr;
    bool shutdown;           /* server is stopping: close after this reply */
    bool conn_gone;          /* peer vanished while a commit was in flight */
    unsigned busy;           /* nesting of entries into session code */
    bool finished;           /* connection closed: free when not busy */
    struct event *shutdown_timer;

    /* TLS and AUTH */
    bool authenticated;
    bool local;              /* ROLE_LOCAL: trusted by uid */
    char auth_user[SESSION_ADDR_MAX];  /* login, or "uid:NAME" when local */
    struct sasl_server *sasl;
    bool sasl_final;         /* SCRAM: waiting for the empty line after v= */
    struct batch_job auth_job;
    bool auth_pending;       /* a password check is on the worker thread */
    bool greeted;
    struct event *auth_timer;

    /* transaction */
    bool in_tx;
    struct smtp_mail_args mail;
    char sender[SESSION_ADDR_MAX];
    struct session_rcpt *rcpts;
    size_t nrcpts, rcpts_alloc;

    /* RCPT-time quota check (cmd.c): the recipient waits in quota_rcpt
     * while the worker reads the usage of quota_mailbox. The worker only
     * reads quota_mailbox and writes quota_bytes/msgs/err; the loop leaves
     * them alone while quota_pending. */
    struct batch_job quota_job;
    bool quota_pending;
    char quota_mailbox[SESSION_ADDR_MAX];
    uint64_t quota_bytes, quota_msgs;
    int quota_err;
    struct session_rcpt quota_rcpt;

    /* message content */
    struct msgfix fix;
    bool fixing;             /* submission fix-ups (Bcc, Date, Message-ID) */
    struct queue_msg *msg;
    struct smtp_data_reader dr;
    struct hdr_scan hs;
    uint64_t msg_size;       /* octets from the client */
    bool too_big;
    int write_errno;
    bool bdat_used;
    bool bdat_last;
    bool bdat_discard;       /* chunk is read and dropped */
    const struct smtp_status *bdat_error; /* reply after a dropped chunk */
    uint64_t bdat_left;
    uint64_t bdat_chunk;
    bool bdat_prev_cr;       /* line-end check across BDAT chunks */
    bool bdat_bad_eol;
    bool bdat_long_line;
    size_t bdat_line_len;

    /* commit */
    struct batch_job job;
    struct queue_env env;
    struct queue_rcpt *env_rcpts;
    char qid[QUEUE_ID_SIZE];
};

/* session.c */
void session_reply(struct session *s, int code, const char *enh,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void session_reply_status(struct session *s, const struct smtp_status *st);
void session_close(struct session *s, int code, const char *enh,
                   const char *text);
void session_reset_tx(struct session *s);
void session_count_error(struct session *s);
void session_process(struct session *s);
size_t session_limit(const struct session *s, int lim);

/* cmd.c */
void cmd_dispatch(struct session *s, const struct smtp_cmd *cmd);
void cmd_tls_ready(struct session *s);
bool cmd_may_submit(const struct session *s);
void cmd_quota_run(struct batch_job *job);     /* quota worker thread */
void cmd_rcpt_quota_done(struct session *s);   /* loop thread */

/* auth.c */
void auth_begin(struct session *s, const struct smtp_cmd *cmd);
void auth_line(struct session *s, const char *line, size_t len);
void auth_session_free(struct session *s);
void auth_abort(struct session *s);   /* ends a running exchange, no reply */
void auth_check_password(struct batch_job *job);   /* worker thread */
void auth_checked(struct session *s, int ok);       /* loop thread */
const char *auth_mechanisms_offered(const struct session *s, char *buf, size_t cap);

/* data.c */
void data_begin(struct session *s);
void data_feed(struct session *s, struct buf *in);
void bdat_begin(struct session *s, const struct smtp_cmd *cmd);
void bdat_feed(struct session *s, struct buf *in);
void data_abort(struct session *s);
void data_committed(struct session *s, int result);

/* smtpd.c */
void smtpd_submit_commit(struct smtpd *srv, struct session *s);
void smtpd_session_finished(struct smtpd *srv, struct session *s);
int smtpd_is_shutting_down(const struct smtpd *srv);
struct queue *smtpd_queue(struct smtpd *srv);
struct tls_server *smtpd_tls(struct smtpd *srv);
struct store *smtpd_store(struct smtpd *srv);
struct event_base *smtpd_base(struct smtpd *srv);
void smtpd_session_enter(struct session *s);
void smtpd_greet(struct session *s);
void smtpd_session_leave(struct session *s);
void smtpd_submit_auth(struct smtpd *srv, struct session *s);
/* Failed-login accounting per client address (auth.c asks, smtpd.c keeps). */
bool smtpd_auth_locked(struct smtpd *srv, const struct session *s);
void smtpd_auth_failed(struct smtpd *srv, const struct session *s);
void smtpd_auth_succeeded(struct smtpd *srv, const struct session *s);
void smtpd_notify_committed(struct smtpd *srv, const char *id);
/* ETRN: asks the queue to retry now; false if nothing is wired to it. */
bool smtpd_request_flush(struct smtpd *srv, const char *node);
/* The RCPT quota check (cmd.c asks, smtpd.c runs the worker and keeps a
 * short-lived cache of usages per mailbox, SMTPD_QUOTA_CACHE_MS, which
 * cmd.c uses only to accept). */
#define SMTPD_QUOTA_CACHE_MS 2000
void smtpd_submit_quota(struct smtpd *srv, struct session *s);
bool smtpd_quota_cached(struct smtpd *srv, const char *mailbox,
                        uint64_t *bytes_r, uint64_t *msgs_r);
void smtpd_quota_remember(struct smtpd *srv, const char *mailbox,
                          uint64_t bytes, uint64_t msgs);
/* A recipient accepted for mailbox: its cached usage counts one more
 * message of `bytes` (so a burst cannot fill it past the limit unseen). */
void smtpd_quota_charge(struct smtpd *srv, const char *mailbox, uint64_t bytes);

#endif
