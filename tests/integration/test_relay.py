"""Open relay (shared/design/security.md section 5): every relay form is
refused on the MX listener and nothing is delivered anywhere."""

import pytest

from helpers import SMTPRaw, list_tree, token

RELAY_FORMS = [
    "user@other.test",
    "user@OTHER.test",
    "user%other.test@example.test",
    "demo%example.test@example.test",
    "@example.test:user@other.test",
    "@example.test,@example.test:user@other.test",
    "user@other.test@example.test",
    '"user@other.test"@example.test',
    '"user%other.test"@example.test',
    "other.test!user@example.test",
    "user@[127.0.0.1]",
    "demo@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user@example.test.",
    "user@sub.example.test",
]


@pytest.mark.parametrize("addr", RELAY_FORMS)
def test_relay_refused(server, addr):
    tok = token()
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        r = c.cmd("RCPT TO:<%s>" % addr)
        ok = (r.code, r.enh) == (554, "5.7.1") or (r.code == 501 and r.enh in
                                                   ("5.1.3", "5.5.2", "5.5.4"))
        assert ok, "RCPT TO:<%s> got %r, want 554 5.7.1 or a 501 syntax error\n%s" % (
            addr, r, c.dump())
        if r.code == 554:
            assert "Relay access denied" in r.text, r
        # nothing was accepted, so DATA has no recipient
        c.cmd_expect("DATA", 554, "5.5.1")
        c.cmd_expect("RSET", 250, "2.0.0")
        # the same form next to a good recipient: only the good one gets it
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<bob@example.test>", 250, "2.1.5")
        r2 = c.cmd("RCPT TO:<%s>" % addr)
        assert (r2.code, r2.enh) == (r.code, r.enh), c.dump()
        c.cmd_expect("DATA", 354)
        c.send(b"Subject: " + tok.encode() + b"\r\n\r\nrelay test\r\n.\r\n")
        c.expect(250, "2.0.0")
        c.cmd_expect("QUIT", 221, "2.0.0")
    server.wait_messages("bob@example.test", tok)
    server.wait_queue_empty()
    where = [a for a, _, m in server.all_messages() if tok.encode() in m]
    assert where == ["bob@example.test"], where
    domains = sorted(p.name for p in (server.data_dir / "mail").iterdir())
    assert set(domains) <= {"example.test", "catch.test"}, list_tree(server.data_dir / "mail")


def test_no_relay_with_null_sender_or_local_sender(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        for sender in ("", "demo@example.test", "postmaster@example.test"):
            c.cmd_expect("MAIL FROM:<%s>" % sender, 250, "2.1.0")
            c.cmd_expect("RCPT TO:<user@other.test>", 554, "5.7.1")
            c.cmd_expect("RSET", 250, "2.0.0")


def test_mailbox_path_escape_refused(server):
    """Local parts that look like paths never create files outside mail/."""
    tok = token()
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        for addr in ('"../../etc"@example.test', '"demo/../alice"@example.test',
                     '".demo"@example.test', '"a/b"@example.test'):
            r = c.cmd("RCPT TO:<%s>" % addr)
            assert r.code in (550, 553, 554, 501), c.dump()
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("DATA", 354)
        c.send(b"Subject: " + tok.encode() + b"\r\n\r\nx\r\n.\r\n")
        c.expect(250, "2.0.0")
    server.wait_messages("demo@example.test", tok)
    server.wait_queue_empty()
    assert [a for a, _, m in server.all_messages() if tok.encode() in m] == ["demo@example.test"]
    assert not (server.data_dir / "etc").exists()
