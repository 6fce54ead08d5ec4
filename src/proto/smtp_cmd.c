/*
 * smtp_cmd: the command-line reader and the verb split (contract in
 * smtp_cmd.h). Address parsing is in smtp_addr.c, parameters in smtp_param.c.
 *
 * The reader keeps no state but "discarding": each call rescans the caller's
 * buffer from the start, which costs O(min(len, max)) per call (memchr) and
 * cannot go stale when the caller throws its buffer away (STARTTLS).
 * Whether a line is too long depends only on where its LF is, so every way
 * of splitting the input gives the same sequence of results.
 */
#include "proto/smtp_cmd.h"

#include <string.h>

void smtp_line_init(struct smtp_line_reader *lr, size_t max)
{
    lr->max = max;
    lr->discarding = false;
}

enum smtp_line_result smtp_line_next(struct smtp_line_reader *lr,
                                     const char *in, size_t len,
                                     const char **line_r, size_t *line_len_r,
                                     size_t *consumed_r)
{
    *line_r = NULL;
    *line_len_r = 0;
    *consumed_r = 0;
    if (len == 0)
        return SMTP_LINE_NEED_MORE;

    if (lr->discarding) {
        const char *lf = memchr(in, '\n', len);
        if (lf == NULL) {
            *consumed_r = len;
            return SMTP_LINE_NEED_MORE;
        }
        *consumed_r = (size_t)(lf - in) + 1;
        lr->discarding = false;
        return SMTP_LINE_TOO_LONG;
    }

    /* A line may hold at most max bytes including its LF, so an LF at
     * index max or later ends an over-long line. */
    size_t scan = len < lr->max ? len : lr->max;
    const char *lf = scan > 0 ? memchr(in, '\n', scan) : NULL;
    if (lf == NULL) {
        if (len < lr->max)
            return SMTP_LINE_NEED_MORE;
        if (len > scan)
            lf = memchr(in + scan, '\n', len - scan);
        if (lf != NULL) {
            *consumed_r = (size_t)(lf - in) + 1;
            return SMTP_LINE_TOO_LONG;
        }
        lr->discarding = true;
        *consumed_r = len;
        return SMTP_LINE_NEED_MORE;
    }

    size_t n = (size_t)(lf - in);
    *consumed_r = n + 1;
    if (n > 0 && in[n - 1] == '\r')
        n--;
    /* A CR anywhere else is what smuggling attacks are built from; a NUL
     * would truncate the line for any C-string consumer. */
    if (n > 0 && (memchr(in, '\r', n) != NULL || memchr(in, '\0', n) != NULL))
        return SMTP_LINE_BAD;
    *line_r = in;
    *line_len_r = n;
    return SMTP_LINE_OK;
}

static const char *const verb_names[SMTP_CMD__COUNT] = {
    [SMTP_CMD_UNKNOWN] = "",
    [SMTP_CMD_HELO] = "HELO",
    [SMTP_CMD_EHLO] = "EHLO",
    [SMTP_CMD_MAIL] = "MAIL",
    [SMTP_CMD_RCPT] = "RCPT",
    [SMTP_CMD_DATA] = "DATA",
    [SMTP_CMD_BDAT] = "BDAT",
    [SMTP_CMD_RSET] = "RSET",
    [SMTP_CMD_NOOP] = "NOOP",
    [SMTP_CMD_QUIT] = "QUIT",
    [SMTP_CMD_VRFY] = "VRFY",
    [SMTP_CMD_EXPN] = "EXPN",
    [SMTP_CMD_HELP] = "HELP",
    [SMTP_CMD_STARTTLS] = "STARTTLS",
    [SMTP_CMD_AUTH] = "AUTH",
    [SMTP_CMD_TURN] = "TURN",
    [SMTP_CMD_SEND] = "SEND",
    [SMTP_CMD_SOML] = "SOML",
    [SMTP_CMD_SAML] = "SAML",
    [SMTP_CMD_ETRN] = "ETRN",
    [SMTP_CMD_ATRN] = "ATRN",
};

const char *smtp_verb_name(enum smtp_verb verb)
{
    if ((unsigned)verb >= SMTP_CMD__COUNT)
        return "";
    return verb_names[verb];
}

static char ascii_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

void smtp_cmd_parse(const char *line, size_t len, struct smtp_cmd *cmd_r)
{
    while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;

    size_t vlen = 0;
    while (vlen < len && line[vlen] != ' ')
        vlen++;

    cmd_r->verb = SMTP_CMD_UNKNOWN;
    cmd_r->verb_text = line;
    cmd_r->verb_len = vlen;
    cmd_r->arg = NULL;
    cmd_r->arg_len = 0;
    if (vlen < len) {
        cmd_r->arg = line + vlen + 1;
        cmd_r->arg_len = len - vlen - 1;
    }

    for (int v = 1; v < SMTP_CMD__COUNT; v++) {
        const char *name = verb_names[v];
        if (strlen(name) != vlen)
            continue;
        size_t i = 0;
        while (i < vlen && ascii_upper(line[i]) == name[i])
            i++;
        if (i == vlen) {
            cmd_r->verb = (enum smtp_verb)v;
            break;
        }
    }
}
