/*
 * smtp_status: one SMTP reply as data: code, RFC 3463 enhanced code, text.
 * Parsers return a pointer to a static struct smtp_status (never freed) to
 * say which reply a bad input deserves; the session only formats it.
 */
#ifndef ESTAFETA_PROTO_SMTP_STATUS_H
#define ESTAFETA_PROTO_SMTP_STATUS_H

struct smtp_status {
    int code;           /* RFC 5321 4.2 reply code, e.g. 501 */
    const char *enh;    /* RFC 3463 enhanced code, e.g. "5.5.4" */
    const char *text;   /* human text, no CR/LF */
};

#endif
