/*
 * sendmail: `estafeta sendmail`, a sendmail(1)-compatible command for local
 * programs, and `mailq` (= `sendmail -bp`). See estafeta-sendmail(8).
 *
 * It is an SMTP client of the server's local UNIX socket (`local-socket`,
 * default <data-dir>/public/submit.sock), where the server knows the peer by
 * its uid: no privileges, no network hop. The message is read from standard
 * input (LF line ends become CRLF), streamed to the server, and the exit
 * status says whether the server took it (sysexits.h):
 *   0  queued (the server answered 250 to the end of the data)
 *   64 EX_USAGE     bad flags, bad address arguments, no recipients
 *   65 EX_DATAERR   message refused (5xx to DATA), over the size limit,
 *                   unusable header for -t
 *   67 EX_NOUSER    a recipient refused (5xx to RCPT): nothing is sent
 *   69 EX_UNAVAILABLE  the server refused the session or the sender (5xx)
 *   74 EX_IOERR     reading standard input or writing standard output failed
 *   75 EX_TEMPFAIL  server not running, 4xx, connection lost, timeout
 *   78 EX_CONFIG    the configuration cannot be read or has no local socket
 * On every failure a line on stderr says why, with the server's reply.
 *
 * Entry points take the full argv (argv[0] is "sendmail", "mailq" or the
 * subcommand name) and return the exit status. They install SIG_IGN for
 * SIGPIPE (a closed socket is an error code, not a death).
 */
#ifndef ESTAFETA_ESTAFETA_SENDMAIL_H
#define ESTAFETA_ESTAFETA_SENDMAIL_H

int cmd_sendmail(int argc, char **argv);
int cmd_mailq(int argc, char **argv);

#endif
