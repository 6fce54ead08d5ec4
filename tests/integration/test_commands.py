"""The SMTP command set and its replies, exactly as doc/smtp.md states them."""

import pytest

from helpers import (HOSTNAME, SMTPRaw, Server, check, finish_server as _finish,
                     require_binary as _require_binary, token)

EHLO_LINES = [
    "%s Hello client.example.net" % HOSTNAME,
    "PIPELINING",
    "SIZE 1048576",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "SMTPUTF8",
    "CHUNKING",
    "STARTTLS",  # the mx role offers STARTTLS (RFC 3207), never AUTH
    "DSN",
]


@pytest.fixture(scope="module")
def server_on(tmp_path_factory):
    """A second server with vrfy on and expn on."""
    _require_binary()
    s = Server(tmp_path_factory.mktemp("srv_on"), vrfy=True, expn=True).start()
    yield s
    problems = _finish(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))


def test_greeting(server):
    with SMTPRaw(server.port) as c:
        assert c.greeting.code == 220
        assert c.greeting.lines == ["%s ESMTP estafeta" % HOSTNAME], c.greeting


def test_ehlo_extension_list_exact(server):
    with SMTPRaw(server.port) as c:
        r = c.cmd("EHLO client.example.net")
        assert r.code == 250
        assert r.lines == EHLO_LINES, c.dump()
        # a second EHLO is allowed and gives the same answer
        r = c.cmd("EHLO client.example.net")
        assert r.lines == EHLO_LINES, c.dump()


def test_helo(server):
    with SMTPRaw(server.port) as c:
        r = c.cmd("HELO client.example.net")
        assert r.code == 250 and r.lines == [HOSTNAME], c.dump()
        # HELO session: ESMTP parameters are not allowed
        c.cmd_expect("MAIL FROM:<a@remote.test> SIZE=10", 555, "5.5.4")
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("QUIT", 221, "2.0.0")


def test_verbs_case_insensitive(server):
    with SMTPRaw(server.port) as c:
        check(c.cmd("ehlo client.example.net"), 250)
        c.cmd_expect("mail from:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("rcpt to:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("rset", 250, "2.0.0")


@pytest.mark.parametrize("line", ["EHLO", "HELO", "EHLO ", "HELO  "])
def test_helo_without_argument(server, line):
    with SMTPRaw(server.port) as c:
        c.cmd_expect(line, 501, "5.5.4")
        # the session is still without HELO
        c.cmd_expect("MAIL FROM:<a@remote.test>", 503, "5.5.1")


def test_noop_rset_quit(server):
    with SMTPRaw(server.port) as c:
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.hello()
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("RSET", 250, "2.0.0")
        # RSET ended the transaction: RCPT needs a new MAIL, MAIL is not nested
        c.cmd_expect("RCPT TO:<demo@example.test>", 503, "5.5.1")
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.cmd_expect("QUIT", 221, "2.0.0")
        c.expect_closed()


def test_help(server):
    with SMTPRaw(server.port) as c:
        r = c.cmd("HELP")
        assert r.code == 214, c.dump()
        assert len(r.lines) >= 2, c.dump()
        assert r.lines[-1] == "2.0.0 End of HELP", c.dump()
        listed = " ".join(r.lines[:-1]).upper()
        for verb in ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET",
                     "NOOP", "QUIT", "VRFY"):
            assert verb in listed, "HELP does not list %s: %r" % (verb, r)


def test_vrfy_expn_default_off(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        for arg in ("demo@example.test", "nobody@example.test", "demo", "x@other.test"):
            c.cmd_expect("VRFY " + arg, 252, "2.5.0")
        for arg in ("team@example.test", "demo@example.test", "nobody@example.test"):
            c.cmd_expect("EXPN " + arg, 502, "5.5.1")


def test_vrfy_on(server_on):
    with SMTPRaw(server_on.port) as c:
        c.hello()
        r = c.cmd_expect("VRFY demo@example.test", 250, "2.1.5")
        assert "<demo@example.test>" in r.text, c.dump()
        c.cmd_expect("VRFY nobody@example.test", 550, "5.1.1")
        c.cmd_expect("VRFY someone@other.test", 252, "2.5.0")


def test_expn_on(server_on):
    with SMTPRaw(server_on.port) as c:
        c.hello()
        r = c.cmd("EXPN team@example.test")
        assert r.code == 250, c.dump()
        joined = "\n".join(r.lines)
        assert "alice@example.test" in joined and "bob@example.test" in joined, c.dump()
        assert len(r.lines) == 2, "one mailbox per line expected: %r" % r
        c.cmd_expect("EXPN nobody@example.test", 550, "5.1.1")


@pytest.mark.parametrize("verb", ["TURN", "SEND FROM:<a@remote.test>",
                                  "SOML FROM:<a@remote.test>",
                                  "SAML FROM:<a@remote.test>",
                                  "ATRN example.test"])
def test_obsolete_commands_refused(server, verb):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect(verb, 502, "5.5.1")
        c.cmd_expect("NOOP", 250, "2.0.0")


def test_etrn_refused_for_anonymous_clients(server):
    """ETRN (RFC 1985, issue 5) is for authenticated clients and
    etrn-networks only: an anonymous MX client gets 459, the session goes on."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("ETRN example.test", 459, "4.7.1")
        c.cmd_expect("ETRN", 501, "5.5.4")
        c.cmd_expect("NOOP", 250, "2.0.0")


def test_auth_not_on_mx(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("AUTH PLAIN AGRlbW8AcGFzcw==", 503, "5.5.1")
        c.cmd_expect("STARTTLS now", 501, "5.5.4")
        c.cmd_expect("NOOP", 250, "2.0.0")


@pytest.mark.parametrize("line", ["FOO", "XYZZY bar", "MAILFROM:<a@b.test>", "DATAX"])
def test_unknown_command(server, line):
    with SMTPRaw(server.port) as c:
        c.cmd_expect(line, 500, "5.5.2")
        c.cmd_expect("NOOP", 250, "2.0.0")


def test_command_line_too_long(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("NOOP " + "x" * 600, 500, "5.5.2", "line too long")
        # the rest of the long line was not taken as a command
        c.cmd_expect("NOOP", 250, "2.0.0")
        # 512 octets including CRLF is allowed
        c.cmd_expect("NOOP " + "x" * (512 - 2 - 5), 250, "2.0.0")


@pytest.mark.parametrize("raw", [b"NO\x00OP\r\n", b"NOOP\rNOOP\r\n"])
def test_command_bad_character(server, raw):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.send(raw)
        c.expect(500, "5.5.2", "bad character")
        c.cmd_expect("NOOP", 250, "2.0.0")


def test_out_of_sequence_before_mail(server):
    # (each session stays under the 5 errors of smtp-bad-commands)
    with SMTPRaw(server.port) as c:
        c.cmd_expect("MAIL FROM:<a@remote.test>", 503, "5.5.1")
        c.hello()
        c.cmd_expect("RCPT TO:<demo@example.test>", 503, "5.5.1")
        c.cmd_expect("DATA", 503, "5.5.1")
        c.cmd_expect("BDAT 0 LAST", 503, "5.5.1")
        c.cmd_expect("QUIT", 221, "2.0.0")


def test_nested_mail(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("MAIL FROM:<a@remote.test>", 503, "5.5.1")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("QUIT", 221, "2.0.0")


def test_data_without_valid_recipient(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<nobody@example.test>", 550, "5.1.1")
        c.cmd_expect("DATA", 554, "5.5.1")
        c.cmd_expect("RSET", 250, "2.0.0")
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("BDAT 0 LAST", 554, "5.5.1")
        c.cmd_expect("QUIT", 221, "2.0.0")


def test_bdat_without_mail_skips_chunk(server):
    """A refused BDAT still consumes its chunk: the bytes are not commands."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.send(b"BDAT 6\r\nQUIT\r\n")
        c.expect(503, "5.5.1")
        c.cmd_expect("NOOP", 250, "2.0.0")


def test_data_after_bdat(server):
    tok = token()
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        chunk = ("Subject: %s\r\n\r\n" % tok).encode()
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        c.expect(250, "2.0.0", "%d octets received" % len(chunk))
        c.cmd_expect("DATA", 503, "5.5.1", "DATA after BDAT")
        c.cmd_expect("RSET", 250, "2.0.0")
    server.assert_not_delivered(tok)


def test_too_many_bad_commands(server):
    """limit smtp-bad-commands 5: the 6th error ends the session with 421."""
    with SMTPRaw(server.port) as c:
        c.hello()
        for i in range(5):
            c.cmd_expect("BOGUS%d" % i, 500, "5.5.2")
        c.send(b"BOGUS5\r\n")
        r = c.reply()
        if r.code == 500:           # answered the 6th error, then closes
            r = c.reply()
        check(r, 421, "4.7.0", "Too many errors", c)
        assert r.text.startswith("4.7.0 %s" % HOSTNAME), r
        c.expect_closed()


def test_bad_commands_count_syntax_errors(server):
    """MAIL/RCPT syntax errors count too, and a good command does not reset."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:a@remote.test", 501)
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.cmd_expect("MAIL FROM:<a@@remote.test>", 501)
        c.cmd_expect("FOO", 500, "5.5.2")
        c.cmd_expect("BAR", 500, "5.5.2")
        c.cmd_expect("BAZ", 500, "5.5.2")
        c.send(b"QUUX\r\n")
        r = c.reply()
        if r.code == 500:
            r = c.reply()
        check(r, 421, "4.7.0", None, c)
        c.expect_closed()


def test_ehlo_resets_transaction(server):
    """RFC 5321 4.1.4: EHLO in a transaction acts as RSET."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.hello()
        c.cmd_expect("RCPT TO:<demo@example.test>", 503, "5.5.1")
        c.cmd_expect("DATA", 503, "5.5.1")
        c.cmd_expect("MAIL FROM:<a@remote.test>", 250, "2.1.0")


def test_too_many_bad_commands_pipelined(server):
    """Errors sent in one write: after the 421 nothing more is answered."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.send(b"".join(b"BOGUS%d\r\n" % i for i in range(12)) + b"NOOP\r\n")
        replies = c.read_all_until_close()
        codes = [r.code for r in replies]
        assert codes[:5] == [500] * 5, c.dump()
        assert codes[-1] == 421 and replies[-1].enh == "4.7.0", c.dump()
        assert codes[5:-1] in ([], [500]), c.dump()


def test_many_pipelined_commands_without_reading(server):
    """A client that pipelines 40000 commands before reading anything gets
    every reply, in order (output-high-water stops reading, not answering)."""
    import threading
    n = 40000
    with SMTPRaw(server.port) as c:
        c.hello()
        payload = b"NOOP\r\n" * n + b"QUIT\r\n"
        t = threading.Thread(target=c.sock.sendall, args=(payload,), daemon=True)
        t.start()
        c.sock.settimeout(30)
        got = 0
        while True:
            r = c.reply()
            if r.code != 250:
                break
            got += 1
        t.join(30)
        assert got == n and r.code == 221, (got, r)


def test_quit_closes(server):
    with SMTPRaw(server.port) as c:
        r = c.cmd_expect("QUIT", 221, "2.0.0")
        assert r.text == "2.0.0 Bye", r
        c.expect_closed()
