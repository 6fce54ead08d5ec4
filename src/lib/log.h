/*
 * log: one line per event, key=value, machine-parsable.
 *
 *   ts=2026-11-21T22:05:56.123Z level=info event=smtp.accept sid=8f3a... qid=...
 *
 * Contract:
 *  - log_kv(level, event, key1, val1, key2, val2, ..., NULL): keys are
 *    literals from our code; values may be peer-controlled and are quoted
 *    and escaped (", \, control bytes and non-ASCII as \xNN) so a value can
 *    never forge another key or another line. A NULL value logs as "-".
 *  - Lines below the level set by log_set_level are dropped.
 *  - Output goes to stderr (or the fd given to log_set_fd) with one write()
 *    per line, so lines from several threads never interleave.
 *  - Thread-safe; the level and fd are process state, set once at start-up
 *    and on reload.
 */
#ifndef ESTAFETA_LIB_LOG_H
#define ESTAFETA_LIB_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERR, LOG_CRIT };

void log_set_level(enum log_level level);
void log_set_fd(int fd);
/* Parses "debug", "info", "warn", "error", "crit"; -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);
int log_enabled(enum log_level level);

void log_kv(enum log_level level, const char *event, ...)
    __attribute__((sentinel));

#endif
