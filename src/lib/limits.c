/* limits: the one table. Review changes here against the RFC cited. */
#include "lib/limits.h"

#include <string.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

const struct limit_def limit_table[LIM__COUNT] = {
    [LIM_SMTP_COMMAND_LINE] = {"smtp-command-line", LIMIT_SIZE, 512, 512, 64 * KiB,
        "RFC 5321 4.5.3.1.4: 512 octets including CRLF; ESMTP parameters "
        "(RFC 1869) may extend it, so it is configurable upwards only"},
    [LIM_SMTP_TEXT_LINE] = {"smtp-text-line", LIMIT_SIZE, 1000, 1000, 1 * MiB,
        "RFC 5321 4.5.3.1.6: 1000 octets including CRLF; a larger value may "
        "be configured for broken senders, never a smaller one"},
    [LIM_SMTP_RECIPIENTS] = {"smtp-recipients", LIMIT_COUNT, 100, 100, 100000,
        "RFC 5321 4.5.3.1.8: MUST accept at least 100 RCPT; extras get "
        "452 4.5.3 (4.5.3.1.10)"},
    [LIM_MESSAGE_SIZE] = {"message-size", LIMIT_SIZE, 50 * MiB, 64 * KiB, 2048 * MiB,
        "RFC 1870: advertised in SIZE, refused at MAIL and during DATA"},
    [LIM_SMTP_BAD_COMMANDS] = {"smtp-bad-commands", LIMIT_COUNT, 20, 1, 1000,
        "errors per session before 421 and close (Postfix "
        "smtpd_hard_error_limit); stops command flooding"},
    [LIM_CONNECTIONS] = {"connections", LIMIT_COUNT, 20000, 1, 1000000,
        "total concurrent sessions; above it the greeting is 421 4.7.0"},
    [LIM_CONNECTIONS_PER_CLIENT] = {"connections-per-client", LIMIT_COUNT, 50, 1, 1000000,
        "concurrent sessions from one address (Postfix "
        "smtpd_client_connection_count_limit); then 421 4.7.0"},
    [LIM_TIMEOUT_COMMAND] = {"timeout-command", LIMIT_TIME, 300, 10, 3600,
        "RFC 5321 4.5.3.2.7: server waits at least 5 minutes for a command"},
    [LIM_TIMEOUT_DATA] = {"timeout-data", LIMIT_TIME, 300, 10, 3600,
        "RFC 5321 4.5.3.2.5/.7: between data blocks; client's own timeout is "
        "3 minutes per block, the server's is longer"},
    [LIM_TIMEOUT_SHUTDOWN] = {"timeout-shutdown", LIMIT_TIME, 10, 0, 600,
        "on SIGTERM, transactions in DATA get this long to finish before "
        "they are answered 421 4.3.2"},
    [LIM_TIMEOUT_CLOSE] = {"timeout-close", LIMIT_TIME, 10, 1, 600,
        "time to deliver our last reply (221, 421) to a client that does not "
        "read it; then the connection is dropped, so a stuck client cannot "
        "hold a session (or a shutdown) open"},
    [LIM_RECEIVED_HEADERS] = {"received-headers", LIMIT_COUNT, 100, 10, 1000,
        "RFC 5321 6.3: a message with more Received: fields is a loop; "
        "refused 554 5.4.6"},
    [LIM_HEADER_SECTION] = {"header-section", LIMIT_SIZE, 1 * MiB, 64 * KiB, 64 * MiB,
        "bytes of header scanned for Received: counting; bounds the header "
        "parser (Dovecot CVE-2024-23185: huge headers)"},
    [LIM_LOCAL_PART] = {"local-part", LIMIT_SIZE, 64, 64, 64,
        "RFC 5321 4.5.3.1.1: 64 octets"},
    [LIM_DOMAIN] = {"domain", LIMIT_SIZE, 255, 255, 255,
        "RFC 5321 4.5.3.1.2: 255 octets"},
    [LIM_PATH] = {"path", LIMIT_SIZE, 256, 256, 256,
        "RFC 5321 4.5.3.1.3: 256 octets including the angle brackets"},
    [LIM_DSN_ENVID] = {"dsn-envid", LIMIT_SIZE, 100, 100, 100,
        "RFC 3461 4.4: ENVID at most 100 characters"},
    [LIM_DSN_ORCPT] = {"dsn-orcpt", LIMIT_SIZE, 500, 500, 500,
        "RFC 3461 4.2: ORCPT at most 500 characters"},
    [LIM_ALIAS_DEPTH] = {"alias-depth", LIMIT_COUNT, 10, 1, 100,
        "nesting of aliases (an alias naming an alias); deeper is a loop"},
    [LIM_ALIAS_EXPANSION] = {"alias-expansion", LIMIT_COUNT, 1000, 1, 100000,
        "local mailboxes and forwarding addresses one recipient may expand "
        "to, counted together; bounds list fan-out"},
    [LIM_OUTPUT_HIGH_WATER] = {"output-high-water", LIMIT_SIZE, 256 * KiB, 4 * KiB, 64 * MiB,
        "queued reply bytes after which input is no longer read, so a "
        "client that pipelines without reading cannot grow our memory"},
    [LIM_QUEUE_LIFETIME] = {"queue-lifetime", LIMIT_TIME, 5 * 24 * 3600, 600, 30 * 24 * 3600,
        "RFC 5321 4.5.4.1: give up after at least 4-5 days"},
    [LIM_RETRY_MIN] = {"retry-min", LIMIT_TIME, 60, 1, 3600,
        "first retry after a temporary failure; doubles up to retry-max "
        "(RFC 5321 4.5.4.1: at least 30 minutes between remote retries; "
        "local delivery retries sooner)"},
    [LIM_RETRY_MAX] = {"retry-max", LIMIT_TIME, 3600, 1, 24 * 3600,
        "longest pause between retries"},
    [LIM_TIMEOUT_TLS] = {"timeout-tls", LIMIT_TIME, 30, 5, 600,
        "a TLS handshake must finish in this time; a stalled or garbage "
        "handshake costs one timer and is then dropped (security.md 3)"},
    [LIM_AUTH_FAILURES] = {"auth-failures", LIMIT_COUNT, 5, 1, 1000,
        "failed logins from one client address before it is refused for "
        "auth-lockout seconds (security.md 7: slows password guessing)"},
    [LIM_AUTH_LOCKOUT] = {"auth-lockout", LIMIT_TIME, 300, 1, 86400,
        "how long an address that reached auth-failures is refused"},
    [LIM_AUTH_DELAY] = {"auth-delay", LIMIT_TIME, 2, 0, 60,
        "delay before answering a failed login (security.md 7)"},
    [LIM_POP3_TIMEOUT] = {"timeout-pop3", LIMIT_TIME, 600, 600, 86400,
        "RFC 1939 3: a POP3 server's inactivity autologout timer must be "
        "at least 10 minutes"},
    [LIM_DELAY_WARNING] = {"delay-warning", LIMIT_TIME, 4 * 3600, 0, 30 * 24 * 3600,
        "RFC 3461 / RFC 3464 'delayed' DSN after this long in the queue "
        "(Postfix delay_warning_time); 0 sends none"},
    [LIM_RELAY_RETRY_MIN] = {"relay-retry-min", LIMIT_TIME, 300, 1, 24 * 3600,
        "first retry of a remote delivery; doubles up to relay-retry-max "
        "(RFC 5321 4.5.4.1: retry interval should be at least 30 minutes; "
        "Postfix starts at 300 s and caps at 4000 s)"},
    [LIM_RELAY_RETRY_MAX] = {"relay-retry-max", LIMIT_TIME, 4000, 1, 24 * 3600,
        "longest pause between remote delivery attempts"},
    [LIM_RELAY_CONNECTIONS] = {"relay-connections", LIMIT_COUNT, 100, 1, 100000,
        "concurrent outbound SMTP connections in total (Postfix "
        "default_process_limit)"},
    [LIM_RELAY_CONNECTIONS_PER_DESTINATION] = {"relay-connections-per-destination",
        LIMIT_COUNT, 10, 1, 10000,
        "concurrent connections to one destination, so one slow domain "
        "cannot take every slot and a receiver is not flooded (Postfix "
        "default_destination_concurrency_limit)"},
    [LIM_RELAY_MESSAGES_PER_CONNECTION] = {"relay-messages-per-connection",
        LIMIT_COUNT, 100, 1, 100000,
        "messages sent over one reused connection before it is closed"},
    [LIM_RELAY_RECIPIENTS] = {"relay-recipients", LIMIT_COUNT, 100, 1, 100000,
        "RCPT commands per outbound transaction: RFC 5321 4.5.3.1.8 only "
        "promises that 100 are accepted; more go in another transaction"},
    [LIM_RELAY_IDLE] = {"relay-idle", LIMIT_TIME, 5, 0, 300,
        "an idle outbound connection is kept this long for the next "
        "message to the same destination (Postfix "
        "smtp_connection_cache_time_limit)"},
    [LIM_TIMEOUT_CONNECT] = {"timeout-connect", LIMIT_TIME, 30, 1, 600,
        "TCP connect to a remote server (Postfix smtp_connect_timeout)"},
    [LIM_TIMEOUT_GREETING] = {"timeout-greeting", LIMIT_TIME, 300, 1, 3600,
        "RFC 5321 4.5.3.2.1: initial 220 message, 5 minutes; also EHLO, "
        "STARTTLS and AUTH replies"},
    [LIM_TIMEOUT_MAIL] = {"timeout-mail", LIMIT_TIME, 300, 1, 3600,
        "RFC 5321 4.5.3.2.2: MAIL command, 5 minutes"},
    [LIM_TIMEOUT_RCPT] = {"timeout-rcpt", LIMIT_TIME, 300, 1, 3600,
        "RFC 5321 4.5.3.2.3: RCPT command, 5 minutes"},
    [LIM_TIMEOUT_DATA_INIT] = {"timeout-data-init", LIMIT_TIME, 120, 1, 3600,
        "RFC 5321 4.5.3.2.4: DATA initiation (354), 2 minutes"},
    [LIM_TIMEOUT_DATA_BLOCK] = {"timeout-data-block", LIMIT_TIME, 180, 1, 3600,
        "RFC 5321 4.5.3.2.5: each data block sent, 3 minutes"},
    [LIM_TIMEOUT_DATA_DONE] = {"timeout-data-done", LIMIT_TIME, 600, 1, 3600,
        "RFC 5321 4.5.3.2.6: reply to the final dot, 10 minutes"},
    [LIM_SMTP_REPLY_LINE] = {"smtp-reply-line", LIMIT_SIZE, 2048, 512, 64 * KiB,
        "RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; longer ones "
        "from sloppy servers are tolerated up to this (Postfix "
        "line_length_limit), beyond it the peer is hostile (CVE-2020-8794)"},
    [LIM_SMTP_REPLY_LINES] = {"smtp-reply-lines", LIMIT_COUNT, 100, 10, 10000,
        "lines of one multi-line reply (an EHLO reply has one per "
        "extension); a server that never ends a reply gets a temporary "
        "failure"},
    [LIM_SMTP_REPLY_SIZE] = {"smtp-reply-size", LIMIT_SIZE, 64 * KiB, 4 * KiB, 16 * MiB,
        "octets of one (multi-line) reply"},
    [LIM_TIMEOUT_DNS] = {"timeout-dns", LIMIT_TIME, 60, 5, 600,
        "one route lookup (MX and addresses); past it the delivery is "
        "deferred as a temporary DNS failure"},
    [LIM_MX_ADDRESSES] = {"mx-addresses", LIMIT_COUNT, 10, 1, 1000,
        "addresses tried in one delivery attempt across all MX hosts "
        "(Postfix smtp_mx_address_limit); bounds the work a domain with "
        "hundreds of MX records can cause"},
    [LIM_BOUNCE_SIZE] = {"bounce-size", LIMIT_SIZE, 1 * MiB, 1 * KiB, 64 * MiB,
        "largest original message returned whole in a bounce (RET=FULL); "
        "a larger one is returned as headers only (Postfix bounce_size_limit)"},
    [LIM_DELIVERY_THREADS] = {"delivery-threads", LIMIT_COUNT, 16, 1, 64,
        "most messages delivered at the same time (read at start): with "
        "delivery-batch a few threads are awake at once, and more wake "
        "only as a backlog grows or while deliveries wait on a slow disk, "
        "so one slow delivery never holds up the rest (doc/performance.md "
        "\"Batched delivery\": 4 and 16 measured the same within the noise; "
        "Postfix runs up to 20 virtual(8))"},
    [LIM_DELIVERY_NICE] = {"delivery-nice", LIMIT_COUNT, 10, 0, 19,
        "how much lower the delivery threads' CPU priority is than the "
        "threads that answer clients (added to the server's nice value, "
        "at most 19; read at start): "
        "a client waits for each reply, a delivery only has to keep up, "
        "so accepting goes first and deliveries take the CPU it leaves "
        "(doc/performance.md: at 10 and 50 sessions 1.4-1.8x the accept "
        "rate of 0, a burst of 2,000 messages all in the Maildir about as "
        "soon; under a sustained flood mail reaches the Maildir a quarter "
        "to a third later); 0 leaves them equal"},
    [LIM_DELIVERY_BATCH] = {"delivery-batch", LIMIT_COUNT, 32, 1, 256,
        "messages one delivery thread writes before it makes them durable "
        "together (read at start): one syncfs of the filesystem and one "
        "fsync of each new/ for the batch instead of an fsync of each file "
        "and of its folder (doc/performance.md \"Batched delivery\": the "
        "server's CPU per message 0.17 -> 0.10 ms at 1 KiB x 10, device "
        "flushes 0.95 -> 0.35 a message); a thread takes what is waiting, "
        "after up to 5 ms for half a batch to gather, "
        "so a lone message is "
        "flushed alone, and more threads are woken only as the backlog "
        "grows; syncfs only on ext2/3/4, XFS, Btrfs and tmpfs (elsewhere, "
        "FUSE and NFS included, an fsync each); 1 flushes every message "
        "alone (for a spool that shares its filesystem with a heavy writer, "
        "whose data syncfs would flush too)"},
    [LIM_QUEUE_LOG_MESSAGE] = {"queue-log-message", LIMIT_SIZE, 256 * KiB, 0, 16 * MiB,
        "largest message body kept in memory while received and committed "
        "to the queue's accept log (one append and one fdatasync per batch) "
        "instead of a file of its own; 0 gives every message a file "
        "(doc/queue.md \"The accept log\"; read at start)"},
    [LIM_QUEUE_LOG_MEMORY] = {"queue-log-memory", LIMIT_SIZE, 64 * MiB, 1 * MiB, 4096 * MiB,
        "memory held by all messages being received for the accept log; "
        "beyond it a message goes to a file, so many slow or idle senders "
        "cannot pin memory (read at start)"},
};

int limit_lookup(const char *name)
{
    for (int i = 0; i < LIM__COUNT; i++)
        if (strcmp(limit_table[i].name, name) == 0)
            return i;
    return -1;
}
