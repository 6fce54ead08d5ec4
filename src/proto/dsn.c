/*
 * dsn: delivery status notification text (RFC 3464, RFC 6522, RFC 6533).
 * Contract in dsn.h.
 *
 * Why the shape: the head is produced in pieces by a small state machine so
 * that the report about a message with 100,000 recipients streams into the
 * queue like the original does; everything taken from a peer goes through
 * clean() (caps, no controls, no 8-bit outside SMTPUTF8 reports) and then
 * through fold(), which alone decides where lines end, so no peer text can
 * start a line of its own (no forged field, no forged MIME delimiter: every
 * continuation line starts with white space).
 */
#include "proto/dsn.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proto/smtp_cmd.h"

/* ---- small pure helpers ---- */

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Length of the valid UTF-8 sequence at p[0..n) (RFC 3629), 0 if none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

enum clean_mode {
    CLEAN_TEXT,   /* printable ASCII, and UTF-8 when allowed */
    CLEAN_HOST,   /* letters, digits, "-._:[]" only: a host name or literal */
};

/*
 * Copies s into out (size cap + 4) cleaned: a control octet becomes '?' (a
 * TAB a space), an 8-bit octet '?' unless utf8 allows a valid sequence;
 * at most cap octets of it, then "..." if anything was left out. A
 * multi-octet character is never split. Returns the length.
 */
static size_t clean(const char *s, bool utf8, enum clean_mode mode, size_t cap,
                    char *out)
{
    const unsigned char *u = (const unsigned char *)(s != NULL ? s : "");
    size_t n = strlen((const char *)u), o = 0;
    for (size_t i = 0; i < n; ) {
        size_t k = 1;
        unsigned char c = u[i];
        char rep = (char)c;
        if (mode == CLEAN_HOST) {
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      is_digit(c) || (c != 0 && strchr("-._:[]", c) != NULL);
            if (!ok)
                rep = '?';
        } else if (c == '\t') {
            rep = ' ';
        } else if (c < 0x20 || c == 0x7f) {
            rep = '?';
        } else if (c >= 0x80) {
            k = utf8 ? utf8_len(u + i, n - i) : 0;
            if (k == 0) {
                k = 1;
                rep = '?';
            }
        }
        if (o + k > cap) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (k == 1)
            out[o] = rep;
        else
            memcpy(out + o, u + i, k);
        o += k;
        i += k;
    }
    out[o] = '\0';
    return o;
}

static bool has_8bit(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/*
 * Appends s[0..n) (no CR or LF in it) to a line already `col` octets long.
 * hdr: a header field body; a fold is a CRLF inserted before existing white
 * space, so unfolding gives back the text exactly. Otherwise (part 1 text)
 * the spaces at a break are replaced by CRLF and `indent`. A word that
 * alone would pass the hard limit is broken (at a character boundary) with
 * CRLF and a space / the indent: the only place the text is changed.
 */
static int fold(struct buf *out, size_t col, bool hdr, const char *indent,
                const char *s, size_t n)
{
    const size_t hard = DSN_LINE_MAX - 8;
    size_t ilen = hdr ? 1 : strlen(indent);
    bool word_on_line = false;
    size_t i = 0;
    while (i < n) {
        size_t ws = i;
        while (ws < n && s[ws] == ' ')
            ws++;
        size_t we = ws;
        while (we < n && s[we] != ' ')
            we++;
        size_t sp = ws - i, wl = we - ws;
        if (word_on_line && sp > 0 && col + sp + wl > DSN_FOLD_AT) {
            if (buf_append(out, "\r\n", 2) < 0)
                return -1;
            if (hdr) {
                if (buf_append(out, s + i, sp) < 0)
                    return -1;
                col = sp;
            } else {
                if (buf_appends(out, indent) < 0)
                    return -1;
                col = ilen;
            }
        } else {
            if (buf_append(out, s + i, sp) < 0)
                return -1;
            col += sp;
        }
        /* The word, broken if it cannot fit on any line. */
        const char *w = s + ws;
        while (wl > 0) {
            size_t room = col < hard ? hard - col : 0;
            size_t take = wl <= room ? wl : room;
            if (take < wl) {
                /* back off to a character start (never split UTF-8) */
                while (take > 0 && ((unsigned char)w[take] & 0xc0) == 0x80)
                    take--;
            }
            if (buf_append(out, w, take) < 0)
                return -1;
            col += take;
            w += take;
            wl -= take;
            if (wl > 0) {
                if (buf_append(out, "\r\n", 2) < 0 ||
                    buf_appends(out, hdr ? " " : indent) < 0)
                    return -1;
                col = ilen;
            }
        }
        word_on_line = true;
        i = we;
    }
    return 0;
}

/* "Name: value" folded, with its CRLF. */
static int field(struct buf *out, const char *name, const char *value)
{
    size_t nl = strlen(name);
    if (buf_append(out, name, nl) < 0 || buf_append(out, ": ", 2) < 0 ||
        fold(out, nl + 2, true, " ", value, strlen(value)) < 0 ||
        buf_append(out, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* ---- public helpers ---- */

bool dsn_wanted(unsigned notify, enum dsn_action action)
{
    if (notify & SMTP_NOTIFY_NEVER)
        return false;
    switch (action) {
    case DSN_FAILED:
        return notify == 0 || (notify & SMTP_NOTIFY_FAILURE);
    case DSN_DELAYED:
        return notify == 0 || (notify & SMTP_NOTIFY_DELAY);
    case DSN_DELIVERED:
    case DSN_RELAYED:
    case DSN_EXPANDED:
        return (notify & SMTP_NOTIFY_SUCCESS) != 0;
    }
    return false;
}

/* An action outside the enum is reported as a failure: the safe reading. */
static enum dsn_action act(const struct dsn_rcpt *r)
{
    return (unsigned)r->action <= DSN_EXPANDED ? r->action : DSN_FAILED;
}

enum dsn_kind dsn_kind_of(const struct dsn_rcpt *rcpts, size_t n)
{
    bool delay = false;
    for (size_t i = 0; i < n; i++) {
        if (act(&rcpts[i]) == DSN_FAILED)
            return DSN_KIND_FAILURE;
        if (act(&rcpts[i]) == DSN_DELAYED)
            delay = true;
    }
    return delay ? DSN_KIND_DELAY : DSN_KIND_SUCCESS;
}

const char *dsn_subject(enum dsn_kind kind)
{
    switch (kind) {
    case DSN_KIND_FAILURE:
        return "Undelivered Mail Returned to Sender";
    case DSN_KIND_DELAY:
        return "Delayed Mail (still being retried)";
    case DSN_KIND_SUCCESS:
        return "Successful Mail Delivery Report";
    }
    return "Undelivered Mail Returned to Sender";
}

const char *dsn_action_name(enum dsn_action action)
{
    static const char *const names[] = {"failed", "delayed", "delivered",
                                        "relayed", "expanded"};
    return (unsigned)action <= DSN_EXPANDED ? names[action] : "failed";
}

enum dsn_return dsn_return_mode(int ret, enum dsn_kind kind, bool binary,
                                uint64_t body_size, size_t bounce_size)
{
    if (kind != DSN_KIND_FAILURE)
        return DSN_RETURN_HDRS_REPORT;
    if (ret == SMTP_RET_HDRS)
        return DSN_RETURN_HDRS;
    if (binary)
        return DSN_RETURN_HDRS_BINARY;
    if (body_size > bounce_size)
        return DSN_RETURN_HDRS_SIZE;
    return DSN_RETURN_FULL;
}

void dsn_date(int64_t t, char out[DSN_DATE_SIZE])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    /* Years 1970..9999: RFC 5322 has 4-digit years, and the calendar code
     * need not handle anything stranger a caller might pass. */
    if (t < 0 || t > (int64_t)253402300799LL)
        t = 0;
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm) == NULL) {
        tt = 0;
        gmtime_r(&tt, &tm);
    }
    snprintf(out, DSN_DATE_SIZE, "%s, %d %s %04d %02d:%02d:%02d +0000",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

bool dsn_status_valid(const char *s, size_t len)
{
    size_t i = 0;
    if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return false;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        while (i < len && is_digit((unsigned char)s[i]) && d < 4) {
            i++;
            d++;
        }
        if (d == 0 || d > 3)
            return false;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return false;
            i++;
        }
    }
    return i == len;
}

/* Length of the token at s (up to a space or the end). */
static size_t token_len(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0' && s[n] != ' ')
        n++;
    return n;
}

/* True if diag starts like an SMTP reply: [2-5]dd then SP, '-' or end. */
static bool smtp_reply_like(const char *d)
{
    return d[0] >= '2' && d[0] <= '5' && is_digit((unsigned char)d[1]) &&
           is_digit((unsigned char)d[2]) &&
           (d[3] == '\0' || d[3] == ' ' || d[3] == '-');
}

void dsn_status_of(const struct dsn_rcpt *r, char out[DSN_STATUS_SIZE])
{
    if (r->status != NULL) {
        size_t n = strlen(r->status);
        if (dsn_status_valid(r->status, n)) {
            memcpy(out, r->status, n + 1);
            return;
        }
    }
    const char *d = r->diagnostic;
    if (d != NULL && d[0] != '\0') {
        if (smtp_reply_like(d))
            d += d[3] == '\0' ? 3 : 4;
        size_t n = token_len(d);
        if (dsn_status_valid(d, n)) {
            memcpy(out, d, n);
            out[n] = '\0';
            return;
        }
    }
    switch (act(r)) {
    case DSN_FAILED:
        strcpy(out, "5.0.0");
        break;
    case DSN_DELAYED:
        strcpy(out, "4.0.0");
        break;
    default:
        strcpy(out, "2.0.0");
        break;
    }
}

size_t dsn_token(const unsigned char *rnd, size_t n, char *out, size_t cap)
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        out[o++] = alphabet[rnd[i] % 62];
    out[o] = '\0';
    return o;
}

void dsn_boundary(const unsigned char rnd[DSN_RANDOM_BYTES],
                  char out[DSN_BOUNDARY_SIZE])
{
    static const char prefix[] = "=_estafeta_";
    memcpy(out, prefix, sizeof(prefix));
    dsn_token(rnd, DSN_RANDOM_BYTES, out + sizeof(prefix) - 1,
              DSN_BOUNDARY_SIZE - (sizeof(prefix) - 1));
}

/* ---- addresses in part 2 ---- */

static bool all_ascii(const char *s)
{
    return !has_8bit(s, strlen(s));
}

/*
 * RFC 6533 3: utf-8-addr-xtext, for a non-ASCII address in a report that
 * cannot carry UTF-8: every octet outside QCHAR and every non-ASCII
 * character as \x{HEX}. Invalid UTF-8 is written as U+FFFD.
 */
static int put_utf8_xtext(struct buf *out, const char *s, size_t cap)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), written = 0;
    for (size_t i = 0; i < n && written < cap; ) {
        unsigned char c = u[i];
        unsigned long cp;
        size_t k = utf8_len(u + i, n - i);
        if (k == 0) {
            cp = 0xfffd;
            k = 1;
        } else if (k == 1) {
            cp = c;
        } else {
            cp = c & (0x7f >> k);
            for (size_t j = 1; j < k; j++)
                cp = (cp << 6) | (u[i + j] & 0x3f);
        }
        bool qchar = cp >= 0x21 && cp <= 0x7e && cp != '+' && cp != '=' &&
                     cp != '\\';
        int rc = qchar ? buf_putc(out, (char)cp)
                       : buf_appendf(out, "\\x{%lX}", cp);
        if (rc < 0)
            return -1;
        written += qchar ? 1 : 8;
        i += k;
    }
    return 0;
}

/* "rfc822; addr" / "utf-8; addr" into out, cleaned. */
static int put_address_value(struct buf *out, const char *addr, bool utf8)
{
    char c[DSN_ADDR_MAX + 4];
    addr = addr != NULL ? addr : "";
    if (all_ascii(addr)) {
        clean(addr, false, CLEAN_TEXT, DSN_ADDR_MAX, c);
        return buf_appendf(out, "rfc822; %s", c);
    }
    if (utf8) {
        clean(addr, true, CLEAN_TEXT, DSN_ADDR_MAX, c);
        return buf_appendf(out, "utf-8; %s", c);
    }
    if (buf_appends(out, "utf-8; ") < 0)
        return -1;
    return put_utf8_xtext(out, addr, DSN_ADDR_MAX);
}

/* ORCPT "type;xtext" decoded into "type;text"; false if it does not decode
 * (it was validated on receipt, so only a damaged queue gets here). */
static bool orcpt_decode(const char *orcpt, char *out, size_t cap)
{
    const char *semi = strchr(orcpt, ';');
    if (semi == NULL || semi == orcpt || (size_t)(semi - orcpt) > 32)
        return false;
    size_t tl = (size_t)(semi - orcpt);
    for (size_t i = 0; i < tl; i++) {
        unsigned char c = (unsigned char)orcpt[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
              c == '-'))
            return false;
    }
    if (tl + 2 > cap)
        return false;
    memcpy(out, orcpt, tl + 1);
    const char *x = semi + 1;
    size_t xl = strlen(x);
    if (xl == 0 || xl > SMTP_ORCPT_MAX)
        return false;
    return smtp_xtext_decode(x, xl, out + tl + 1, cap - tl - 1) > 0;
}

/* An IP address as text (what smtpd stores for a network client), so that
 * "uid=1000" of a local submission is not dressed up as one. */
static bool ip_like(const char *s)
{
    size_t n = strlen(s);
    bool sep = false;
    if (n < 2 || n > 45)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.' || c == ':')
            sep = true;
        else if (!(is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return sep;
}

/* ---- the writer ---- */

enum {
    P_TOP, P_TEXT, P_TEXT_END, P_STATUS_HEAD, P_STATUS_RCPT, P_PART3, P_DONE,
};

static const char *part3_type(const struct dsn_report *r)
{
    bool full = r->ret == DSN_RETURN_FULL;
    if (r->smtputf8)
        return full ? "message/global" : "message/global-headers";
    return full ? "message/rfc822" : "text/rfc822-headers";
}

static int put_top(const struct dsn_report *r, enum dsn_kind kind, struct buf *out)
{
    char date[DSN_DATE_SIZE], to[DSN_ADDR_MAX + 4], host[DSN_HOST_MAX + 4];
    char tok[DSN_TOKEN_MAX + 4];
    bool u8 = r->smtputf8;
    dsn_date(r->now, date);
    clean(r->sender, u8, CLEAN_TEXT, DSN_ADDR_MAX, to);
    clean(r->hostname, false, CLEAN_HOST, DSN_HOST_MAX, host);
    clean(r->message_id, false, CLEAN_HOST, DSN_TOKEN_MAX, tok);
    if (field(out, "Date", date) < 0 ||
        buf_appendf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host) < 0 ||
        buf_appendf(out, "To: <%s>\r\n", to) < 0 ||
        field(out, "Subject", dsn_subject(kind)) < 0 ||
        buf_appendf(out, "Message-ID: <%s@%s>\r\n", tok, host) < 0 ||
        /* RFC 3834 5: keeps vacation responders from answering. */
        buf_appends(out, "Auto-Submitted: auto-replied\r\n") < 0 ||
        buf_appends(out, "MIME-Version: 1.0\r\n") < 0 ||
        buf_appendf(out, "Content-Type: multipart/report; report-type=%s;\r\n"
                         "\tboundary=\"%s\"\r\n",
                    u8 ? "global-delivery-status" : "delivery-status",
                    r->boundary) < 0)
        return -1;
    if ((u8 || r->eightbit) &&
        buf_appends(out, "Content-Transfer-Encoding: 8bit\r\n") < 0)
        return -1;
    if (buf_appendf(out, "\r\nThis is a MIME-encapsulated message.\r\n"
                         "\r\n--%s\r\n"
                         "Content-Description: Notification\r\n"
                         "Content-Type: text/plain; charset=%s\r\n%s"
                         "\r\n"
                         "This is the mail system at host %s.\r\n",
                    r->boundary, u8 ? "utf-8" : "us-ascii",
                    u8 ? "Content-Transfer-Encoding: 8bit\r\n" : "", host) < 0)
        return -1;
    return 0;
}

static const char *group_intro(enum dsn_action a)
{
    switch (a) {
    case DSN_FAILED:
        return "Your message could not be delivered to the recipients below.\r\n"
               "This is a permanent error; it will not be tried again.\r\n";
    case DSN_DELAYED:
        return "Your message has not yet been delivered to the recipients below.\r\n"
               "It is still being retried: this is only a warning, you need not\r\n"
               "send it again. You will be told if delivery fails in the end.\r\n";
    case DSN_DELIVERED:
        return "Your message was delivered to the recipients below.\r\n";
    case DSN_RELAYED:
        return "Your message was passed on for the recipients below to a mail\r\n"
               "system that does not send delivery notifications, so no further\r\n"
               "notice of its delivery will follow.\r\n";
    case DSN_EXPANDED:
        return "Your message was delivered to the recipients below, which pass it\r\n"
               "on to further addresses.\r\n";
    }
    return "";
}

static bool group_has(const struct dsn_report *r, enum dsn_action a)
{
    for (size_t i = 0; i < r->nrcpts; i++)
        if (act(&r->rcpts[i]) == a)
            return true;
    return false;
}

/* One recipient in part 1:
 *   <bob@example.com>: host mx.example.com said:
 *       550 5.1.1 <bob@example.com>: no such user */
static int put_text_rcpt(const struct dsn_report *r, const struct dsn_rcpt *rc,
                         struct buf *out)
{
    char addr[DSN_ADDR_MAX + 4], host[DSN_HOST_MAX + 4], diag[DSN_DIAG_MAX + 4];
    char line[DSN_ADDR_MAX + DSN_HOST_MAX + 64];
    bool u8 = r->smtputf8;
    clean(rc->address, u8, CLEAN_TEXT, DSN_ADDR_MAX, addr);
    clean(rc->remote_mta, false, CLEAN_HOST, DSN_HOST_MAX, host);
    size_t dl = clean(rc->diagnostic, u8, CLEAN_TEXT, DSN_DIAG_MAX, diag);
    if (host[0] != '\0')
        snprintf(line, sizeof(line), "<%s>: host %s%s", addr, host,
                 dl > 0 ? " said:" : "");
    else
        snprintf(line, sizeof(line), "<%s>%s", addr, dl > 0 ? ":" : "");
    if (fold(out, 0, false, "    ", line, strlen(line)) < 0 ||
        buf_append(out, "\r\n", 2) < 0)
        return -1;
    if (dl > 0 && (buf_appends(out, "    ") < 0 ||
                   fold(out, 4, false, "    ", diag, dl) < 0 ||
                   buf_append(out, "\r\n", 2) < 0))
        return -1;
    if (act(rc) == DSN_DELAYED && rc->retry_until > 0) {
        char date[DSN_DATE_SIZE];
        dsn_date(rc->retry_until, date);
        if (buf_appendf(out, "    It will be retried until %s.\r\n", date) < 0)
            return -1;
    }
    return 0;
}

static int put_text_end(const struct dsn_report *r, struct buf *out)
{
    char note[256];
    switch (r->ret) {
    case DSN_RETURN_FULL:
        snprintf(note, sizeof(note), "Your message is attached below.");
        break;
    case DSN_RETURN_HDRS:
    case DSN_RETURN_HDRS_REPORT:
        snprintf(note, sizeof(note), "The header of your message is included below.");
        break;
    case DSN_RETURN_HDRS_SIZE:
        snprintf(note, sizeof(note),
                 "Your message was larger than %zu octets, the most returned "
                 "in a report, so only its header is included below.",
                 r->bounce_size);
        break;
    case DSN_RETURN_HDRS_BINARY:
        snprintf(note, sizeof(note),
                 "Your message was sent as binary MIME, which cannot be "
                 "returned as it was, so only its header is included below.");
        break;
    }
    if (buf_append(out, "\r\n", 2) < 0 ||
        fold(out, 0, false, "", note, strlen(note)) < 0 ||
        buf_append(out, "\r\n", 2) < 0)
        return -1;
    if (r->header_cut) {
        snprintf(note, sizeof(note),
                 "Its header section was longer than %zu octets and is cut short.",
                 r->header_max);
        if (fold(out, 0, false, "", note, strlen(note)) < 0 ||
            buf_append(out, "\r\n", 2) < 0)
            return -1;
    }
    return 0;
}

static int put_status_head(const struct dsn_report *r, struct buf *out)
{
    char host[DSN_HOST_MAX + 4], v[DSN_HOST_MAX * 2 + 64];
    bool u8 = r->smtputf8;
    clean(r->hostname, false, CLEAN_HOST, DSN_HOST_MAX, host);
    if (buf_appendf(out, "\r\n--%s\r\n"
                         "Content-Description: Delivery report\r\n"
                         "Content-Type: %s\r\n%s"
                         "\r\n",
                    r->boundary,
                    u8 ? "message/global-delivery-status" : "message/delivery-status",
                    u8 ? "Content-Transfer-Encoding: 8bit\r\n" : "") < 0)
        return -1;
    if (r->envid != NULL && r->envid[0] != '\0') {
        char id[SMTP_ENVID_MAX + 1];
        size_t n = strlen(r->envid);
        if (n <= SMTP_ENVID_MAX * 3 &&
            smtp_xtext_decode(r->envid, n, id, sizeof(id)) > 0 &&
            field(out, "Original-Envelope-Id", id) < 0)
            return -1;
    }
    snprintf(v, sizeof(v), "dns; %s", host);
    if (field(out, "Reporting-MTA", v) < 0)
        return -1;
    const char *addr = r->client_addr != NULL ? r->client_addr : "";
    if (ip_like(addr)) {
        char helo[DSN_HOST_MAX + 4];
        clean(r->client_helo, false, CLEAN_HOST, DSN_HOST_MAX, helo);
        bool v6 = strchr(addr, ':') != NULL;
        if (helo[0] != '\0')
            snprintf(v, sizeof(v), "dns; %s ([%s%s])", helo, v6 ? "IPv6:" : "", addr);
        else
            snprintf(v, sizeof(v), "dns; [%s%s]", v6 ? "IPv6:" : "", addr);
        if (field(out, "Received-From-MTA", v) < 0)
            return -1;
    }
    if (r->arrival > 0) {
        char date[DSN_DATE_SIZE];
        dsn_date(r->arrival, date);
        if (field(out, "Arrival-Date", date) < 0)
            return -1;
    }
    if (r->queue_id != NULL && r->queue_id[0] != '\0') {
        char id[DSN_TOKEN_MAX + 4];
        clean(r->queue_id, false, CLEAN_HOST, DSN_TOKEN_MAX, id);
        if (field(out, "X-Estafeta-Queue-ID", id) < 0)
            return -1;
    }
    return 0;
}

static int put_status_rcpt(const struct dsn_report *r, const struct dsn_rcpt *rc,
                           struct buf *out)
{
    bool u8 = r->smtputf8;
    char status[DSN_STATUS_SIZE];
    struct buf v;
    int rc_ = -1;
    buf_init(&v, 4096);
    if (buf_append(out, "\r\n", 2) < 0)
        goto done;
    if (rc->orcpt != NULL && rc->orcpt[0] != '\0') {
        char o[SMTP_ORCPT_MAX + 40];
        if (orcpt_decode(rc->orcpt, o, sizeof(o)) &&
            field(out, "Original-Recipient", o) < 0)
            goto done;
    }
    if (put_address_value(&v, rc->address, u8) < 0 ||
        field(out, "Final-Recipient", buf_cstr(&v)) < 0 ||
        field(out, "Action", dsn_action_name(act(rc))) < 0)
        goto done;
    dsn_status_of(rc, status);
    if (field(out, "Status", status) < 0)
        goto done;
    if (rc->remote_mta != NULL && rc->remote_mta[0] != '\0') {
        char host[DSN_HOST_MAX + 4];
        clean(rc->remote_mta, false, CLEAN_HOST, DSN_HOST_MAX, host);
        buf_reset(&v);
        if (buf_appendf(&v, "dns; %s", host) < 0 ||
            field(out, "Remote-MTA", buf_cstr(&v)) < 0)
            goto done;
    }
    if (rc->diagnostic != NULL && rc->diagnostic[0] != '\0') {
        char diag[DSN_DIAG_MAX + 4];
        clean(rc->diagnostic, u8, CLEAN_TEXT, DSN_DIAG_MAX, diag);
        buf_reset(&v);
        /* RFC 3464 2.3.6: "smtp" only for an SMTP reply; our own reasons
         * are of our own type, as Postfix's X-Postfix. */
        if (buf_appendf(&v, "%s; %s",
                        smtp_reply_like(rc->diagnostic) ? "smtp" : "X-Estafeta",
                        diag) < 0 ||
            field(out, "Diagnostic-Code", buf_cstr(&v)) < 0)
            goto done;
    }
    if (rc->last_attempt > 0) {
        char date[DSN_DATE_SIZE];
        dsn_date(rc->last_attempt, date);
        if (field(out, "Last-Attempt-Date", date) < 0)
            goto done;
    }
    if (act(rc) == DSN_DELAYED && rc->retry_until > 0) {
        char date[DSN_DATE_SIZE];
        dsn_date(rc->retry_until, date);
        if (field(out, "Will-Retry-Until", date) < 0)
            goto done;
    }
    rc_ = 0;
done:
    buf_free(&v);
    return rc_;
}

static int put_part3_head(const struct dsn_report *r, struct buf *out)
{
    bool full = r->ret == DSN_RETURN_FULL;
    bool failure = dsn_kind_of(r->rcpts, r->nrcpts) == DSN_KIND_FAILURE;
    bool cte8 = r->smtputf8 || r->eightbit;
    return buf_appendf(out, "\r\n--%s\r\n"
                            "Content-Description: %s%s\r\n"
                            "Content-Type: %s\r\n%s"
                            "\r\n",
                       r->boundary, failure ? "Undelivered " : "",
                       full ? "Message" : "Message Headers", part3_type(r),
                       cte8 ? "Content-Transfer-Encoding: 8bit\r\n" : "");
}

void dsn_writer_init(struct dsn_writer *w, const struct dsn_report *r)
{
    memset(w, 0, sizeof(*w));
    w->r = r;
    w->phase = P_TOP;
}

bool dsn_writer_8bit(const struct dsn_writer *w)
{
    return w->eightbit;
}

/* The group index walks the actions in the order part 1 lists them; i is
 * the next recipient to look at, and SIZE_MAX before the group's intro. */
int dsn_writer_next(struct dsn_writer *w, struct buf *out)
{
    const struct dsn_report *r = w->r;
    size_t start = out->len;
    int rc = 0;
    for (;;) {
        switch (w->phase) {
        case P_TOP:
            rc = put_top(r, dsn_kind_of(r->rcpts, r->nrcpts), out);
            if (rc == 0) {
                w->phase = P_TEXT;
                w->group = DSN_FAILED;
                w->i = SIZE_MAX;
            }
            goto piece;
        case P_TEXT:
            if (w->group > DSN_EXPANDED) {
                w->phase = P_TEXT_END;
                continue;
            }
            if (w->i == SIZE_MAX) {
                if (!group_has(r, (enum dsn_action)w->group)) {
                    w->group++;
                    continue;
                }
                rc = buf_append(out, "\r\n", 2) < 0 ||
                     buf_appends(out, group_intro((enum dsn_action)w->group)) < 0 ||
                     buf_append(out, "\r\n", 2) < 0 ? -1 : 0;
                if (rc == 0)
                    w->i = 0;
                goto piece;
            }
            while (w->i < r->nrcpts && (int)act(&r->rcpts[w->i]) != w->group)
                w->i++;
            if (w->i == r->nrcpts) {
                w->group++;
                w->i = SIZE_MAX;
                continue;
            }
            rc = put_text_rcpt(r, &r->rcpts[w->i], out);
            if (rc == 0)
                w->i++;
            goto piece;
        case P_TEXT_END:
            rc = put_text_end(r, out);
            if (rc == 0)
                w->phase = P_STATUS_HEAD;
            goto piece;
        case P_STATUS_HEAD:
            rc = put_status_head(r, out);
            if (rc == 0) {
                w->phase = P_STATUS_RCPT;
                w->i = 0;
            }
            goto piece;
        case P_STATUS_RCPT:
            if (w->i >= r->nrcpts) {
                w->phase = P_PART3;
                continue;
            }
            rc = put_status_rcpt(r, &r->rcpts[w->i], out);
            if (rc == 0)
                w->i++;
            goto piece;
        case P_PART3:
            rc = put_part3_head(r, out);
            if (rc == 0)
                w->phase = P_DONE;
            goto piece;
        default:
            return 0;
        }
    }
piece:
    if (rc < 0) {
        /* A piece is all or nothing, so the caller can flush and retry. */
        out->len = start;
        if (out->data != NULL)
            out->data[start] = '\0';
        return -1;
    }
    if (has_8bit(out->data + start, out->len - start))
        w->eightbit = true;
    return 1;
}

int dsn_write_head(const struct dsn_report *r, struct buf *out)
{
    struct dsn_writer w;
    int rc;
    dsn_writer_init(&w, r);
    while ((rc = dsn_writer_next(&w, out)) == 1)
        ;
    return rc;
}

/* ---- part 3 ---- */

enum { C_LS, C_LS_CR, C_IN, C_END };

void dsn_copy_init(struct dsn_copy *c, bool headers, uint64_t max,
                   const char *boundary)
{
    memset(c, 0, sizeof(*c));
    c->headers = headers;
    c->max = max;
    c->state = C_LS;
    size_t bl = boundary != NULL ? strlen(boundary) : 0;
    if (bl >= sizeof(c->boundary))
        bl = sizeof(c->boundary) - 1;
    memcpy(c->boundary, boundary != NULL ? boundary : "", bl);
    c->boundary[bl] = '\0';
    c->blen = bl;
}

/* Notes what was just written: 8-bit octets, the boundary (also across
 * the seam with earlier output, through the kept tail). */
static void copy_watch(struct dsn_copy *c, const char *p, size_t n)
{
    if (n == 0)
        return;
    c->out += n;
    c->last = p[n - 1];
    if (has_8bit(p, n))
        c->eightbit = true;
    if (c->blen == 0 || c->boundary_seen)
        return;
    size_t keep = c->blen - 1;
    char seam[2 * DSN_BOUNDARY_SIZE];
    size_t head = n < keep ? n : keep;
    memcpy(seam, c->tail, c->tail_len);
    memcpy(seam + c->tail_len, p, head);
    if (memmem(seam, c->tail_len + head, c->boundary, c->blen) != NULL ||
        memmem(p, n, c->boundary, c->blen) != NULL) {
        c->boundary_seen = true;
        return;
    }
    /* tail = the last `keep` octets of everything written so far */
    if (n >= keep) {
        memcpy(c->tail, p + n - keep, keep);
        c->tail_len = keep;
    } else {
        size_t total = c->tail_len + n;
        size_t drop = total > keep ? total - keep : 0;
        memmove(c->tail, c->tail + drop, c->tail_len - drop);
        memcpy(c->tail + c->tail_len - drop, p, n);
        c->tail_len = total - drop;
    }
}

void dsn_copy_feed(struct dsn_copy *c, const char *in, size_t len, char *out,
                   size_t *out_len_r)
{
    size_t o = 0;
    *out_len_r = 0;
    if (c->done)
        return;
    if (!c->headers) {
        uint64_t room = c->max - c->in;   /* in never passes max */
        size_t take = (uint64_t)len > room ? (size_t)room : len;
        memcpy(out, in, take);
        o = take;
        c->in += take;
        if (take < len) {
            c->over = true;
            c->done = true;
        }
        copy_watch(c, out, o);
        *out_len_r = o;
        return;
    }
    for (size_t i = 0; i < len && !c->done; i++) {
        char b = in[i];
        if (c->in >= c->max) {
            c->cut = true;
            c->done = true;
            c->state = C_END;  /* a held CR is dropped: the part ends here */
            break;
        }
        c->in++;
        switch (c->state) {
        case C_LS:
            if (b == '\n') {
                c->done = true;
                c->state = C_END;
            } else if (b == '\r') {
                c->state = C_LS_CR;
            } else {
                out[o++] = b;
                c->state = C_IN;
            }
            break;
        case C_LS_CR:
            if (b == '\n') {
                c->done = true;
                c->state = C_END;
                break;
            }
            /* A line starting with a bare CR: not the end after all. */
            out[o++] = '\r';
            out[o++] = b;
            c->state = C_IN;
            break;
        case C_IN:
            out[o++] = b;
            if (b == '\n')
                c->state = C_LS;
            break;
        default:
            break;
        }
    }
    copy_watch(c, out, o);
    *out_len_r = o;
}

int dsn_write_end(const struct dsn_report *r, const struct dsn_copy *c,
                  struct buf *out)
{
    const char *fix = "";
    if (c != NULL && c->out > 0 && c->last != '\n')
        fix = c->last == '\r' ? "\n" : "\r\n";
    return buf_appendf(out, "%s\r\n--%s--\r\n", fix, r->boundary) < 0 ? -1 : 0;
}
