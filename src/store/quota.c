/*
 * quota: the quota rules every backend shares (store.h, doc/store.md
 * "Quota"): the arithmetic, the delivery check, and the warning a user
 * gets when a delivery takes the mailbox to STORE_QUOTA_WARN_PERCENT of a
 * limit.
 *
 * The warning state (per user, kept by the backend: a file in the INBOX
 * Maildir, or memory for store_mem) moves so:
 *
 *   armed --(check: usage after this delivery >= threshold)--> due
 *   due   --(the delivery succeeded; usage still >= threshold)--> sent,
 *           and the warning message goes into the INBOX
 *   due   --(the delivery succeeded; usage below it after all)--> armed
 *   armed --(check: the message is refused and usage >= threshold)--> sent,
 *           warning delivered at once (a user made full by a lowered limit
 *           learns it although nothing more is delivered)
 *   due, sent --(check: usage after this delivery < threshold)--> armed
 *
 * Every transition happens under the backend's per-user state lock, held
 * while the warning is delivered, so two deliveries at once send one
 * warning. The warning itself bypasses the quota (it is small, and the
 * user must get it) and never triggers another.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "store/store_backend.h"

/* ---- arithmetic ---- */

bool store_quota_fits(uint64_t bytes, uint64_t messages, uint64_t max_bytes,
                      uint64_t max_messages, uint64_t incoming)
{
    if (max_bytes != 0 && (bytes > max_bytes || incoming > max_bytes - bytes))
        return false;
    return max_messages == 0 || messages < max_messages;
}

/* ceil(limit * 90 / 100) without overflow. */
static uint64_t threshold(uint64_t limit)
{
    uint64_t keep = 100 - STORE_QUOTA_WARN_PERCENT;
    return limit - (limit / 100) * keep - ((limit % 100) * keep) / 100;
}

bool store_quota_high(uint64_t bytes, uint64_t messages, uint64_t max_bytes,
                      uint64_t max_messages)
{
    return (max_bytes != 0 && bytes >= threshold(max_bytes)) ||
           (max_messages != 0 && messages >= threshold(max_messages));
}

/* Whether one more message fits and leaves the usage below the warning
 * threshold: the case in which a running total that may lag is good
 * enough to let it in. */
static bool quota_clear(uint64_t bytes, uint64_t messages, uint64_t max_bytes,
                        uint64_t max_messages, uint64_t incoming)
{
    uint64_t with_b, with_m;
    return !__builtin_add_overflow(bytes, incoming, &with_b) &&
           !__builtin_add_overflow(messages, 1, &with_m) &&
           store_quota_fits(bytes, messages, max_bytes, max_messages, incoming) &&
           !store_quota_high(with_b, with_m, max_bytes, max_messages);
}

int store_quota_usage_for(struct store *s, const char *user, uint64_t max_bytes,
                          uint64_t max_messages, uint64_t incoming, bool total_ok,
                          uint64_t *bytes_r, uint64_t *messages_r)
{
    if (total_ok && store_quota_usage_cached(s, user, bytes_r, messages_r) == 0 &&
        quota_clear(*bytes_r, *messages_r, max_bytes, max_messages, incoming))
        return 0;
    return store_quota_usage(s, user, bytes_r, messages_r);
}

static unsigned percent(uint64_t used, uint64_t limit)
{
    if (limit == 0)
        return 0;
    long double p = (long double)used * 100.0L / (long double)limit;
    return p >= 999.0L ? 999u : (unsigned)p;
}

char *store_size_format(char *out, size_t cap, uint64_t bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    size_t u = 0;
    uint64_t div = 1;
    while (u + 1 < sizeof(units) / sizeof(units[0]) && bytes / div >= 1024) {
        div *= 1024;
        u++;
    }
    if (u == 0 || bytes % div == 0)
        snprintf(out, cap, "%" PRIu64 " %s", bytes / div, units[u]);
    else if (bytes / div < 10)
        snprintf(out, cap, "%.1Lf %s", (long double)bytes / (long double)div,
                 units[u]);
    else
        snprintf(out, cap, "%.0Lf %s", (long double)bytes / (long double)div,
                 units[u]);
    return out;
}

char *store_quota_describe(char *out, size_t cap, uint64_t bytes,
                           uint64_t messages, uint64_t max_bytes,
                           uint64_t max_messages)
{
    char used[32], lim[32], count[64];
    store_size_format(used, sizeof(used), bytes);
    if (max_messages != 0)
        snprintf(count, sizeof(count), "%" PRIu64 " of %" PRIu64 " message%s",
                 messages, max_messages, max_messages == 1 ? "" : "s");
    else
        snprintf(count, sizeof(count), "%" PRIu64 " message%s", messages,
                 messages == 1 ? "" : "s");
    if (max_bytes == 0 && max_messages == 0) {
        snprintf(out, cap, "%s, %s (no quota)", count, used);
        return out;
    }
    unsigned pb = percent(bytes, max_bytes), pm = percent(messages, max_messages);
    unsigned p = pb > pm ? pb : pm;
    if (max_bytes != 0)
        snprintf(out, cap, "%s, %s of %s (%u%%)", count, used,
                 store_size_format(lim, sizeof(lim), max_bytes), p);
    else
        snprintf(out, cap, "%s, %s (%u%%)", count, used, p);
    return out;
}

/* ---- the warning message ---- */

static ssize_t read_nothing(void *arg, void *p, size_t n)
{
    (void)arg;
    (void)p;
    (void)n;
    return 0;
}

/* RFC 5322 date, in English whatever the locale. */
static void rfc5322_date(char *out, size_t cap, time_t t)
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri",
                                     "Sat"};
    static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    localtime_r(&t, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(out, cap, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
             wd[tm.tm_wday % 7], tm.tm_mday, mon[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign,
             off / 60, off % 60);
}

/* Puts the warning into user's INBOX: 0 or -1/errno. The user name was
 * validated by the backend before any state existed. */
static int quota_warn(struct store *s, const char *user, uint64_t bytes,
                      uint64_t msgs, uint64_t max_bytes, uint64_t max_messages)
{
    const char *domain = strchr(user, '@');
    domain = domain != NULL ? domain + 1 : "localhost";
    char date[64], used[32], lim[32], usage[128];
    uint64_t rnd = 0;
    time_t now = time(NULL);
    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
        rnd = (uint64_t)now ^ (uint64_t)(uintptr_t)&rnd;
    rfc5322_date(date, sizeof(date), now);
    store_quota_describe(usage, sizeof(usage), bytes, msgs, max_bytes,
                         max_messages);
    struct buf b;
    buf_init(&b, 16384);
    buf_appendf(&b,
                "Return-Path: <>\r\n"
                "Date: %s\r\n"
                "From: Mail System <postmaster@%s>\r\n"
                "To: <%s>\r\n"
                "Subject: Your mailbox is almost full\r\n"
                "Message-ID: <quota.%lld.%016" PRIx64 "@%s>\r\n"
                "Auto-Submitted: auto-generated\r\n"
                "MIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n"
                "Content-Transfer-Encoding: 7bit\r\n"
                "\r\n"
                "Your mailbox %s is almost full.\r\n"
                "\r\n"
                "It now holds %s.\r\n"
                "\r\n",
                date, domain, user, (long long)now, rnd, domain, user, usage);
    if (max_bytes != 0)
        buf_appendf(&b, "  Space:    %s used of %s (%u%%)\r\n",
                    store_size_format(used, sizeof(used), bytes),
                    store_size_format(lim, sizeof(lim), max_bytes),
                    percent(bytes, max_bytes));
    if (max_messages != 0)
        buf_appendf(&b, "  Messages: %" PRIu64 " of %" PRIu64 " (%u%%)\r\n",
                    msgs, max_messages, percent(msgs, max_messages));
    buf_appendf(&b,
                "\r\n"
                "When it is full, new messages to you are refused or held\r\n"
                "back until there is room again, and their senders are told\r\n"
                "that your mailbox is full.\r\n"
                "\r\n"
                "To make room, delete the messages you no longer need (large\r\n"
                "and old ones first, in every folder) and empty the Trash\r\n"
                "folder, or move messages to your own computer.\r\n"
                "\r\n"
                "You will not get this warning again until your mailbox has\r\n"
                "gone below %d%% and then filled up again.\r\n"
                "\r\n"
                "-- \r\n"
                "The mail system\r\n",
                STORE_QUOTA_WARN_PERCENT);
    int r = -1;
    if (b.data != NULL)
        r = store_deliver_peek(s, user, NULL, b.data, b.len, read_nothing, NULL,
                               NULL, 0, NULL);
    int err = errno;
    log_kv(r == 0 ? LOG_INFO : LOG_WARN, "store.quota_warning", "mailbox", user,
           "usage", usage, "result", r == 0 ? "delivered" : strerror(err), NULL);
    buf_free(&b);
    errno = err;
    return r;
}

/* ---- the delivery check and the state ---- */

int store_deliver_quota(struct store *s, const char *user, uint64_t max_bytes,
                        uint64_t max_messages, uint64_t incoming_size)
{
    if (max_bytes == 0 && max_messages == 0)
        return 0;
    uint64_t bytes, msgs;
    /* Most checks change nothing: look at the state without the lock. */
    struct store_qstate st;
    if (s->ops->quota_state_peek(s, user, &st) < 0)
        st.state = STORE_QWARN_ARMED;
    /* The running total may let mail in, but not re-arm a warning that
     * was due or sent: that rests on an exact count. */
    if (store_quota_usage_for(s, user, max_bytes, max_messages, incoming_size,
                              st.state == STORE_QWARN_ARMED, &bytes, &msgs) < 0)
        return -1;
    bool fits = store_quota_fits(bytes, msgs, max_bytes, max_messages,
                                 incoming_size);
    /* What the user will have when this check is done with. */
    uint64_t after_b = fits ? bytes + incoming_size : bytes;
    uint64_t after_m = fits ? msgs + 1 : msgs;
    bool high = store_quota_high(after_b, after_m, max_bytes, max_messages);

    /* Refused while already that full: no delivery will follow to carry
     * the warning, so it goes now. */
    bool warn_now = !fits && store_quota_high(bytes, msgs, max_bytes,
                                              max_messages);
    if (!(high ? st.state == STORE_QWARN_ARMED ||
                     (st.state == STORE_QWARN_DUE && warn_now)
               : st.state != STORE_QWARN_ARMED))
        goto out;
    void *h;
    if (s->ops->quota_state_lock(s, user, high, &h, &st) < 0)
        goto out; /* none kept (armed) and nothing to record; or an error:
                     the check itself still answers */
    const struct store_qstate *nst = NULL;
    struct store_qstate next;
    if (!high && st.state != STORE_QWARN_ARMED) {
        next = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
        nst = &next;
    } else if (high && st.state != STORE_QWARN_SENT) {
        next = (struct store_qstate){STORE_QWARN_DUE, max_bytes, max_messages};
        if (warn_now &&
            quota_warn(s, user, bytes, msgs, max_bytes, max_messages) == 0)
            next.state = STORE_QWARN_SENT;
        if (next.state != st.state || st.state == STORE_QWARN_ARMED)
            nst = &next;
    }
    if (s->ops->quota_state_unlock(h, nst) < 0)
        log_kv(LOG_WARN, "store.quota_state", "mailbox", user, "error",
               strerror(errno), NULL);
out:
    if (!fits) {
        errno = EDQUOT;
        return -1;
    }
    return 0;
}

void store_quota_delivered(struct store *s, const char *mailbox,
                           const struct store_qstate *peeked)
{
    struct store_qstate st;
    void *h;
    /* The backend's deliver peeked (one small read per delivery, through
     * the directories it held; a missing record is "armed"). */
    if (peeked->state != STORE_QWARN_DUE ||
        s->ops->quota_state_lock(s, mailbox, false, &h, &st) < 0)
        return;
    const struct store_qstate *nst = NULL;
    struct store_qstate next;
    uint64_t bytes, msgs;
    /* Another delivery may have warned meanwhile; and the usage is read
     * again for the message (it is also the last word on "high"). */
    if (st.state == STORE_QWARN_DUE &&
        store_quota_usage(s, mailbox, &bytes, &msgs) == 0) {
        if (!store_quota_high(bytes, msgs, st.max_bytes, st.max_messages)) {
            next = (struct store_qstate){STORE_QWARN_ARMED, 0, 0};
            nst = &next;
        } else if (quota_warn(s, mailbox, bytes, msgs, st.max_bytes,
                              st.max_messages) == 0) {
            next = (struct store_qstate){STORE_QWARN_SENT, st.max_bytes,
                                         st.max_messages};
            nst = &next;
        }
    }
    if (s->ops->quota_state_unlock(h, nst) < 0)
        log_kv(LOG_WARN, "store.quota_state", "mailbox", mailbox, "error",
               strerror(errno), NULL);
}
