/* log: see log.h for the contract. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"

static _Atomic int log_min_level = LOG_INFO;
static _Atomic int log_fd = 2;

static const char *const level_names[] = {"debug", "info", "warn", "error",
                                          "crit"};

void log_set_level(enum log_level level) { log_min_level = (int)level; }
void log_set_fd(int fd) { log_fd = fd; }
int log_enabled(enum log_level level) { return (int)level >= log_min_level; }

const char *log_level_name(enum log_level level)
{
    if ((int)level < 0 || (size_t)level >= sizeof(level_names) / sizeof(*level_names))
        return "?";
    return level_names[level];
}

int log_level_parse(const char *s)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(*level_names); i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return (int)i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_WARN;
    if (strcasecmp(s, "err") == 0)
        return LOG_ERR;
    return -1;
}

/* Values are capped so a hostile peer cannot make one line huge. */
#define LOG_VALUE_MAX 512

static void log_append_value(struct buf *b, const char *v)
{
    static const char hex[] = "0123456789abcdef";
    if (v == NULL) {
        buf_putc(b, '-');
        return;
    }
    size_t n = strlen(v);
    int quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '=' || c == '\\')
            quote = 1;
    }
    if (!quote) {
        buf_append(b, v, n > LOG_VALUE_MAX ? LOG_VALUE_MAX : n);
        if (n > LOG_VALUE_MAX)
            buf_appends(b, "...");
        return;
    }
    buf_putc(b, '"');
    for (size_t i = 0; i < n && i < LOG_VALUE_MAX; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') {
            buf_putc(b, '\\');
            buf_putc(b, (char)c);
        } else if (c < ' ' || c >= 0x7f) {
            char esc[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            buf_append(b, esc, 4);
        } else {
            buf_putc(b, (char)c);
        }
    }
    if (n > LOG_VALUE_MAX)
        buf_appends(b, "...");
    buf_putc(b, '"');
}

void log_kv(enum log_level level, const char *event, ...)
{
    if (!log_enabled(level))
        return;
    struct buf b;
    buf_init(&b, 16384);
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    buf_appendf(&b, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                log_level_name(level));
    log_append_value(&b, event);
    va_list ap;
    va_start(ap, event);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL)
            break;
        const char *val = va_arg(ap, const char *);
        buf_putc(&b, ' ');
        buf_appends(&b, key);
        buf_putc(&b, '=');
        log_append_value(&b, val);
    }
    va_end(ap);
    buf_putc(&b, '\n');
    /* One write per line keeps threads' lines whole; a failed log write
     * has nowhere to be reported, so it is dropped. */
    ssize_t w = write(log_fd, b.data, b.len);
    (void)w;
    buf_free(&b);
}
