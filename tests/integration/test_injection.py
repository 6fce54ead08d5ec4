"""Client text reaching the stored message (security.md section 4): the HELO
argument and addresses must never start a new header line or break the
Received: comment."""

import re

import pytest

from helpers import SMTPRaw, assert_stored, check, qid_of, split_stored, token, unfold

ODD_HELO = [
    b"foo.test (evil)",
    b"foo.test)(x",
    b"a\\b.test",
    b"foo.test\\",
    b"[127.0.0.1] (spoofed.example)",
    b"foo\x01bar.test",
    b"foo\x7fbar.test",
    b"h\xc3\xabllo.test",
    b"foo\xffbar.test",
    b"foo.test\tX-Injected: 1",
    b"foo.test X-Injected: 1",
    b"x" * 400,
    b"[x-foo:a)(b]",
    b"[x-foo:a\\b]",
    b"[IPv6:::1]",
    b"foo_bar.test",
]


def received_from_part(received):
    r = unfold(received)
    m = re.match(r"^Received: from (.*?) \((?:\S+ )?\[127\.0\.0\.1\]\)", r)
    assert m, "Received: does not have the form 'from HELO (ADDR [ADDR])': %r" % r
    return m.group(1)


@pytest.mark.parametrize("verb", [b"EHLO", b"HELO"])
@pytest.mark.parametrize("helo", ODD_HELO, ids=lambda h: repr(h)[2:30])
def test_odd_helo(server, helo, verb):
    tok = token()
    body = b"Subject: " + tok.encode() + b"\r\n\r\nhelo test\r\n"
    with SMTPRaw(server.port) as c:
        r = c.cmd(verb + b" " + helo)
        if r.code != 250:
            # refusing is fine; it must be the documented reply, and the
            # session must go on
            check(r, 501, "5.5.4", None, c)
            c.cmd_expect("MAIL FROM:<sender@remote.test>", 503, "5.5.1")
            return
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        r = c.send_data(body)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    # exactly Return-Path, one Received, then the message as sent: nothing
    # the client said became a header line of its own
    _, received, rest = assert_stored(stored, "sender@remote.test", body, qid=qid_of(r.text))
    frm = received_from_part(received)
    assert not set(frm) & set("()\\\r\n"), "unsanitized HELO text in Received: %r" % frm
    assert all(0x20 < ord(ch) < 0x7f or ch == " " for ch in frm), frm
    for line in received.split(b"\r\n")[:-1]:
        assert len(line) <= 998, "Received: line of %d octets" % len(line)
        assert not line.startswith(b"X-Injected"), received


def test_bare_lf_in_ehlo_does_not_inject(server):
    tok = token()
    body = b"Subject: " + tok.encode() + b"\r\n\r\nlf test\r\n"
    with SMTPRaw(server.port) as c:
        c.send(b"EHLO foo.test\nX-Injected: yes\r\n")
        r = c.reply()
        check(r, 250, None, None, c)
        r = c.reply()
        check(r, 500, "5.5.2", None, c)
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        r = c.send_data(body)
        check(r, 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, "sender@remote.test", body, helo="foo.test")
    assert b"X-Injected" not in stored


def test_helo_with_cr_refused(server):
    with SMTPRaw(server.port) as c:
        c.send(b"EHLO foo.test\rX-Injected: yes\r\n")
        c.expect(500, "5.5.2")
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 503, "5.5.1")


@pytest.mark.parametrize("sender", [
    '"john doe"@remote.test',
    '"a(b)c"@remote.test',
    '"back\\\\slash"@remote.test',
    "a.b+c=d@remote.test",
])
def test_odd_sender_in_return_path(server, sender):
    tok = token()
    body = b"Subject: " + tok.encode() + b"\r\n\r\nsender test\r\n"
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<%s>" % sender, 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        check(c.send_data(body), 250, "2.0.0", None, c)
    [stored] = server.wait_messages("demo@example.test", tok)
    rp, received, rest = split_stored(stored)
    assert rest == body
    assert rp == "<%s>" % sender, rp
    assert b"\r\n" not in stored.split(b"\r\n", 1)[0]


def test_sender_with_control_chars_refused(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        for s in (b'MAIL FROM:<"a\x01b"@remote.test>', b'MAIL FROM:<"a\x00b"@remote.test>',
                  b"MAIL FROM:<a\x7fb@remote.test>"):
            r = c.cmd(s)
            assert r.code in (500, 501, 553), c.dump()
        c.cmd_expect("MAIL FROM:<ok@remote.test>", 250, "2.1.0")
