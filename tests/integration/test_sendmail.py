"""`estafeta sendmail` (and `mailq`): the sendmail(1)-compatible command for
local programs, against a real server over its local UNIX socket
(data-dir/public/submit.sock). Messages go in as a local program writes
them (LF line ends) and are checked in the Maildir as stored: CRLF only,
Date:/Message-ID: added, Bcc: removed, Return-Path from -f.

Exit statuses are sysexits(3): 0 queued, 64 usage, 65 data, 75 try again.
"""

import os
import pwd
import re
import shutil
import subprocess
import time

import pytest

from helpers import assert_crlf_only, estafeta_bin, split_stored, token

EX_USAGE, EX_DATAERR, EX_NOUSER, EX_TEMPFAIL = 64, 65, 67, 75


def sendmail(srv, *args, stdin=b"", argv=None, preexec=None, timeout=60):
    """Run `estafeta sendmail -C CONF ARGS` (or argv + ["-C", CONF] + ARGS)."""
    if isinstance(stdin, str):
        stdin = stdin.encode()
    cmd = list(argv) if argv is not None else [str(estafeta_bin()), "sendmail"]
    cmd += ["-C", str(srv.config_path)] + list(args)
    env = dict(os.environ)
    env.pop("ESTAFETA_CONFIG", None)
    env.pop("ESTAFETA_DATA", None)
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                          env=env, cwd=str(srv.root), preexec_fn=preexec)


def ok(p):
    assert p.returncode == 0, "exit %d\nstdout %r\nstderr %s" % (
        p.returncode, p.stdout, p.stderr.decode(errors="replace"))


def login():
    return pwd.getpwuid(os.getuid()).pw_name


def header_of(msg):
    """The header section of a stored message (after Return-Path/Received)."""
    _, _, rest = split_stored(msg)
    head, sep, _ = rest.partition(b"\r\n\r\n")
    assert sep, "no empty line in %r" % rest[:500]
    return head + b"\r\n"


def body_of(msg):
    _, _, rest = split_stored(msg)
    return rest.partition(b"\r\n\r\n")[2]


def fields(head, name):
    pat = re.compile(rb"^" + re.escape(name.encode()) + rb"[ \t]*:(.*(?:\r\n[ \t].*)*)",
                     re.IGNORECASE | re.MULTILINE)
    return [m.group(1).strip() for m in pat.finditer(head)]


def one(srv, address, tok):
    [m] = srv.wait_messages(address, tok)
    return m


# ---------------------------------------------------------------- delivery


def test_argument_recipients_crlf_date_message_id(server):
    tok = token()
    msg = "From: Demo Sender <someone@example.test>\nSubject: %s\n\nline one\nline two\n" % tok
    p = sendmail(server, "demo@example.test", "alice@example.test, Bob <bob@example.test>",
                 stdin=msg)
    ok(p)
    assert p.stdout == b"" and p.stderr == b""
    for rcpt in ("demo@example.test", "alice@example.test", "bob@example.test"):
        m = one(server, rcpt, tok)
        assert_crlf_only(m)
        rp, received, _ = split_stored(m)
        assert rp == "<%s@example.test>" % login()
        head = header_of(m)
        assert len(fields(head, "Date")) == 1, head
        [mid] = fields(head, "Message-ID")
        assert re.match(rb"^<[^<>@\s]+@[^<>@\s]+>$", mid), mid
        assert fields(head, "Subject") == [tok.encode()]
        assert body_of(m) == b"line one\r\nline two\r\n"


def test_argument_quoted_names_and_angle_brackets(server):
    """A comma inside a quoted display name (or after a \\-escaped quote
    in one) does not split the argument; an unbalanced '<' refuses the
    whole command and sends nothing."""
    tok = token()
    p = sendmail(server, '"Doe, John" <alice@example.test>, "a\\"b, c" <bob@example.test>',
                 stdin="Subject: %s\n\nx\n" % tok)
    ok(p)
    for rcpt in ("alice@example.test", "bob@example.test"):
        assert body_of(one(server, rcpt, tok)) == b"x\r\n"
    tok2 = token()
    p = sendmail(server, "demo@example.test", "Bob <bob@example.test",
                 stdin="Subject: %s\n\nx\n" % tok2)
    assert p.returncode == EX_USAGE and b"unbalanced" in p.stderr, p.stderr
    time.sleep(0.5)
    server.wait_queue_empty()
    assert not [m for m in server.messages("demo@example.test") if tok2.encode() in m[1]]


def test_line_ends_normalized(server):
    tok = token()
    # LF, CRLF, a bare CR, and a last line without an end
    msg = b"Subject: " + tok.encode() + b"\n\nlf\ncrlf\r\nbare\rcr\r\nlast"
    ok(sendmail(server, "demo@example.test", stdin=msg))
    m = one(server, "demo@example.test", tok)
    assert_crlf_only(m)
    assert body_of(m) == b"lf\r\ncrlf\r\nbare\r\ncr\r\nlast\r\n"


def test_message_without_header_gets_separator(server):
    tok = token()
    ok(sendmail(server, "demo@example.test", stdin="just text %s\nmore\n" % tok))
    m = one(server, "demo@example.test", tok)
    head = header_of(m)
    assert fields(head, "Date") and fields(head, "Message-ID"), head
    assert body_of(m) == ("just text %s\r\nmore\r\n" % tok).encode()


def test_t_collects_to_cc_bcc_and_bcc_is_removed(server):
    tok = token()
    msg = ("To: Demo <demo@example.test>\n"
           "Cc: \"Alice A.\" <alice@example.test>\n"
           "Bcc: bob@example.test\n"
           "Subject: %s\n\nhidden bcc\n" % tok)
    ok(sendmail(server, "-t", stdin=msg))
    for rcpt in ("demo@example.test", "alice@example.test", "bob@example.test"):
        m = one(server, rcpt, tok)
        head = header_of(m)
        assert not fields(head, "Bcc"), "Bcc: kept in %s's copy: %r" % (rcpt, head)
        assert b"bob@example.test" not in m, m
        assert fields(head, "To") == [b"Demo <demo@example.test>"]


def test_t_adds_to_argument_recipients(server):
    tok = token()
    msg = "To: demo@example.test\nSubject: %s\n\nboth\n" % tok
    ok(sendmail(server, "-t", "alice@example.test", stdin=msg))
    one(server, "demo@example.test", tok)
    one(server, "alice@example.test", tok)


def test_t_group_and_folded_header(server):
    tok = token()
    msg = ("To: undisclosed-recipients:;\n"
           "Cc: demo@example.test,\n\talice@example.test\n"
           "Subject: %s\n\nx\n" % tok)
    ok(sendmail(server, "-ti", stdin=msg))
    one(server, "demo@example.test", tok)
    one(server, "alice@example.test", tok)


def test_t_unqualified_names_get_the_primary_domain(server):
    # Scripts write "To: root"; sendmail qualifies it with the first domain.
    tok = token()
    ok(sendmail(server, "-t", "bob", stdin="To: demo, Alice <alice>\nSubject: %s\n\nx\n" % tok))
    for rcpt in ("demo@example.test", "alice@example.test", "bob@example.test"):
        one(server, rcpt, tok)


def test_t_unreadable_recipient_header_is_refused(server):
    tok = token()
    p = sendmail(server, "-t", stdin="To: demo@example.test, (unclosed\nSubject: %s\n\nx\n" % tok)
    assert p.returncode == EX_DATAERR, p.stderr
    assert b"To:" in p.stderr and b"NOT sent" in p.stderr
    server.assert_not_delivered(tok)


def test_duplicates_sent_once_and_recipient_limit(server):
    tok = token()
    ok(sendmail(server, "-t", "demo@example.test", "demo@example.test,demo",
                stdin="To: demo@example.test\nCc: Demo <demo@example.test>\n"
                      "Subject: %s\n\nonce\n" % tok))
    srv_msgs = server.wait_messages("demo@example.test", tok)
    time.sleep(0.5)
    assert len([m for _, m in server.messages("demo@example.test") if tok.encode() in m]) == 1
    assert len(srv_msgs) == 1
    # smtp-recipients (100): 101 different recipients are refused up front.
    tok = token()
    rcpts = ["demo+%d@example.test" % i for i in range(101)]
    p = sendmail(server, *rcpts, stdin="Subject: %s\n\nx\n" % tok)
    assert p.returncode == EX_USAGE, p.stderr
    assert b"smtp-recipients" in p.stderr
    server.assert_not_delivered(tok)


def test_t_without_any_recipient(server):
    p = sendmail(server, "-t", stdin="Subject: nobody\n\nx\n")
    assert p.returncode == EX_USAGE
    assert b"no recipients" in p.stderr


@pytest.mark.parametrize("form", ["-f", "-fjoined", "-r"])
def test_f_sets_return_path(server, form):
    tok = token()
    sender = "%s@remote.test" % tok[-8:]
    args = [form[:2] + sender] if form == "-fjoined" else [form, sender]
    ok(sendmail(server, *args, "demo@example.test", stdin="Subject: %s\n\nx\n" % tok))
    rp, _, _ = split_stored(one(server, "demo@example.test", tok))
    assert rp == "<%s>" % sender


def test_f_null_sender(server):
    tok = token()
    ok(sendmail(server, "-f", "<>", "demo@example.test", stdin="Subject: %s\n\nx\n" % tok))
    rp, _, _ = split_stored(one(server, "demo@example.test", tok))
    assert rp == "<>"


def test_F_adds_from_only_when_missing(server):
    tok = token()
    ok(sendmail(server, "-F", "Test User", "demo@example.test",
                stdin="Subject: %s-a\n\nx\n" % tok))
    head = header_of(one(server, "demo@example.test", tok + "-a"))
    assert fields(head, "From") == [("Test User <%s@example.test>" % login()).encode()]
    # With -f the address is the sender's; a name with specials is quoted.
    ok(sendmail(server, "-F", "Q. Public, Jr", "-f", "qp@remote.test", "demo@example.test",
                stdin="Subject: %s-b\n\nx\n" % tok))
    head = header_of(one(server, "demo@example.test", tok + "-b"))
    assert fields(head, "From") == [b'"Q. Public, Jr" <qp@remote.test>']
    # A From: in the message wins.
    ok(sendmail(server, "-F", "Test User", "demo@example.test",
                stdin="From: Real <real@example.test>\nSubject: %s-c\n\nx\n" % tok))
    head = header_of(one(server, "demo@example.test", tok + "-c"))
    assert fields(head, "From") == [b"Real <real@example.test>"]
    # A control character cannot smuggle a header line in.
    p = sendmail(server, "-F", "Evil\nBcc: x@remote.test", "demo@example.test",
                 stdin="Subject: evil\n\nx\n")
    assert p.returncode == EX_USAGE, p.stderr


def test_lone_dot_ends_input_without_i(server):
    tok = token()
    msg = "Subject: %s\n\nbefore\n.\nafter\n" % tok
    ok(sendmail(server, "demo@example.test", stdin=msg))
    m = one(server, "demo@example.test", tok)
    assert body_of(m) == b"before\r\n"
    assert b"after" not in m


@pytest.mark.parametrize("flag", ["-i", "-oi"])
def test_lone_dot_is_data_with_i(server, flag):
    tok = token()
    msg = "Subject: %s\n\nbefore\n.\n..two\n.after\nend\n" % tok
    ok(sendmail(server, flag, "demo@example.test", stdin=msg))
    m = one(server, "demo@example.test", tok)
    assert body_of(m) == b"before\r\n.\r\n..two\r\n.after\r\nend\r\n"


def trickle(srv, args, data, delay=0.005):
    """Feed data one byte per write (each its own read on the other side)."""
    p = subprocess.Popen([str(estafeta_bin()), "sendmail", "-C", str(srv.config_path)] + args,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=str(srv.root))
    try:
        for i in range(len(data)):
            p.stdin.write(data[i:i + 1])
            p.stdin.flush()
            time.sleep(delay)
        p.stdin.close()
    except BrokenPipeError:
        pass
    out, err = p.stdout.read(), p.stderr.read()
    assert p.wait(30) == 0, err


@pytest.mark.parametrize("flags,expect", [
    ([], b"line\r\n..x\r\nbare\r\ncr\r\n"),
    (["-i"], b"line\r\n..x\r\nbare\r\ncr\r\n.\r\nafter\r\n.\r\n"),
])
def test_trickled_input_gives_the_same_message(server, flags, expect):
    # CR|LF, "."|CRLF and a lone dot split across reads; the whole message
    # written at once gives the same stored body.
    for mode in ("whole", "trickle"):
        tok = token()
        data = (b"Subject: " + tok.encode() + b"\r\nTo: demo@example.test\r\n\r\n"
                b"line\r\n..x\r\nbare\rcr\n.\r\nafter\r\n.")
        if mode == "whole":
            ok(sendmail(server, "-t", *flags, stdin=data))
        else:
            trickle(server, ["-t"] + flags, data)
        assert body_of(one(server, "demo@example.test", tok)) == expect, mode


def test_large_message_streams(server):
    tok = token()
    line = b"." + b"x" * 98 + b"\n"      # every line starts with a dot
    body = line * 9000                   # ~900 KB, under message-size 1M
    ok(sendmail(server, "-i", "demo@example.test",
                stdin=b"Subject: " + tok.encode() + b"\n\n" + body))
    m = one(server, "demo@example.test", tok)
    assert body_of(m) == body.replace(b"\n", b"\r\n")


def test_message_over_size_limit(make_server):
    srv = make_server()
    tok = token()
    body = (b"y" * 99 + b"\n") * 12000   # 1.2 MB > message-size 1M
    p = sendmail(srv, "demo@example.test", stdin=b"Subject: " + tok.encode() + b"\n\n" + body)
    assert p.returncode == EX_DATAERR, p.stderr
    assert b"NOT sent" in p.stderr
    srv.assert_not_delivered(tok)


# ---------------------------------------------------------------- modes


def read_reply(f):
    lines = []
    while True:
        line = f.readline()
        assert line, "connection closed; got %r" % lines
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), lines


def test_bs_smtp_on_stdin(server):
    tok = token()
    p = subprocess.Popen([str(estafeta_bin()), "sendmail", "-C", str(server.config_path), "-bs"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=str(server.root))
    try:
        code, _ = read_reply(p.stdout)
        assert code == 220

        def cmd(line, expect):
            p.stdin.write(line + b"\r\n")
            p.stdin.flush()
            c, lines = read_reply(p.stdout)
            assert c == expect, (line, lines)

        cmd(b"EHLO client.example", 250)
        cmd(b"MAIL FROM:<bs@remote.test>", 250)
        cmd(b"RCPT TO:<demo@example.test>", 250)
        cmd(b"DATA", 354)
        cmd(b"Subject: " + tok.encode() + b"\r\n\r\n..stuffed\r\n.", 250)
        cmd(b"QUIT", 221)
        p.stdin.close()
        assert p.wait(20) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    m = one(server, "demo@example.test", tok)
    rp, _, _ = split_stored(m)
    assert rp == "<bs@remote.test>"
    assert body_of(m) == b".stuffed\r\n"


def test_bs_stdin_closed_early(server):
    # Standard input ends right away: the greeting is still copied out and
    # the command ends without hanging.
    p = sendmail(server, "-bs", stdin=b"", timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"220 "), p.stdout


def wait_pending(srv, rcpt, args_fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        p = args_fn()
        if p.returncode == 0 and (" " * 41 + rcpt + "\n").encode() in p.stdout:
            return p
        assert time.monotonic() < deadline, "never listed: %r %r" % (p.stdout, p.stderr)
        time.sleep(0.2)


def test_bp_lists_the_queue(make_server, tmp_path):
    srv = make_server()
    tok = token()
    rcpt = "%s@remote.test" % tok[-10:]
    # A remote recipient waits in the queue for the relay.
    ok(sendmail(srv, rcpt, stdin="Subject: %s\n\npending\n" % tok))
    p = wait_pending(srv, rcpt, lambda: sendmail(srv, "-bp"))
    assert b" in 1 Request." in p.stdout, p.stdout
    assert ("  %s@example.test\n" % login()).encode() in p.stdout
    # mailq is sendmail -bp
    link = tmp_path / "mailq"
    link.symlink_to(estafeta_bin())
    p = wait_pending(srv, rcpt, lambda: sendmail(srv, argv=[str(link)]))
    assert b" in 1 Request." in p.stdout


def test_bp_empty_queue(make_server):
    srv = make_server()
    p = sendmail(srv, "-bp")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"Mail queue is empty\n", p.stdout


def test_invoked_as_sendmail_symlink(server, tmp_path):
    link = tmp_path / "sendmail"
    link.symlink_to(estafeta_bin())
    tok = token()
    p = sendmail(server, "-oi", "-t", argv=[str(link)],
                 stdin="To: alice@example.test\nSubject: %s\n\nvia link\n" % tok)
    ok(p)
    m = one(server, "alice@example.test", tok)
    assert body_of(m) == b"via link\r\n"


# ---------------------------------------------------------------- failures


def test_server_not_running(make_server):
    srv = make_server(start=False)
    p = sendmail(srv, "demo@example.test", stdin="Subject: lost?\n\nx\n")
    assert p.returncode == EX_TEMPFAIL, p.stderr
    err = p.stderr.decode()
    assert "server not running" in err and "NOT sent" in err, err
    assert str(srv.data_dir / "public" / "submit.sock") in err, err


def test_usage_errors(server):
    p = sendmail(server, "-Z", "demo@example.test", stdin="x\n")
    assert p.returncode == EX_USAGE and b"-Z" in p.stderr, p.stderr
    p = sendmail(server, stdin="x\n")
    assert p.returncode == EX_USAGE and b"no recipients" in p.stderr, p.stderr
    p = sendmail(server, "-bv", "demo@example.test", stdin="")
    assert p.returncode == EX_USAGE and b"-bv" in p.stderr, p.stderr
    p = sendmail(server, "-f", "bad\nsender@x.test", "demo@example.test", stdin="x\n")
    assert p.returncode == EX_USAGE, p.stderr
    p = sendmail(server, "a b@example.test", stdin="x\n")
    assert p.returncode == EX_USAGE, p.stderr
    # --help is not an error
    p = sendmail(server, "--help")
    assert p.returncode == 0 and b"usage" in p.stdout


def test_ignored_options_are_accepted(server):
    tok = token()
    ok(sendmail(server, "-oem", "-oee", "-oep", "-oeq", "-om", "-odb", "-odi",
                "-oQ/var/spool/mqueue", "-v", "-U", "-B", "8BITMIME", "-N", "never",
                "-V", "envid", "-R", "hdrs", "-h", "10", "-L", "label", "-X", "/dev/null",
                "-O", "x=y", "-bm", "--", "demo@example.test",
                stdin="Subject: %s\n\nx\n" % tok))
    one(server, "demo@example.test", tok)


def test_unknown_recipient_fails_whole_message(server):
    tok = token()
    p = sendmail(server, "demo@example.test", "no-such-user@example.test",
                 stdin="Subject: %s\n\nx\n" % tok)
    if p.returncode == 0:
        pytest.skip("server accepts unknown local recipients on the local socket "
                    "(bounced later)")
    assert p.returncode == EX_NOUSER, p.stderr
    assert b"no-such-user@example.test" in p.stderr
    server.assert_not_delivered(tok)


def test_unprivileged_user(server):
    """No privilege is needed: run as nobody, mail arrives from nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    nobody = pwd.getpwnam("nobody")
    tok = token()

    def drop():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    p = sendmail(server, "demo@example.test", stdin="Subject: %s\n\nunprivileged\n" % tok,
                 preexec=drop)
    ok(p)
    rp, _, _ = split_stored(one(server, "demo@example.test", tok))
    assert rp == "<nobody@example.test>"
    # The same through setpriv, the way an administrator would check it.
    if shutil.which("setpriv") is None:
        return
    tok2 = token()
    cmd = ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
           "--clear-groups", str(estafeta_bin()), "sendmail", "-C", str(server.config_path),
           "-t"]
    r = subprocess.run(cmd, input=("To: bob@example.test\nSubject: %s\n\nx\n" % tok2).encode(),
                       capture_output=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    one(server, "bob@example.test", tok2)
