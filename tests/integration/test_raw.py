"""Byte-exact SMTP over raw sockets: pipelining, dot-stuffing, BDAT, limits,
DSN and SMTPUTF8 parameters, loops."""

import time

import pytest

from helpers import SMTPRaw, assert_stored, check, qid_of, split_stored, token, unfold

SENDER = "sender@remote.test"


def msg(tok, body=b"body\r\n"):
    return b"Subject: " + tok.encode() + b"\r\n\r\n" + body


def stuff(data):
    """Dot-stuff a CRLF message (RFC 5321 4.5.2)."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def session(server):
    c = SMTPRaw(server.port)
    c.hello()
    return c


# ---------------------------------------------------------------- PIPELINING


def test_pipelining(server):
    tok = token()
    m = msg(tok)
    with session(server) as c:
        c.send(b"MAIL FROM:<sender@remote.test>\r\n"
               b"RCPT TO:<demo@example.test>\r\n"
               b"RCPT TO:<alice@example.test>\r\n"
               b"DATA\r\n")
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(250, "2.1.5")
        c.expect(354)
        c.send(m + b".\r\nQUIT\r\n")
        r = c.expect(250, "2.0.0")
        qid = qid_of(r.text)
        c.expect(221, "2.0.0")
        c.expect_closed()
    for rcpt in ("demo@example.test", "alice@example.test"):
        [stored] = server.wait_messages(rcpt, tok)
        assert_stored(stored, SENDER, m, qid=qid)


def test_pipelining_with_refused_recipient_and_rset(server):
    tok1, tok2 = token(), token()
    with session(server) as c:
        c.send(b"MAIL FROM:<sender@remote.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\n"
               b"RSET\r\n"
               b"MAIL FROM:<other@remote.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\n"
               b"RCPT TO:<alice@example.test>\r\n"
               b"DATA\r\n")
        c.expect(250, "2.1.0")
        c.expect(550, "5.1.1")
        c.expect(250, "2.1.5")
        c.expect(250, "2.0.0")
        c.expect(250, "2.1.0")
        c.expect(550, "5.1.1")
        c.expect(250, "2.1.5")
        c.expect(354)
        # two messages back to back in one write
        c.send(msg(tok1) + b".\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<bob@example.test>\r\n"
               b"DATA\r\n")
        c.expect(250, "2.0.0")
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        c.expect(354)
        c.send(msg(tok2) + b".\r\nQUIT\r\n")
        c.expect(250, "2.0.0")
        c.expect(221, "2.0.0")
    [s1] = server.wait_messages("alice@example.test", tok1)
    assert split_stored(s1)[0] == "<other@remote.test>"
    [s2] = server.wait_messages("bob@example.test", tok2)
    assert split_stored(s2)[0] == "<x@remote.test>"
    server.wait_queue_without(tok1)
    assert not [m for _, m in server.messages("bob@example.test") if tok1.encode() in m]


# ---------------------------------------------------------------- DATA content


def test_dot_stuffing(server):
    tok = token()
    original = (b"Subject: " + tok.encode() + b"\r\n\r\n"
                b".\r\n"                  # a line that is a single dot
                b".leading dot\r\n"
                b"..two dots\r\n"
                b"...\r\n"
                b"middle . dot\r\n"
                b" .space first\r\n"
                b"..\r\n"
                b"end\r\n")
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(stuff(original))
        check(r, 250, "2.0.0", None, c)
        qid = qid_of(r.text)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, original, qid=qid)


def test_dot_stuffed_first_line(server):
    tok = token()
    original = b"..first line is dots " + tok.encode() + b"\r\n.\r\n"
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(stuff(original))
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, original)


def test_unstuffed_leading_dot_is_removed(server):
    """RFC 5321 4.5.2: a line starting with "." and more characters loses the
    dot even when the client forgot to stuff it."""
    tok = token()
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(b"Subject: " + tok.encode() + b"\r\n\r\n.x\r\n")
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert split_stored(stored)[2] == b"Subject: " + tok.encode() + b"\r\n\r\nx\r\n"


def test_8bit_body(server):
    tok = token()
    body = bytes(b for b in range(0x20, 0x100) if b != 0x7f) + b"\r\n" \
        + "h\u00e9llo w\u00f6rld \u65e5\u672c\r\n".encode() + b"\t\x01\x1b[0m\r\n"
    m = msg(tok, body)
    with session(server) as c:
        c.start_mail(SENDER, mail_params=" BODY=8BITMIME")
        r = c.send_data(stuff(m))
        check(r, 250, "2.0.0", None, c)
        qid = qid_of(r.text)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, m, qid=qid)


def test_empty_body(server):
    with session(server) as c:
        c.start_mail("empty-sender@remote.test", rcpts=["bob@example.test"])
        r = c.send_data(b"")
        check(r, 250, "2.0.0", None, c)
        qid = qid_of(r.text)
    deadline = time.monotonic() + 10
    found = []
    while time.monotonic() < deadline and not found:
        found = [m for _, m in server.messages("bob@example.test")
                 if qid.encode() in m and m.startswith(b"Return-Path: <empty-sender@")]
        time.sleep(0.05)
    assert len(found) == 1, server.log_tail()
    assert_stored(found[0], "empty-sender@remote.test", b"", qid=qid)


def test_message_in_small_pieces(server):
    """The message arrives a few bytes at a time, the end marker split too."""
    tok = token()
    m = msg(tok, b"line one\r\n..dot\r\nline three\r\n")
    wire = stuff(m) + b".\r\n"
    with session(server) as c:
        c.start_mail(SENDER)
        c.cmd_expect("DATA", 354)
        for i in range(0, len(wire), 3):
            c.send(wire[i:i + 3])
            time.sleep(0.002)
        r = c.expect(250, "2.0.0")
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, m, qid=qid_of(r.text))


# ---------------------------------------------------------------- BDAT


def test_bdat_chunks(server):
    tok = token()
    chunks = [b"Subject: " + tok.encode() + b"\r\n\r\n",
              b"..not unstuffed in BDAT\r\nline with \r\n.\r\n in it\r\nQUIT\r\n",
              b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n",
              b".\r\nlast chunk\r\n"]
    with session(server) as c:
        c.start_mail(SENDER)
        for ch in chunks[:-1]:
            c.send(b"BDAT %d\r\n" % len(ch) + ch)
            c.expect(250, "2.0.0", "%d octets received" % len(ch))
        c.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
        r = c.expect(250, "2.0.0", "queued as")
        qid = qid_of(r.text)
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.cmd_expect("QUIT", 221, "2.0.0")
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, b"".join(chunks), qid=qid)
    server.wait_queue_without(b"evil@x.test")
    assert not [a for a, _, m in server.all_messages()
                if m.startswith(b"Return-Path: <evil@x.test>")]


def test_bdat_pipelined_and_zero_last(server):
    tok = token()
    chunks = [b"Subject: " + tok.encode() + b"\r\n", b"\r\nbody\r\n"]
    with session(server) as c:
        wire = b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
        for ch in chunks:
            wire += b"BDAT %d\r\n" % len(ch) + ch
        wire += b"BDAT 0 LAST\r\nQUIT\r\n"
        c.send(wire)
        c.expect(250, "2.1.0")
        c.expect(250, "2.1.5")
        for ch in chunks:
            c.expect(250, "2.0.0", "%d octets received" % len(ch))
        r = c.expect(250, "2.0.0", "queued as")
        c.expect(221, "2.0.0")
    [stored] = server.wait_messages("alice@example.test", tok)
    assert_stored(stored, SENDER, b"".join(chunks), qid=qid_of(r.text), with_="ESMTP")


def test_bdat_chunk_trickled(server):
    tok = token()
    ch = b"Subject: " + tok.encode() + b"\r\n\r\n" + b"x" * 500 + b"\r\n"
    with session(server) as c:
        c.start_mail(SENDER)
        wire = b"BDAT %d LAST\r\n" % len(ch) + ch
        for i in range(0, len(wire), 97):
            c.send(wire[i:i + 97])
            time.sleep(0.002)
        r = c.expect(250, "2.0.0")
        c.cmd_expect("NOOP", 250, "2.0.0")
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, ch, qid=qid_of(r.text))


@pytest.mark.parametrize("chunk", [b"Subject: x\r\n\r\na\nb\r\n", b"Subject: x\r\n\r\na\rb\r\n",
                                   b"Subject: x\r\n\r\nab\r"])
def test_bdat_bare_cr_lf_refused(server, chunk):
    """The stored message has CRLF line ends only, whatever path it came by."""
    tok = token()
    chunk = chunk.replace(b"Subject: x", b"Subject: " + tok.encode())
    with session(server) as c:
        c.start_mail(SENDER)
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        c.expect(550, "5.6.0")
        c.cmd_expect("NOOP", 250, "2.0.0")
    server.assert_not_delivered(tok)


@pytest.mark.parametrize("arg", [b"abc", b"-1", b"", b"1x", b"99999999999999999999999"])
def test_bdat_bad_size(server, arg):
    with session(server) as c:
        c.start_mail(SENDER)
        c.send(b"BDAT " + arg + b"\r\n" if arg else b"BDAT\r\n")
        c.expect(501, "5.5.4")
        # then close (RFC 5321 3.8 allows a 421 just before the close)
        rest = c.read_all_until_close()
        assert all(r.code == 421 for r in rest) and len(rest) <= 1, c.dump()


# ---------------------------------------------------------------- SIZE


def test_mail_size_parameter(server):
    with session(server) as c:
        c.cmd_expect("MAIL FROM:<sender@remote.test> SIZE=2000000", 552, "5.3.4")
        c.cmd_expect("MAIL FROM:<sender@remote.test> SIZE=1048577", 552, "5.3.4")
        c.cmd_expect("MAIL FROM:<sender@remote.test> SIZE=1000", 250, "2.1.0")
        c.cmd_expect("RSET", 250, "2.0.0")
        c.cmd_expect("MAIL FROM:<sender@remote.test> SIZE=18446744073709551615", 552, "5.3.4")
        # RFC 1870: size-value is at most 20 digits; longer is a syntax error
        r = c.cmd("MAIL FROM:<sender@remote.test> SIZE=99999999999999999999999")
        assert (r.code, r.enh) in ((552, "5.3.4"), (501, "5.5.4")), c.dump()


def test_body_over_size_limit(server):
    tok_big, tok_ok = token(), token()
    line = b"y" * 76 + b"\r\n"
    big = msg(tok_big, line * (1100 * 1024 // len(line)))
    assert len(big) > 1024 * 1024 + 50000
    with session(server) as c:
        c.start_mail(SENDER)
        c.cmd_expect("DATA", 354)
        c.send(big + b".\r\n")
        c.expect(552, "5.3.4")
        # the whole message was read: the next command is answered normally
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.start_mail(SENDER)
        r = c.send_data(msg(tok_ok))
        check(r, 250, "2.0.0", None, c)
        c.cmd_expect("QUIT", 221, "2.0.0")
    server.wait_messages("demo@example.test", tok_ok)
    server.assert_not_delivered(tok_big)


def test_body_just_under_size_limit(server):
    tok = token()
    line = b"z" * 76 + b"\r\n"
    m = msg(tok, line * (1000 * 1000 // len(line)))
    assert len(m) < 1024 * 1024 - 20000
    with session(server) as c:
        c.start_mail(SENDER, mail_params=" SIZE=%d" % len(m))
        r = c.send_data(m)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, m, qid=qid_of(r.text))


def test_bdat_over_size_limit(server):
    tok_big, tok_ok = token(), token()
    chunk = b"w" * 78 + b"\r\n"
    chunk = b"Subject: " + tok_big.encode() + b"\r\n\r\n" + chunk * 7000  # ~560 KB
    with session(server) as c:
        c.start_mail(SENDER)
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        c.expect(250, "2.0.0")
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        c.expect(552, "5.3.4")
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.start_mail(SENDER)
        r = c.send_data(msg(tok_ok))
        check(r, 250, "2.0.0", None, c)
    server.wait_messages("demo@example.test", tok_ok)
    server.assert_not_delivered(tok_big)


# ---------------------------------------------------------------- line length


def test_line_of_1000_octets_accepted(server):
    tok = token()
    m = msg(tok, b"a" * 998 + b"\r\n")
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(m)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, m)


def test_line_of_1001_octets_refused(server):
    tok, tok_ok = token(), token()
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(msg(tok, b"b" * 999 + b"\r\nmore\r\n"))
        check(r, 550, "5.6.0", None, c)
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.start_mail(SENDER)
        check(c.send_data(msg(tok_ok)), 250, "2.0.0", None, c)
    server.wait_messages("demo@example.test", tok_ok)
    server.assert_not_delivered(tok)


def test_very_long_line_refused(server):
    tok = token()
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(msg(tok, b"c" * 200000 + b"\r\n"))
        check(r, 550, "5.6.0", None, c)
        c.cmd_expect("NOOP", 250, "2.0.0")
    server.assert_not_delivered(tok)


# ---------------------------------------------------------------- recipients


def test_recipient_limit(server):
    tok = token()
    with session(server) as c:
        wire = b"MAIL FROM:<sender@remote.test>\r\n"
        wire += b"".join(b"RCPT TO:<demo+%d@example.test>\r\n" % i for i in range(101))
        c.send(wire)
        c.expect(250, "2.1.0")
        for i in range(100):
            c.expect(250, "2.1.5")
        c.expect(452, "4.5.3")
        c.cmd_expect("RCPT TO:<alice@example.test>", 452, "4.5.3")
        r = c.send_data(msg(tok))
        check(r, 250, "2.0.0", None, c)
    server.wait_messages("demo@example.test", tok)
    server.wait_queue_empty(timeout=30)
    assert not [m for _, m in server.messages("alice@example.test") if tok.encode() in m]
    # one copy per mailbox per message, however many recipients lead to it
    assert len([m for _, m in server.messages("demo@example.test") if tok.encode() in m]) == 1


# ---------------------------------------------------------------- DSN


def test_dsn_parameters_accepted(server):
    tok = token()
    with session(server) as c:
        c.cmd_expect("MAIL FROM:<sender@remote.test> RET=HDRS ENVID=abc+2B1", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test> NOTIFY=SUCCESS,FAILURE "
                     "ORCPT=rfc822;a+40b.test", 250, "2.1.5")
        c.cmd_expect("RCPT TO:<alice@example.test> NOTIFY=NEVER", 250, "2.1.5")
        c.cmd_expect("RCPT TO:<bob@example.test> NOTIFY=DELAY ORCPT=RFC822;bob@example.test",
                     250, "2.1.5")
        r = c.send_data(msg(tok))
        check(r, 250, "2.0.0", None, c)
    for rcpt in ("demo@example.test", "alice@example.test", "bob@example.test"):
        server.wait_messages(rcpt, tok)


@pytest.mark.parametrize("cmd,code,enh", [
    ("RCPT TO:<demo@example.test> ORCPT=rfc822;a+0D+0Ab.test", 501, "5.5.4"),
    ("RCPT TO:<demo@example.test> ORCPT=rfc822;a+00b.test", 501, "5.5.4"),
    ("RCPT TO:<demo@example.test> ORCPT=rfc822;a+ZZb.test", 501, "5.5.4"),
    ("RCPT TO:<demo@example.test> NOTIFY=NEVER,SUCCESS", 501, "5.5.4"),
    ("RCPT TO:<demo@example.test> NOTIFY=SOMETIMES", 501, "5.5.4"),
    ("RCPT TO:<demo@example.test> NOTIFY=SUCCESS NOTIFY=FAILURE", 501, "5.5.4"),
    ("RCPT TO:<demo@example.test> FOO=bar", 555, "5.5.4"),
])
def test_dsn_rcpt_parameters_refused(server, cmd, code, enh):
    with session(server) as c:
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect(cmd, code, enh)
        # nothing was accepted: DATA has no recipient
        c.cmd_expect("DATA", 554, "5.5.1")


@pytest.mark.parametrize("params,code,enh", [
    ("RET=BOGUS", 501, "5.5.4"),
    ("RET=HDRS RET=FULL", 501, "5.5.4"),
    ("ENVID=abc+0A+0Dx", 501, "5.5.4"),
    ("ENVID=" + "a" * 101, 501, "5.5.4"),
    ("BODY=9BIT", 501, "5.5.4"),
    ("FOO=bar", 555, "5.5.4"),
])
def test_mail_parameters_refused(server, params, code, enh):
    with session(server) as c:
        c.cmd_expect("MAIL FROM:<sender@remote.test> " + params, code, enh)
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")


# ---------------------------------------------------------------- SMTPUTF8


def test_smtputf8_address(server):
    tok = token()
    sender = "j\u00f6s\u00e9@r\u00e9mote.test"
    m = ("Subject: " + tok + " \u00fcnic\u00f6de\r\n\r\nb\u00f6dy\r\n").encode()
    with session(server) as c:
        c.cmd_expect(("MAIL FROM:<%s> SMTPUTF8" % sender).encode(), 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("RCPT TO:<d\u00ebmo@example.test>".encode(), 550, "5.1.1")
        r = c.send_data(m)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, sender, m, qid=qid_of(r.text), with_="UTF8SMTP")  # RFC 6531 3.7.3


def test_utf8_address_without_smtputf8(server):
    with session(server) as c:
        c.cmd_expect("MAIL FROM:<j\u00f6s\u00e9@remote.test>".encode(), 553, "5.6.7")
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<d\u00ebmo@example.test>".encode(), 553, "5.6.7")
        c.cmd_expect("RCPT TO:<demo@ex\u00e4mple.test>".encode(), 553, "5.6.7")


def test_smtputf8_invalid_utf8_refused(server):
    with session(server) as c:
        r = c.cmd(b"MAIL FROM:<j\xc3\x28s@remote.test> SMTPUTF8")
        assert r.code in (501, 553), c.dump()


# ---------------------------------------------------------------- loops


def received_lines(n):
    return b"".join(b"Received: from h%d.remote.test by h%d.remote.test; "
                    b"Sat, 21 Nov 2026 10:00:00 +0000\r\n" % (i, i + 1) for i in range(n))


def test_loop_101_received_refused(server):
    tok, tok_ok = token(), token()
    m = received_lines(101) + b"Subject: " + tok.encode() + b"\r\n\r\nloop\r\n"
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(m)
        check(r, 554, "5.4.6", None, c)
        c.start_mail(SENDER)
        check(c.send_data(msg(tok_ok)), 250, "2.0.0", None, c)
    server.wait_messages("demo@example.test", tok_ok)
    server.assert_not_delivered(tok)


def test_loop_101_received_refused_bdat(server):
    tok = token()
    m = received_lines(101) + b"Subject: " + tok.encode() + b"\r\n\r\nloop\r\n"
    with session(server) as c:
        c.start_mail(SENDER)
        c.send(b"BDAT %d LAST\r\n" % len(m) + m)
        c.expect(554, "5.4.6")
        c.cmd_expect("NOOP", 250, "2.0.0")
    server.assert_not_delivered(tok)


def test_100_received_accepted(server):
    tok = token()
    m = received_lines(100) + b"Subject: " + tok.encode() + b"\r\n\r\nok\r\n"
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(m)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, m, qid=qid_of(r.text))


def test_received_in_body_not_counted(server):
    tok = token()
    m = b"Subject: " + tok.encode() + b"\r\n\r\n" + received_lines(150)
    with session(server) as c:
        c.start_mail(SENDER)
        r = c.send_data(m)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, SENDER, m)
    assert unfold(split_stored(stored)[1]).count("Received:") == 1
