"""The estafeta command's management subcommands against real files and a
real server: user add/passwd/del/list (argon2id hashes, password never on the
command line), queue list, and the total connection limit."""

import re
import subprocess

from helpers import SMTPRaw, check, estafeta_bin, token, wait_for_log


def run(server, *args, stdin=None):
    p = subprocess.run([str(estafeta_bin())] + list(args) + ["-c", str(server.config_path)],
                       input=stdin, capture_output=True, text=True, timeout=60)
    return p


def users_file(server):
    return server.data_dir / "users"


def test_user_add_list_passwd_del(make_server):
    srv = make_server(start=False, extra="users-file users\n")
    p = run(srv, "user", "add", "carol@example.test", stdin="s3cret-pass\n")
    assert p.returncode == 0, p.stderr
    text = users_file(srv).read_text()
    [line] = [l for l in text.splitlines() if l.startswith("carol@example.test:")]
    assert line.split(":")[1].startswith("$argon2id$"), line
    assert "s3cret-pass" not in text
    # Adding again is refused; an address outside our domains too.
    assert run(srv, "user", "add", "carol@example.test", stdin="x\n").returncode != 0
    assert run(srv, "user", "add", "dave@other.test", stdin="x\n").returncode != 0
    p = run(srv, "user", "list")
    assert p.returncode == 0
    assert "carol@example.test" in p.stdout and "demo@example.test" in p.stdout
    # passwd changes the hash (new salt), del removes the line.
    assert run(srv, "user", "passwd", "carol@example.test", stdin="other-pass\n").returncode == 0
    line2 = [l for l in users_file(srv).read_text().splitlines()
             if l.startswith("carol@example.test:")][0]
    assert line2 != line and line2.split(":")[1].startswith("$argon2id$")
    assert run(srv, "user", "del", "carol@example.test").returncode == 0
    assert "carol@example.test" not in users_file(srv).read_text()
    assert run(srv, "user", "del", "carol@example.test").returncode != 0


def test_added_user_receives_mail_after_sighup(make_server):
    import signal
    srv = make_server(extra="users-file users\n")
    with SMTPRaw(srv.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<a@b.test>", 250)
        c.cmd_expect("RCPT TO:<erin@example.test>", 550, "5.1.1")
    assert run(srv, "user", "add", "erin@example.test", stdin="pw-erin-1\n").returncode == 0
    srv.signal(signal.SIGHUP)
    tok = token()
    import time
    deadline = time.monotonic() + 10
    while True:
        with SMTPRaw(srv.port) as c:
            c.hello()
            c.cmd_expect("MAIL FROM:<a@b.test>", 250)
            r = c.cmd("RCPT TO:<erin@example.test>")
            if r.code == 250:
                c.cmd_expect("DATA", 354)
                c.send(("Subject: %s\r\n\r\nhi\r\n.\r\n" % tok).encode())
                c.expect(250, "2.0.0")
                break
        assert time.monotonic() < deadline, "reload did not add the user"
        time.sleep(0.2)
    srv.wait_messages("erin@example.test", tok)


def test_queue_list_shows_pending(make_server):
    srv = make_server()
    with SMTPRaw(srv.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<list@remote.test>", 250)
        # fwd@ forwards to a remote address: it waits for the relay.
        c.cmd_expect("RCPT TO:<fwd@example.test>", 250)
        c.cmd_expect("DATA", 354)
        c.send(b"Subject: pending\r\n\r\nbody\r\n.\r\n")
        r = c.expect(250, "2.0.0")
    qid = r.text.split()[-1]
    # The alias's remote target is queued as a new message for the relay.
    pattern = r"event=queue.reinjected qid=%s new_qid=(\w+)" % qid
    new_qid = re.search(pattern, wait_for_log(srv, pattern)).group(1)
    p = run(srv, "queue", "list")
    assert p.returncode == 0, p.stderr
    assert new_qid in p.stdout and qid not in p.stdout, p.stdout
    # Postfix's mailq format (estafeta(8)): sender on the message line,
    # each recipient not yet delivered indented by 41 columns.
    assert re.search(r"^%s +\d+ .{19}  list@remote\.test$" % new_qid, p.stdout, re.M)
    assert re.search(r"^ {41}someone@remote\.test$", p.stdout, re.M), p.stdout
    assert re.search(r"^-- \d+ Kbytes in 1 Request\.$", p.stdout, re.M), p.stdout


def test_total_connection_limit(make_server):
    srv = make_server(extra="limit connections 2\n")
    a = SMTPRaw(srv.port)
    b = SMTPRaw(srv.port)
    try:
        c = SMTPRaw(srv.port, read_greeting=False)
        r = c.reply()
        check(r, 421, "4.7.0")
        c.expect_closed()
        c.close()
        # The first two are still served.
        a.hello()
        b.hello()
    finally:
        a.close()
        b.close()
