"""SMTP smuggling (shared/design/security.md section 2).

For each malformed end-of-data sequence: DATA, content, the sequence, then a
smuggled transaction, then the real <CRLF>.<CRLF> and QUIT. Only the real end
may end the message; nothing after the sequence may be read as a command.
"""

import time

import pytest

from helpers import SMTPRaw, check, split_stored, token

# name -> (sequence, holds a bare CR or LF: rejected 550 5.6.0 at the real end)
SEQUENCES = {
    "LF.LF": (b"\n.\n", True),
    "LF.CRLF": (b"\n.\r\n", True),
    "CRLF.LF": (b"\r\n.\n", True),
    "CR.CR": (b"\r.\r", True),
    "CR.LF": (b"\r.\n", True),
    "LF.CR": (b"\n.\r", True),
    "CR.CRLF": (b"\r.\r\n", True),
    "CRLF.CR+MAIL": (b"\r\n.\r", True),        # followed directly by "MAIL"
    "CRLF.CR+X": (b"\r\n.\rX", True),
    "CRLF.CR+CRLF": (b"\r\n.\r\r\n", True),
    "CRCRLF.CRCRLF": (b"\r\r\n.\r\r\n", True),
    "CRLF.NUL.CRLF": (b"\r\n\0.\r\n", False),  # CRLF only; a NUL before the dot
}


@pytest.mark.parametrize("where", ["body", "header"])
@pytest.mark.parametrize("split", [False, True], ids=["one-write", "split"])
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_smuggling(server, name, split, where):
    seq, bare = SEQUENCES[name]
    tok, evil_tok = token(), token()
    if where == "body":
        first = b"Subject: " + tok.encode() + b"\r\n\r\nhello" + seq
    else:   # inside the header section, before the empty line
        first = b"Subject: " + tok.encode() + seq
    smuggled = (b"MAIL FROM:<evil@x.test>\r\n"
                b"RCPT TO:<demo@example.test>\r\n"
                b"DATA\r\n"
                b"smuggled " + evil_tok.encode() + b"\r\n")
    rest = smuggled + b"\r\n.\r\n" + b"QUIT\r\n"
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("DATA", 354)
        if split:
            c.send(first)
            time.sleep(0.1)
            c.send(rest)
        else:
            c.send(first + rest)
        replies = c.read_all_until_close()
        # exactly: the reply to the real end of data, then 221 to QUIT
        assert len(replies) == 2, "replies after DATA: %r\n%s" % (replies, c.dump())
        end, bye = replies
        if bare:
            check(end, 550, "5.6.0", None, c)
        else:
            assert end.code in (250, 550, 554), c.dump()
        check(bye, 221, "2.0.0", None, c)
    server.wait_queue_empty()
    for addr, path, m in server.all_messages():
        assert not m.startswith(b"Return-Path: <evil@x.test>"), (addr, path, m[:300])
        if evil_tok.encode() in m:
            # only acceptable as part of the one real message, sent as a whole
            assert not bare, (addr, m[:300])
            assert end.code == 250
            assert tok.encode() in m and split_stored(m)[0] == "<sender@remote.test>"
            assert split_stored(m)[2] == first + smuggled + b"\r\n", m[:500]
        if bare:
            assert tok.encode() not in m, "message with bare CR/LF delivered: %r" % m[:300]


def test_dot_right_after_354_ends_data(server):
    """.<CRLF> immediately after the 354 is the end (the CRLF of the DATA
    line counts); nothing smuggled follows it."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("DATA", 354)
        c.send(b".\r\nNOOP\r\n")
        check(c.reply(), 250, "2.0.0", None, c)
        check(c.reply(), 250, "2.0.0", None, c)
        c.cmd_expect("QUIT", 221, "2.0.0")


def test_bare_lf_at_start_of_data(server):
    tok = token()
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("DATA", 354)
        c.send(b"\n.\nMAIL FROM:<evil@x.test>\r\n" + tok.encode() + b"\r\n.\r\nQUIT\r\n")
        replies = c.read_all_until_close()
        assert [(r.code, r.enh) for r in replies] == [(550, "5.6.0"), (221, "2.0.0")], c.dump()
    server.assert_not_delivered(tok)
