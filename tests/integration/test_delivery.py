"""Delivery through a standard client (smtplib): what lands in the Maildir."""

import smtplib

from helpers import (SMTPRaw, assert_stored, maildir_name_ok, qid_of, split_stored,
                     token, unfold)

HELO = "client.example.net"


def message(tok, extra=b""):
    return (b"From: Sender <sender@remote.test>\r\n"
            b"To: demo@example.test\r\n"
            b"Subject: test " + tok.encode() + b"\r\n"
            b"Message-ID: <" + tok.encode() + b"@remote.test>\r\n"
            b"\r\n"
            b"Hello,\r\n"
            b"this is " + tok.encode() + b".\r\n" + extra +
            b"\r\n"
            b"-- \r\n"
            b"sender\r\n")


def send(server, sender, rcpts, msg, expect_rcpt=None):
    """MAIL/RCPT/DATA with smtplib; returns (rcpt replies, data reply)."""
    s = smtplib.SMTP("127.0.0.1", server.port, local_hostname=HELO, timeout=10)
    try:
        code, _ = s.ehlo()
        assert code == 250
        code, resp = s.mail(sender)
        assert (code, resp[:5]) == (250, b"2.1.0"), (code, resp)
        replies = [s.rcpt(r) for r in rcpts]
        if expect_rcpt is not None:
            got = [(c, r.split(b" ", 1)[0].decode()) for c, r in replies]
            assert got == expect_rcpt, replies
        if any(c == 250 for c, _ in replies):
            data = s.data(msg)
        else:
            data = s.docmd("DATA")
        s.quit()
    finally:
        s.close()
    return replies, data


def accepted(server, sender, rcpts, msg):
    _, (code, resp) = send(server, sender, rcpts, msg,
                           expect_rcpt=[(250, "2.1.5")] * len(rcpts))
    resp = resp.decode()
    assert code == 250 and resp.startswith("2.0.0 Ok: queued as "), (code, resp)
    return qid_of(resp)


def test_simple_delivery(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "sender@remote.test", ["demo@example.test"], msg)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, "sender@remote.test", msg, qid=qid, helo=HELO,
                  rcpt="demo@example.test", with_="ESMTP")
    files = [p for p, m in server.messages("demo@example.test") if tok.encode() in m]
    assert len(files) == 1 and maildir_name_ok(files[0], stored), files
    assert files[0].parent.name == "new"
    server.wait_queue_empty()
    tmp = server.maildir("demo@example.test") / "tmp"
    assert tmp.is_dir() and list(tmp.iterdir()) == []
    assert (server.maildir("demo@example.test") / "cur").is_dir()
    # doc/store.md: files 0600, directories 0700
    assert files[0].stat().st_mode & 0o777 == 0o600, oct(files[0].stat().st_mode)
    for d in ("new", "cur", "tmp"):
        mode = (server.maildir("demo@example.test") / d).stat().st_mode & 0o777
        assert mode == 0o700, (d, oct(mode))


def test_queue_dir_private(server):
    """doc/queue.md: the queue directory is mode 0700 (queued mail is private
    to the run-as user, not its group)."""
    accepted(server, "sender@remote.test", ["demo@example.test"], message(token()))
    for d in (server.queue_dir(), server.queue_dir() / "msg", server.queue_dir() / "incoming"):
        mode = d.stat().st_mode & 0o777
        assert mode & 0o077 == 0, "%s has mode %s, doc/queue.md says 0700" % (d, oct(mode))


def test_received_header_shape(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "sender@remote.test", ["demo@example.test"], msg)
    [stored] = server.wait_messages("demo@example.test", tok)
    _, received, _ = split_stored(stored)
    r = unfold(received)
    # Received: from HELO (ADDR [ADDR]) by HOST (estafeta) with ESMTP id QID for <rcpt>; date
    assert r.startswith("Received: from %s (" % HELO), r
    assert "[127.0.0.1]" in r, r
    assert "by mail.example.test (estafeta) with ESMTP id %s" % qid in r, r
    assert "for <demo@example.test>;" in r, r
    # folded lines are at most 998 octets and the header holds no empty line
    for line in received.split(b"\r\n")[:-1]:
        assert line and len(line) <= 998, received


def test_null_sender(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "", ["demo@example.test"], msg)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, "", msg, qid=qid)


def test_multiple_recipients(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "sender@remote.test",
                   ["demo@example.test", "alice@example.test", "bob@example.test"], msg)
    for rcpt in ("demo@example.test", "alice@example.test", "bob@example.test"):
        stored = server.wait_messages(rcpt, tok)
        assert len(stored) == 1, (rcpt, len(stored))
        _, received, rest = assert_stored(stored[0], "sender@remote.test", msg, qid=qid)
        # "for" only for a single recipient
        assert "for <" not in unfold(received), received
    server.wait_queue_empty()
    for rcpt in ("demo@example.test", "alice@example.test", "bob@example.test"):
        assert len([m for _, m in server.messages(rcpt) if tok.encode() in m]) == 1


def test_alias_fan_out(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "sender@remote.test", ["team@example.test"], msg)
    for rcpt in ("alice@example.test", "bob@example.test"):
        [stored] = server.wait_messages(rcpt, tok)
        assert_stored(stored, "sender@remote.test", msg, qid=qid)
    server.wait_queue_empty()
    for rcpt in ("alice@example.test", "bob@example.test"):
        assert len([m for _, m in server.messages(rcpt) if tok.encode() in m]) == 1
    assert not [m for _, m in server.messages("demo@example.test") if tok.encode() in m]
    assert not server.maildir("team@example.test").exists()


def test_subaddress(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "sender@remote.test", ["demo+tag@example.test"], msg)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, "sender@remote.test", msg, qid=qid)
    assert not server.maildir("demo+tag@example.test").exists()


def test_unknown_subaddress_base_refused(server):
    tok = token()
    replies, _ = send(server, "sender@remote.test", ["nobody+tag@example.test"],
                      message(tok))
    assert [(c, r.split(b" ")[0]) for c, r in replies] == [(550, b"5.1.1")], replies
    server.assert_not_delivered(tok)


def test_case_insensitive_recipient(server):
    tok = token()
    msg = message(tok)
    accepted(server, "sender@remote.test", ["DEMO@Example.TEST"], msg)
    server.wait_messages("demo@example.test", tok)


def test_catch_all(server):
    tok = token()
    msg = message(tok)
    qid = accepted(server, "sender@remote.test", ["whoever@catch.test"], msg)
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, "sender@remote.test", msg, qid=qid)
    assert not (server.data_dir / "mail" / "catch.test" / "whoever").exists()


def test_postmaster_any_case(server):
    for rcpt in ("postmaster@example.test", "POSTMASTER@example.test",
                 "PostMaster@EXAMPLE.test", "postmaster@catch.test"):
        tok = token()
        msg = message(tok)
        qid = accepted(server, "sender@remote.test", [rcpt], msg)
        [stored] = server.wait_messages("demo@example.test", tok)
        assert_stored(stored, "sender@remote.test", msg, qid=qid)


def test_postmaster_without_domain(server):
    """RFC 5321 4.5.1: RCPT TO:<Postmaster> (no domain) must be accepted."""
    tok = token()
    msg = message(tok)
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<Postmaster>", 250, "2.1.5")
        r = c.send_data(msg)
        assert r.code == 250 and r.enh == "2.0.0", c.dump()
        qid = qid_of(r.text)
        c.cmd_expect("RCPT TO:<postmaster>", 503, "5.5.1")  # transaction is over
        c.cmd_expect("QUIT", 221, "2.0.0")
    [stored] = server.wait_messages("demo@example.test", tok)
    assert_stored(stored, "sender@remote.test", msg, qid=qid)


def test_unknown_user_refused(server):
    tok = token()
    replies, (code, resp) = send(server, "sender@remote.test",
                                 ["nobody@example.test"], message(tok))
    [(c, r)] = replies
    assert c == 550 and r.startswith(b"5.1.1 "), replies
    assert b"<nobody@example.test>" in r and b"User unknown" in r, r
    assert (code, resp[:5]) == (554, b"5.5.1"), (code, resp)
    server.assert_not_delivered(tok)
    assert not server.maildir("nobody@example.test").exists()


def test_unknown_user_among_good_ones(server):
    tok = token()
    msg = message(tok)
    replies, (code, resp) = send(server, "sender@remote.test",
                                 ["nobody@example.test", "alice@example.test"], msg,
                                 expect_rcpt=[(550, "5.1.1"), (250, "2.1.5")])
    assert code == 250, (code, resp)
    qid = qid_of(resp.decode())
    [stored] = server.wait_messages("alice@example.test", tok)
    assert_stored(stored, "sender@remote.test", msg, qid=qid, rcpt="alice@example.test")
    server.wait_queue_empty()
    assert not server.maildir("nobody@example.test").exists()


def test_several_messages_one_session(server):
    toks = [token() for _ in range(3)]
    s = smtplib.SMTP("127.0.0.1", server.port, local_hostname=HELO, timeout=10)
    qids = []
    try:
        s.ehlo()
        for t in toks:
            assert s.mail("sender@remote.test")[0] == 250
            assert s.rcpt("bob@example.test")[0] == 250
            code, resp = s.data(message(t))
            assert code == 250, resp
            qids.append(qid_of(resp.decode()))
        s.quit()
    finally:
        s.close()
    assert len(set(qids)) == 3, qids
    for t, q in zip(toks, qids):
        [stored] = server.wait_messages("bob@example.test", t)
        assert_stored(stored, "sender@remote.test", message(t), qid=q)


def test_duplicate_recipients_one_copy(server):
    """qmgr.h: within one message each mailbox gets one copy, however many
    recipients lead to it."""
    tok = token()
    msg = message(tok)
    accepted(server, "sender@remote.test",
             ["demo@example.test", "DEMO@example.test", "demo+a@example.test",
              "postmaster@example.test", "x@catch.test"], msg)
    server.wait_messages("demo@example.test", tok)
    server.wait_queue_empty()
    assert len([m for _, m in server.messages("demo@example.test") if tok.encode() in m]) == 1


def test_overlong_addresses_refused(server):
    with SMTPRaw(server.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        r = c.cmd("RCPT TO:<%s@example.test>" % ("a" * 65))
        assert r.code in (501, 553), c.dump()
        r = c.cmd("RCPT TO:<demo@%s.test>" % ".".join(["b" * 60] * 5))
        assert r.code in (501, 553), c.dump()
        c.cmd_expect("RCPT TO:<%s@example.test>" % ("a" * 64), 550, "5.1.1")
        c.cmd_expect("RSET", 250, "2.0.0")
        r = c.cmd("MAIL FROM:<%s@remote.test>" % ("s" * 65))
        assert r.code in (501, 553), c.dump()
