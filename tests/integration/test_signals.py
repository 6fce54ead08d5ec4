"""SIGTERM and SIGHUP handling, each on its own server."""

import re
import signal
import subprocess
import time

from helpers import HOSTNAME, SMTPRaw, check, qid_of, token, wait_for_log


def test_sigterm_idle_session(make_server):
    s = make_server()
    with SMTPRaw(s.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        s.signal(signal.SIGTERM)
        r = c.reply()
        check(r, 421, "4.3.2", "Service shutting down", c)
        assert r.text == "4.3.2 %s Service shutting down" % HOSTNAME, r
        c.expect_closed()
    try:
        rc = s.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError("server still running 15 s after SIGTERM\n" + s.log_tail())
    assert rc == 0, "exit status %s after SIGTERM\n%s" % (rc, s.log_tail())
    s.exit_codes.append(rc)
    s.proc = None
    assert not s.sanitizer_reports(), s.log_tail(200)


def test_sigterm_no_sessions_exits_zero(make_server):
    s = make_server()
    s.signal(signal.SIGTERM)
    rc = s.proc.wait(15)
    s.proc = None
    assert rc == 0, s.log_tail()
    # and it starts again on the same data dir and port
    s.start()
    with SMTPRaw(s.port) as c:
        c.hello()


def test_sigterm_during_data_finishes_message(make_server):
    """A transaction in DATA gets timeout-shutdown (10 s) to finish: a message
    completed within it is accepted and, after a restart at the latest,
    delivered."""
    s = make_server()
    tok = token()
    with SMTPRaw(s.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        c.cmd_expect("DATA", 354)
        c.send(b"Subject: " + tok.encode() + b"\r\n\r\npart one\r\n")
        s.signal(signal.SIGTERM)
        time.sleep(0.5)
        c.send(b"part two\r\n.\r\n")
        r = c.reply()
        check(r, 250, "2.0.0", None, c)
        qid_of(r.text)
        rest = c.read_all_until_close()
        assert all(x.code in (421, 221) for x in rest), c.dump()
    rc = s.proc.wait(15)
    s.proc = None
    assert rc == 0, s.log_tail()
    s.start()
    s.wait_messages("demo@example.test", tok)


def rcpt_reply(port, rcpt):
    with SMTPRaw(port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        return c.cmd("RCPT TO:<%s>" % rcpt)


def test_sighup_adds_user(make_server):
    s = make_server()
    r = rcpt_reply(s.port, "carol@example.test")
    assert (r.code, r.enh) == (550, "5.1.1"), r
    old = SMTPRaw(s.port)            # a session that started before the reload
    old.hello()
    s.config_path.write_text(s.config_path.read_text() + "user carol@example.test\n")
    s.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        r = rcpt_reply(s.port, "carol@example.test")
        if r.code == 250 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (r.code, r.enh) == (250, "2.1.5"), "new user not accepted after SIGHUP: %r\n%s" % (
        r, s.log_tail())
    tok = token()
    with SMTPRaw(s.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<carol@example.test>", 250, "2.1.5")
        check(c.send_data(b"Subject: " + tok.encode() + b"\r\n\r\nhi carol\r\n"),
              250, "2.0.0", None, c)
    s.wait_messages("carol@example.test", tok)
    # existing users still work
    r = rcpt_reply(s.port, "demo@example.test")
    assert r.code == 250, r
    # the older session keeps the configuration it started with
    with old:
        old.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        old.cmd_expect("RCPT TO:<carol@example.test>", 550, "5.1.1")
        old.cmd_expect("QUIT", 221, "2.0.0")


def test_sighup_broken_config_keeps_old(make_server):
    s = make_server()
    good = s.config_path.read_text()
    lines = good.splitlines()
    lines.append("user carol@example.test")
    lines.append("this-is-not-a-directive 42")
    bad_line = len(lines)
    s.config_path.write_text("\n".join(lines) + "\n")
    start = len(s.log())
    s.signal(signal.SIGHUP)
    text = wait_for_log(s, re.escape("%s:%d" % (s.config_path, bad_line)), timeout=10,
                        start=start)
    assert "this-is-not-a-directive" in text or "unknown" in text.lower(), text
    # still answering, with the old configuration
    with SMTPRaw(s.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<carol@example.test>", 550, "5.1.1")
        c.cmd_expect("RCPT TO:<demo@example.test>", 250, "2.1.5")
        tok = token()
        check(c.send_data(b"Subject: " + tok.encode() + b"\r\n\r\nstill here\r\n"),
              250, "2.0.0", None, c)
    s.wait_messages("demo@example.test", tok)
    assert s.running()
    # a later good reload still works
    s.config_path.write_text(good + "user carol@example.test\n")
    s.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        r = rcpt_reply(s.port, "carol@example.test")
        if r.code == 250 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.code == 250, (r, s.log_tail())


def test_sighup_config_with_alias_loop_refused(make_server):
    s = make_server()
    s.config_path.write_text(s.config_path.read_text()
                             + "alias loop1@example.test loop2@example.test\n"
                             + "alias loop2@example.test loop1@example.test\n")
    start = len(s.log())
    s.signal(signal.SIGHUP)
    wait_for_log(s, re.escape(str(s.config_path)), timeout=10, start=start)
    time.sleep(0.3)
    r = rcpt_reply(s.port, "loop1@example.test")
    assert r.code == 550, r
    r = rcpt_reply(s.port, "demo@example.test")
    assert r.code == 250, r
