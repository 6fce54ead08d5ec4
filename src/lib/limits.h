/*
 * limits: every limit estafeta enforces on a peer, in one reviewed table,
 * each with its reason (RFC section or incident). Nothing else in the code
 * hard-codes a limit on input; code reads cfg->limits[LIM_...] (which starts
 * as the default here and may be changed by `limit NAME VALUE` in the
 * configuration, within [min, max]).
 *
 * Times are in seconds, sizes in octets.
 */
#ifndef ESTAFETA_LIB_LIMITS_H
#define ESTAFETA_LIB_LIMITS_H

#include <stddef.h>

enum limit_id {
    LIM_SMTP_COMMAND_LINE,
    LIM_SMTP_TEXT_LINE,
    LIM_SMTP_RECIPIENTS,
    LIM_MESSAGE_SIZE,
    LIM_SMTP_BAD_COMMANDS,
    LIM_CONNECTIONS,
    LIM_CONNECTIONS_PER_CLIENT,
    LIM_TIMEOUT_COMMAND,
    LIM_TIMEOUT_DATA,
    LIM_TIMEOUT_SHUTDOWN,
    LIM_TIMEOUT_CLOSE,
    LIM_RECEIVED_HEADERS,
    LIM_HEADER_SECTION,
    LIM_LOCAL_PART,
    LIM_DOMAIN,
    LIM_PATH,
    LIM_DSN_ENVID,
    LIM_DSN_ORCPT,
    LIM_ALIAS_DEPTH,
    LIM_ALIAS_EXPANSION,
    LIM_OUTPUT_HIGH_WATER,
    LIM_QUEUE_LIFETIME,
    LIM_RETRY_MIN,
    LIM_RETRY_MAX,
    LIM_TIMEOUT_TLS,
    LIM_AUTH_FAILURES,
    LIM_AUTH_LOCKOUT,
    LIM_AUTH_DELAY,
    LIM_POP3_TIMEOUT,
    LIM_DELAY_WARNING,
    LIM_RELAY_RETRY_MIN,
    LIM_RELAY_RETRY_MAX,
    LIM_RELAY_CONNECTIONS,
    LIM_RELAY_CONNECTIONS_PER_DESTINATION,
    LIM_RELAY_MESSAGES_PER_CONNECTION,
    LIM_RELAY_RECIPIENTS,
    LIM_RELAY_IDLE,
    LIM_TIMEOUT_CONNECT,
    LIM_TIMEOUT_GREETING,
    LIM_TIMEOUT_MAIL,
    LIM_TIMEOUT_RCPT,
    LIM_TIMEOUT_DATA_INIT,
    LIM_TIMEOUT_DATA_BLOCK,
    LIM_TIMEOUT_DATA_DONE,
    LIM_SMTP_REPLY_LINE,
    LIM_SMTP_REPLY_LINES,
    LIM_SMTP_REPLY_SIZE,
    LIM_TIMEOUT_DNS,
    LIM_MX_ADDRESSES,
    LIM_BOUNCE_SIZE,
    LIM_DELIVERY_THREADS,
    LIM_DELIVERY_NICE,
    LIM_DELIVERY_BATCH,
    LIM_QUEUE_LOG_MESSAGE,
    LIM_QUEUE_LOG_MEMORY,
    LIM__COUNT
};

/* What a value counts, for the units the configuration accepts:
 * sizes take K/M/G (powers of 1024), times take s/m/h/d. */
enum limit_unit { LIMIT_COUNT, LIMIT_SIZE, LIMIT_TIME };

struct limit_def {
    const char *name;    /* configuration name: `limit NAME VALUE` */
    enum limit_unit unit;
    size_t def;          /* default */
    size_t min, max;     /* allowed range in configuration */
    const char *reason;  /* why this value */
};

extern const struct limit_def limit_table[LIM__COUNT];

/* Index of the limit with that configuration name, or -1. */
int limit_lookup(const char *name);

#endif
