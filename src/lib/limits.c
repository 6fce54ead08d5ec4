/* limits: the one table. Review changes here against the RFC cited. */
#include "lib/limits.h"

#include <string.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

const struct limit_def limit_table[LIM__COUNT] = {
    [LIM_SMTP_COMMAND_LINE] = {"smtp-command-line", 512, 512, 64 * KiB,
        "RFC 5321 4.5.3.1.4: 512 octets including CRLF; ESMTP parameters "
        "(RFC 1869) may extend it, so it is configurable upwards only"},
    [LIM_SMTP_TEXT_LINE] = {"smtp-text-line", 1000, 1000, 1 * MiB,
        "RFC 5321 4.5.3.1.6: 1000 octets including CRLF; a larger value may "
        "be configured for broken senders, never a smaller one"},
    [LIM_SMTP_RECIPIENTS] = {"smtp-recipients", 100, 100, 100000,
        "RFC 5321 4.5.3.1.8: MUST accept at least 100 RCPT; extras get "
        "452 4.5.3 (4.5.3.1.10)"},
    [LIM_MESSAGE_SIZE] = {"message-size", 50 * MiB, 64 * KiB, 2048 * MiB,
        "RFC 1870: advertised in SIZE, refused at MAIL and during DATA"},
    [LIM_SMTP_BAD_COMMANDS] = {"smtp-bad-commands", 20, 1, 1000,
        "errors per session before 421 and close (Postfix "
        "smtpd_hard_error_limit); stops command flooding"},
    [LIM_CONNECTIONS] = {"connections", 20000, 1, 1000000,
        "total concurrent sessions; above it the greeting is 421 4.7.0"},
    [LIM_CONNECTIONS_PER_CLIENT] = {"connections-per-client", 50, 1, 1000000,
        "concurrent sessions from one address (Postfix "
        "smtpd_client_connection_count_limit); then 421 4.7.0"},
    [LIM_TIMEOUT_COMMAND] = {"timeout-command", 300, 10, 3600,
        "RFC 5321 4.5.3.2.7: server waits at least 5 minutes for a command"},
    [LIM_TIMEOUT_DATA] = {"timeout-data", 300, 10, 3600,
        "RFC 5321 4.5.3.2.5/.7: between data blocks; client's own timeout is "
        "3 minutes per block, the server's is longer"},
    [LIM_TIMEOUT_SHUTDOWN] = {"timeout-shutdown", 10, 0, 600,
        "on SIGTERM, transactions in DATA get this long to finish before "
        "they are answered 421 4.3.2"},
    [LIM_TIMEOUT_CLOSE] = {"timeout-close", 10, 1, 600,
        "time to deliver our last reply (221, 421) to a client that does not "
        "read it; then the connection is dropped, so a stuck client cannot "
        "hold a session (or a shutdown) open"},
    [LIM_RECEIVED_HEADERS] = {"received-headers", 100, 10, 1000,
        "RFC 5321 6.3: a message with more Received: fields is a loop; "
        "refused 554 5.4.6"},
    [LIM_HEADER_SECTION] = {"header-section", 1 * MiB, 64 * KiB, 64 * MiB,
        "bytes of header scanned for Received: counting; bounds the header "
        "parser (Dovecot CVE-2024-23185: huge headers)"},
    [LIM_LOCAL_PART] = {"local-part", 64, 64, 64,
        "RFC 5321 4.5.3.1.1: 64 octets"},
    [LIM_DOMAIN] = {"domain", 255, 255, 255,
        "RFC 5321 4.5.3.1.2: 255 octets"},
    [LIM_PATH] = {"path", 256, 256, 256,
        "RFC 5321 4.5.3.1.3: 256 octets including the angle brackets"},
    [LIM_DSN_ENVID] = {"dsn-envid", 100, 100, 100,
        "RFC 3461 4.4: ENVID at most 100 characters"},
    [LIM_DSN_ORCPT] = {"dsn-orcpt", 500, 500, 500,
        "RFC 3461 4.2: ORCPT at most 500 characters"},
    [LIM_ALIAS_DEPTH] = {"alias-depth", 10, 1, 100,
        "nesting of aliases (an alias naming an alias); deeper is a loop"},
    [LIM_ALIAS_EXPANSION] = {"alias-expansion", 1000, 1, 100000,
        "local mailboxes one recipient may expand to; bounds list fan-out"},
    [LIM_OUTPUT_HIGH_WATER] = {"output-high-water", 256 * KiB, 4 * KiB, 64 * MiB,
        "queued reply bytes after which input is no longer read, so a "
        "client that pipelines without reading cannot grow our memory"},
    [LIM_QUEUE_LIFETIME] = {"queue-lifetime", 5 * 24 * 3600, 600, 30 * 24 * 3600,
        "RFC 5321 4.5.4.1: give up after at least 4-5 days"},
    [LIM_RETRY_MIN] = {"retry-min", 60, 1, 3600,
        "first retry after a temporary failure; doubles up to retry-max "
        "(RFC 5321 4.5.4.1: at least 30 minutes between remote retries; "
        "local delivery retries sooner)"},
    [LIM_RETRY_MAX] = {"retry-max", 3600, 1, 24 * 3600,
        "longest pause between retries"},
    [LIM_TIMEOUT_TLS] = {"timeout-tls", 30, 5, 600,
        "a TLS handshake must finish in this time; a stalled or garbage "
        "handshake costs one timer and is then dropped (security.md 3)"},
    [LIM_AUTH_FAILURES] = {"auth-failures", 5, 1, 1000,
        "failed logins from one client address before it is refused for "
        "auth-lockout seconds (security.md 7: slows password guessing)"},
    [LIM_AUTH_LOCKOUT] = {"auth-lockout", 300, 1, 86400,
        "how long an address that reached auth-failures is refused"},
    [LIM_AUTH_DELAY] = {"auth-delay", 2, 0, 60,
        "delay before answering a failed login (security.md 7)"},
    [LIM_POP3_TIMEOUT] = {"timeout-pop3", 600, 600, 86400,
        "RFC 1939 3: a POP3 server's inactivity autologout timer must be "
        "at least 10 minutes"},
};

int limit_lookup(const char *name)
{
    for (int i = 0; i < LIM__COUNT; i++)
        if (strcmp(limit_table[i].name, name) == 0)
            return i;
    return -1;
}
