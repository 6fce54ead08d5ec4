"""The POP3 server (issue 4, doc/pop3.md): every reply of the table with its
exact text, Python's poplib and fetchmail as real clients, byte-exact RETR
and TOP, bounded memory while a slow client reads a big message, the
delete semantics of UPDATE (RFC 1939 6), the exclusive mailbox lock
([IN-USE]), the session snapshot against concurrent delivery, a crash during
delivery, STLS command injection (security.md 3), CAPA per state, USER/PASS
and SASL (PLAIN, LOGIN, SCRAM-SHA-256), the failure delay and the lockout
shared with SMTP AUTH, and hostile input. Index loss and UID order are in
test_store_index.py."""

import os
import poplib
import random
import re
import socket
import subprocess
import threading
import time

import pytest

from helpers import (HOSTNAME, PASSWORDS, POP3Raw, SMTPRaw, SMTPTLS, Server,
                     ConnectionClosed, b64, check, client_context, deliver_wait,
                     finish_server, free_port, make_pop3_server, maildir_uniques,
                     pop3_uidl, require_binary, token)

CAROL, CAROL_PW = "carol@example.test", PASSWORDS["carol@example.test"]
DAVE, DAVE_PW = "dave@example.test", PASSWORDS["dave@example.test"]

AUTH_FAILED = "-ERR [AUTH] Authentication failed"
PLAIN_REFUSED = ("-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                 "connection, use STLS")
IN_USE = "-ERR [IN-USE] Mailbox is locked by another POP3 session"
LOCKED = "-ERR [SYS/TEMP] Too many failed logins, try later"
GREETING = "+OK estafeta POP3 server ready"
ALL_MECHS = {"PLAIN", "LOGIN", "SCRAM-SHA-256"}

# One mailbox per test on the module server, so tests do not see each
# other's mail; every user has the password "pw-<local part>".
LOCALS = ("flow", "ssl", "stls", "fm", "fmkeep", "dots", "top", "dele1", "dele2",
          "dele3", "dele4", "inuse", "inuse2", "conc", "auth", "capa", "errs",
          "eightbit", "single", "shut", "pipe", "top2", "drop")
USERS = dict(PASSWORDS)
USERS.update({"%s@example.test" % n: "pw-%s" % n for n in LOCALS})


def addr(local):
    return "%s@example.test" % local


def pw(local):
    return USERS[addr(local)]


@pytest.fixture(scope="module")
def ps(tmp_path_factory, pki):
    """The module's server: mx, pop3 (STLS) and pop3s with the test CA's
    certificate, 127.0.0.0/8 as plaintext network, auth-delay 0 and a high
    auth-failures so failed logins of many tests never lock 127.0.0.1."""
    require_binary()
    root = tmp_path_factory.mktemp("pop3srv")
    s = make_pop3_server(lambda start, extra: Server(root, extra=extra), pki=pki,
                         extra="limit auth-failures 1000\n", users=USERS)
    yield s
    problems = finish_server(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))


@pytest.fixture(scope="module")
def strict(tmp_path_factory, pki):
    """A server without plaintext networks: USER and PLAIN/LOGIN need TLS."""
    require_binary()
    root = tmp_path_factory.mktemp("pop3strict")
    s = make_pop3_server(lambda start, extra: Server(root, extra=extra), pki=pki,
                         plaintext=False, extra="limit auth-failures 1000\n")
    yield s
    problems = finish_server(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))


deliver = deliver_wait
U = pop3_uidl


def session(server, local, tls=False, implicit=False):
    """A logged-in POP3Raw for the module user `local`."""
    if implicit:
        c = POP3Raw(server.pop3s_port, implicit=True, context=client_context(server.pki["ca"]))
    else:
        c = POP3Raw(server.pop3_port, context=client_context(server.pki["ca"]))
        if tls:
            c.stls()
    assert c.greeting == GREETING, c.greeting
    c.login_ok(addr(local), pw(local))
    return c


def capa_set(lines):
    """CAPA lines as a set, the SASL line split into ('SASL', frozenset)."""
    assert len(lines) == len(set(lines)), "a capability listed twice: %r" % lines
    out = set()
    for x in lines:
        if x.startswith("SASL "):
            out.add(("SASL", frozenset(x.split()[1:])))
        else:
            out.add(x)
    return out


def capa_expected(user, sasl, stls):
    want = {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UTF8 USER",
            "IMPLEMENTATION estafeta"}
    if user:
        want.add("USER")
    if sasl:
        want.add(("SASL", frozenset(sasl)))
    if stls:
        want.add("STLS")
    return want


# ---------------------------------------------------------------- poplib


def test_poplib_full_session(ps):
    u = addr("flow")
    msgs = [deliver(ps, u) for _ in range(3)]
    p = poplib.POP3("127.0.0.1", ps.pop3_port, timeout=10)
    try:
        assert p.getwelcome() == GREETING.encode()
        assert p.user(u) == b"+OK Send your password"
        assert p.pass_(pw("flow")) == b"+OK Logged in"
        count, size = p.stat()
        assert count == 3 and size == sum(len(d) for d, _ in msgs)
        resp, lines, _ = p.list()
        assert resp == b"+OK"
        assert lines == [b"%d %d" % (i + 1, len(d)) for i, (d, _) in enumerate(msgs)]
        resp, lines, _ = p.uidl()
        assert lines == [b"%d %s" % (i + 1, U(uq).encode()) for i, (_, uq) in enumerate(msgs)]
        assert p.uidl(2) == b"+OK 2 " + U(msgs[1][1]).encode()
        assert p.list(3) == b"+OK 3 %d" % len(msgs[2][0])
        for i, (d, _) in enumerate(msgs):
            resp, lines, octets = p.retr(i + 1)
            assert resp == b"+OK %d octets" % len(d)
            assert b"".join(x + b"\r\n" for x in lines) == d
        resp, lines, _ = p.top(1, 0)
        assert resp == b"+OK Top of message follows"
        assert b"".join(x + b"\r\n" for x in lines) == msgs[0][0].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        assert p.dele(1) == b"+OK Message 1 deleted"
        assert p.stat() == (2, len(msgs[1][0]) + len(msgs[2][0]))
        assert p.rset() == b"+OK"
        assert p.stat()[0] == 3
        assert p.dele(2) == b"+OK Message 2 deleted"
        assert p.noop() == b"+OK"
        assert p.quit() == b"+OK Logging out, 1 message deleted"
    finally:
        p.close()
    left = maildir_uniques(ps, u)
    assert set(left) == {msgs[0][1], msgs[2][1]}, left.keys()


def test_poplib_pop3s_and_stls(ps):
    u = addr("ssl")
    d, uq = deliver(ps, u)
    ctx = client_context(ps.pki["ca"])
    ctx.check_hostname = True
    p = poplib.POP3_SSL("127.0.0.1", ps.pop3s_port, context=ctx, timeout=10)
    try:
        assert p.getwelcome() == GREETING.encode()
        caps = p.capa()
        assert "STLS" not in caps and "USER" in caps, caps
        assert set(caps["SASL"]) == ALL_MECHS, caps
        p.user(u)
        p.pass_(pw("ssl"))
        assert p.uidl()[1] == [b"1 " + U(uq).encode()]
        assert b"".join(x + b"\r\n" for x in p.retr(1)[1]) == d
        assert p.quit() == b"+OK Logging out, 0 messages deleted"
    finally:
        p.close()
    p = poplib.POP3("127.0.0.1", ps.pop3_port, timeout=10)
    try:
        assert "STLS" in p.capa()
        assert p.stls(context=ctx) == b"+OK Begin TLS negotiation"
        caps = p.capa()
        assert "STLS" not in caps and "USER" in caps, caps
        p.user(u)
        p.pass_(pw("ssl"))
        assert b"".join(x + b"\r\n" for x in p.retr(1)[1]) == d
        p.quit()
    finally:
        p.close()


# ---------------------------------------------------------------- fetchmail


def _fetchmail(server, local, tmp, keep, port=None, ssl_mode="pop3s"):
    """Run fetchmail against the server; every message goes to its own file
    in tmp/out. Returns (completed process, [bytes of each message])."""
    import shutil
    if shutil.which("fetchmail") is None:
        pytest.skip("fetchmail not installed (apt-get install -y fetchmail)")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    save = tmp / "save.sh"
    save.write_text('#!/bin/sh\nexec cat > "%s/$(date +%%s%%N).$$"\n' % out)
    os.chmod(save, 0o755)
    if ssl_mode == "pop3s":
        port = server.pop3s_port
        tls = 'ssl sslcertck sslcertfile "%s" sslcommonname "%s"' % (server.pki["ca"], HOSTNAME)
    else:
        port = server.pop3_port
        tls = 'sslproto "tls1.2+" sslcertck sslcertfile "%s" sslcommonname "%s"' % (
            server.pki["ca"], HOSTNAME)
    rc = tmp / "fetchmailrc"
    # invisible: no Received: of its own; no stripcr + forcecr: the MDA gets
    # the CRLF message exactly as RETR sent it; no rewrite: headers untouched.
    rc.write_text(
        "set no bouncemail\nset no syslog\nset invisible\n"
        "poll 127.0.0.1 with proto POP3 port %d timeout 30\n"
        '  user "%s" there with password "%s" is root here\n'
        '  options %s %s no rewrite no stripcr forcecr mda "%s"\n'
        % (port, addr(local), pw(local), tls, "keep" if keep else "no keep", save))
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(tmp), FETCHMAILHOME=str(tmp))
    p = subprocess.run(["fetchmail", "-f", str(rc), "-v", "--nodetach", "--idfile",
                        str(tmp / "ids")], env=env, capture_output=True, text=True,
                       timeout=90)
    got = [f.read_bytes() for f in sorted(out.iterdir())]
    for f in out.iterdir():
        f.unlink()
    return p, got


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "nokeep"])
def test_fetchmail(ps, tmp_path, keep):
    local = "fmkeep" if keep else "fm"
    u = addr(local)
    bodies = [
        b"Subject: %s plain\r\n\r\nhello\r\n",
        b"Subject: %s dots\r\n\r\n.\r\n..\r\n.leading\r\n...three\r\nend\r\n",
        b"Subject: %s 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xae\r\n\xff\xfe raw\r\n",
        b"Subject: %s long\r\n\r\n" + b"".join(b"line %05d " % i + b"x" * 60 + b"\r\n"
                                               for i in range(3000)),
    ]
    tok = token()
    stored = {}
    for i, b in enumerate(bodies):
        t = "%s-%d" % (tok, i)
        d, uq = deliver(ps, u, tok=t, body=b.replace(b"%s", t.encode(), 1))
        stored[uq] = d
    p, got = _fetchmail(ps, local, tmp_path, keep)
    assert p.returncode == 0, "fetchmail exit %d\n%s\n%s" % (p.returncode, p.stdout[-3000:],
                                                             p.stderr[-3000:])
    assert sorted(got) == sorted(stored.values()), (
        "fetchmail did not get every message byte-exact:\n got %r\nwant %r\n%s"
        % ([g[:200] for g in got], [d[:200] for d in stored.values()], p.stdout[-3000:]))
    left = maildir_uniques(ps, u)
    if keep:
        assert set(left) == set(stored), "keep: messages removed %s" % (
            set(stored) - set(left))
        # a second run with the idfile fetches nothing new ...
        p2, got2 = _fetchmail(ps, local, tmp_path, keep)
        assert p2.returncode in (0, 1), p2.stdout[-2000:]   # 1: no mail
        assert got2 == [], "keep + idfile fetched again: %d" % len(got2)
    else:
        assert left == {}, "without keep the Maildir must be emptied: %s" % list(left)
        p2, got2 = _fetchmail(ps, local, tmp_path, keep)
        assert p2.returncode == 1 and got2 == [], (p2.returncode, p2.stdout[-2000:])


def test_fetchmail_stls(ps, tmp_path):
    u = addr("stls")
    stored = {}
    for _ in range(2):
        d, uq = deliver(ps, u)
        stored[uq] = d
    p, got = _fetchmail(ps, "stls", tmp_path, keep=False, ssl_mode="stls")
    assert p.returncode == 0, "fetchmail exit %d\n%s\n%s" % (p.returncode, p.stdout[-3000:],
                                                             p.stderr[-3000:])
    assert "STLS" in p.stdout and "+OK Begin TLS negotiation" in p.stdout, p.stdout[-3000:]
    assert sorted(got) == sorted(stored.values())
    assert maildir_uniques(ps, u) == {}


# ---------------------------------------------------------------- RETR / TOP


def test_retr_byte_exact_and_stuffed(ps):
    u = addr("dots")
    body = (b"Subject: dots\r\n\r\n"
            b".\r\n"
            b"..\r\n"
            b".single\r\n"
            b"..double\r\n"
            b"...\r\n"
            b"\r\n"
            b" .space first\r\n"
            b"mid.dle.\r\n"
            b"." + b"y" * 990 + b"\r\n"
            b"tail\r\n")
    d, uq = deliver(ps, u, tok="Subject: dots", body=body)
    assert d.endswith(body)
    with session(ps, "dots") as c:
        r = c.cmd("RETR 1")
        assert r == "+OK %d octets" % len(d), r
        wire = c.multi_raw()
        # on the wire: every line starting with "." has one more
        want = [(b"." + x) if x.startswith(b".") else x for x in d.split(b"\r\n")[:-1]]
        assert wire == want, "stuffing differs:\n%r\n%r" % (wire[-12:], want[-12:])
        got, _ = c.retr(1)
        assert got == d
        assert c.cmd("LIST 1") == "+OK 1 %d" % len(d)
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_retr_eightbit_and_binary(ps):
    u = addr("eightbit")
    raw = bytes(b for b in range(1, 256) if b not in (10, 13))
    body = (b"Subject: eightbit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + raw + b"\r\n\xc3\xa9t\xc3\xa9\r\n\t\x7f\x80\xff\r\n")
    d, _ = deliver(ps, u, tok="Subject: eightbit", body=body)
    with session(ps, "eightbit") as c:
        got, r = c.retr(1)
        assert r == "+OK %d octets" % len(d)
        assert got == d


def test_top(ps):
    u = addr("top")
    body = b"Subject: top\r\nX-A: 1\r\n\r\nl1\r\n.l2\r\n\r\nl4\r\n"
    d, _ = deliver(ps, u, tok="Subject: top", body=body)
    head, rest = d.split(b"\r\n\r\n", 1)
    body_lines = rest.split(b"\r\n")[:-1]
    with session(ps, "top") as c:
        r, lines = c.cmd_multi("TOP 1 0")
        assert r == "+OK Top of message follows"
        assert b"".join(x + b"\r\n" for x in lines) == head + b"\r\n\r\n"
        for n in (1, 2, 3):
            r, lines = c.cmd_multi("TOP 1 %d" % n)
            assert b"".join(x + b"\r\n" for x in lines) == \
                head + b"\r\n\r\n" + b"".join(x + b"\r\n" for x in body_lines[:n]), n
        # the stuffed line is stuffed in TOP too
        c.send(b"TOP 1 2\r\n")
        assert c.line() == "+OK Top of message follows"
        assert c.multi_raw()[-1] == b"..l2"
        for n in (4, 5, 1000, 4294967295):
            r, lines = c.cmd_multi("TOP 1 %d" % n)
            assert b"".join(x + b"\r\n" for x in lines) == d, n
        c.cmd_expect("TOP 2 0", "-ERR No such message")
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("TOP 1 0", "-ERR Message 1 already deleted")
        c.cmd_expect("RETR 1", "-ERR Message 1 already deleted")
        c.cmd_expect("RSET", "+OK")
        r, lines = c.cmd_multi("TOP 1 0")


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _big_factory(make_server):
    """make_server with message-size 40M instead of BASE_CONFIG's 1M."""
    def factory(start, extra, **kw):
        srv = make_server(start=False, extra=extra, **kw)
        text = srv.config_path.read_text()
        assert "limit message-size 1M\n" in text
        srv.config_path.write_text(text.replace("limit message-size 1M\n",
                                                "limit message-size 40M\n"))
        return srv
    return factory


def test_big_message_slow_reader_bounded_memory(make_server):
    """A 1 MB message read slowly arrives byte-exact, and a client that
    stops reading in the middle of a big RETR does not make the server
    hold the message: RSS grows less than 16 MiB (doc/pop3.md: RETR reads
    the file a piece at a time as the client reads)."""
    asan = "quarantine_size_mb=1:" + os.environ.get("ASAN_OPTIONS", "")
    users = {"big@example.test": "pw-big"}
    s = make_pop3_server(_big_factory(make_server), users=users, env={"ASAN_OPTIONS": asan})
    u = "big@example.test"
    # every line starts with "." so the stuffed reply is larger than the file
    line = b"." + b"0123456789abcdef" * 4 + b"\r\n"
    one_mb = b"Subject: onemb\r\n\r\n" + line * (1000000 // len(line))
    d1, _ = deliver(s, u, tok="Subject: onemb", body=one_mb)
    big = b"Subject: huge\r\n\r\n" + line * (24 * 1000000 // len(line))
    d2, _ = deliver(s, u, tok="Subject: huge", body=big)
    c = POP3Raw(s.pop3_port, timeout=30)
    try:
        # (not much smaller: with a tiny window every segment is small and
        # Nagle + delayed ACK make the transfer crawl at ~80 KB/s)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.login_ok(u, "pw-big")
        time.sleep(0.3)
        before = _rss_kib(s.proc.pid)
        # 1 MB, read slowly in small pieces
        c.send(b"RETR 1\r\n")
        data = b""
        end = b"\r\n.\r\n"
        while not data.endswith(end):
            chunk = c.sock.recv(8192)
            assert chunk, "closed during RETR"
            data += chunk
            time.sleep(0.002)
        first, rest = data.split(b"\r\n", 1)
        assert first == b"+OK %d octets" % len(d1)
        unstuffed = b"".join((x[1:] if x.startswith(b".") else x) + b"\r\n"
                             for x in rest[:-len(end)].split(b"\r\n"))
        assert unstuffed == d1
        # 24 MB: start, then stop reading for a while
        c.send(b"RETR 2\r\n")
        got = c.sock.recv(4096)
        peak = before
        for _ in range(10):
            time.sleep(0.2)
            peak = max(peak, _rss_kib(s.proc.pid))
        grown = (peak - before) / 1024
        # then read the rest as fast as possible: it must be complete
        c.sock.settimeout(60)
        buf = bytearray(got)
        while not buf.endswith(end):
            chunk = c.sock.recv(1 << 20)
            assert chunk, "closed during RETR of the big message"
            buf += chunk
        first, rest = bytes(buf).split(b"\r\n", 1)
        assert first == b"+OK %d octets" % len(d2)
        assert b"".join((x[1:] if x.startswith(b".") else x) + b"\r\n"
                        for x in rest[:-len(end)].split(b"\r\n")) == d2
        # 100 pipelined RETRs of the 1 MB message (100 MB of replies) from a
        # client that reads nothing: the server stops reading commands
        c.sock.settimeout(3)
        try:
            c.sock.sendall(b"RETR 1\r\n" * 100 + b"QUIT\r\n")
        except socket.timeout:
            pass
        flood_peak = before
        for _ in range(10):
            time.sleep(0.2)
            flood_peak = max(flood_peak, _rss_kib(s.proc.pid))
        flood = (flood_peak - before) / 1024
    finally:
        c.close()
    # the dropped session released the mailbox and removed nothing
    with POP3Raw(s.pop3_port) as c2:
        deadline = time.monotonic() + 5
        while True:
            r = c2.login(u, "pw-big")
            if r != IN_USE or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r == "+OK Logged in", r
        assert c2.stat() == (2, len(d1) + len(d2))
        c2.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    print("RSS growth with 100 pipelined RETRs unread: %.1f MiB" % flood)
    assert flood < 16, ("server memory grew by %.1f MiB for 100 pipelined RETRs of "
                        "a 1 MB message that the client does not read" % flood)
    print("RSS growth while stalled: %.1f MiB" % grown)
    assert grown < 16, ("server memory grew by %.1f MiB while a client stalled in "
                        "the RETR of a 24 MB message" % grown)


# ---------------------------------------------------------------- delete semantics


def test_dele_quit_removes_files(ps):
    u = addr("dele1")
    msgs = [deliver(ps, u) for _ in range(3)]
    with session(ps, "dele1") as c:
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("DELE 3", "+OK Message 3 deleted")
        c.cmd_expect("DELE 3", "-ERR Message 3 already deleted")
        c.cmd_expect("DELE 4", "-ERR No such message")
        assert c.stat() == (1, len(msgs[1][0]))
        assert c.list() == [(2, len(msgs[1][0]))]
        assert c.uidl() == [(2, U(msgs[1][1]))]
        c.cmd_expect("LIST 1", "-ERR Message 1 already deleted")
        c.cmd_expect("UIDL 3", "-ERR Message 3 already deleted")
        # the files stay until QUIT
        assert len(maildir_uniques(ps, u)) == 3
        c.cmd_expect("QUIT", "+OK Logging out, 2 messages deleted")
        assert c.read_until_close() == b""
    assert set(maildir_uniques(ps, u)) == {msgs[1][1]}
    with session(ps, "dele1") as c:
        assert c.uidl() == [(1, U(msgs[1][1]))]
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_dele_then_dropped_connection_removes_nothing(ps):
    u = addr("dele2")
    msgs = [deliver(ps, u) for _ in range(2)]
    c = session(ps, "dele2")
    c.cmd_expect("DELE 1", "+OK Message 1 deleted")
    c.cmd_expect("DELE 2", "+OK Message 2 deleted")
    c.sock.close()
    # the lock is released when the server sees the close: log in again
    deadline = time.monotonic() + 5
    while True:
        c = POP3Raw(ps.pop3_port)
        r = c.login(u, pw("dele2"))
        if r == "+OK Logged in" or time.monotonic() > deadline:
            break
        assert r == IN_USE, r
        c.close()
        time.sleep(0.1)
    try:
        assert r == "+OK Logged in", r
        assert c.uidl() == [(1, U(msgs[0][1])), (2, U(msgs[1][1]))]
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    finally:
        c.close()
    assert set(maildir_uniques(ps, u)) == {m[1] for m in msgs}


def test_dele_rset_quit_removes_nothing(ps):
    u = addr("dele3")
    msgs = [deliver(ps, u) for _ in range(2)]
    with session(ps, "dele3") as c:
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("DELE 2", "+OK Message 2 deleted")
        assert c.stat() == (0, 0)
        c.cmd_expect("LIST", "+OK")
        assert c.multi() == []
        c.cmd_expect("RSET", "+OK")
        assert c.stat() == (2, sum(len(m[0]) for m in msgs))
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    assert set(maildir_uniques(ps, u)) == {m[1] for m in msgs}


def test_dele_all_then_quit_empties_maildir_and_index(ps):
    u = addr("dele4")
    for _ in range(3):
        deliver(ps, u)
    with session(ps, "dele4") as c:
        for n in (1, 2, 3):
            c.cmd_expect("DELE %d" % n, "+OK Message %d deleted" % n)
        c.cmd_expect("QUIT", "+OK Logging out, 3 messages deleted")
    assert maildir_uniques(ps, u) == {}
    with session(ps, "dele4") as c:
        c.cmd_expect("STAT", "+OK 0 0")
        c.cmd_expect("UIDL", "+OK")
        assert c.multi() == []
        c.cmd_expect("RETR 1", "-ERR No such message")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_shutdown_during_session_removes_nothing(make_server):
    s = make_pop3_server(make_server, users={"shut@example.test": "pw-shut"})
    u = "shut@example.test"
    msgs = [deliver(s, u) for _ in range(2)]
    c = POP3Raw(s.pop3_port)
    c.login_ok(u, "pw-shut")
    c.cmd_expect("DELE 1", "+OK Message 1 deleted")
    rc = s.stop()
    assert rc == 0, rc
    rest = c.read_until_close()
    c.close()
    for line in rest.split(b"\r\n"):
        assert line == b"" or line.startswith(b"-ERR "), rest
    assert set(maildir_uniques(s, u)) == {m[1] for m in msgs}


# ---------------------------------------------------------------- locking and snapshot


def test_second_session_in_use(ps):
    u = addr("inuse")
    d, uq = deliver(ps, u)
    first = session(ps, "inuse")
    try:
        with POP3Raw(ps.pop3_port) as c2:
            c2.cmd_expect("USER " + u, "+OK Send your password")
            c2.cmd_expect("PASS " + pw("inuse"), IN_USE)
            # still in AUTHORIZATION: SASL login is refused the same way
            c2.cmd_expect("AUTH PLAIN " + b64("\0%s\0%s" % (u, pw("inuse"))), IN_USE)
            c2.cmd_expect("STAT", "-ERR Command not valid in this state")
            # the first session is unaffected
            assert first.uidl() == [(1, U(uq))]
            first.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
            first.read_until_close()
            # same connection, after the first QUIT: it works now
            c2.login_ok(u, pw("inuse"))
            assert c2.uidl() == [(1, U(uq))]
            c2.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    finally:
        first.close()


def test_in_use_across_listeners_and_other_user_free(ps):
    u = addr("inuse2")
    deliver(ps, u)
    with session(ps, "inuse2", implicit=True):
        with POP3Raw(ps.pop3_port) as c2:
            c2.cmd_expect("USER " + u, "+OK Send your password")
            c2.cmd_expect("PASS " + pw("inuse2"), IN_USE)
        # another mailbox is not locked
        with session(ps, "single") as c3:
            c3.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_delivery_during_session_not_in_snapshot(ps):
    u = addr("conc")
    old = [deliver(ps, u) for _ in range(2)]
    with session(ps, "conc") as c:
        size = sum(len(m[0]) for m in old)
        assert c.stat() == (2, size)
        new = [deliver(ps, u) for _ in range(2)]   # while the mailbox is locked
        assert c.stat() == (2, size)
        assert c.list() == [(1, len(old[0][0])), (2, len(old[1][0]))]
        assert c.uidl() == [(1, U(old[0][1])), (2, U(old[1][1]))]
        c.cmd_expect("RETR 3", "-ERR No such message")
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("QUIT", "+OK Logging out, 1 message deleted")
    with session(ps, "conc") as c:
        assert c.uidl() == [(1, U(old[1][1])), (2, U(new[0][1])), (3, U(new[1][1]))]
        assert c.retr(3)[0] == new[1][0]
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_single_number_forms(ps):
    u = addr("single")
    d, uq = deliver(ps, u)
    with session(ps, "single") as c:
        c.cmd_expect("LIST 1", "+OK 1 %d" % len(d))
        c.cmd_expect("UIDL 1", "+OK 1 %s" % U(uq))
        c.cmd_expect("LIST 2", "-ERR No such message")
        c.cmd_expect("UIDL 2", "-ERR No such message")
        c.cmd_expect("NOOP", "+OK")
        c.cmd_expect("RSET", "+OK")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


# ---------------------------------------------------------------- crash during delivery


class _Sender(threading.Thread):
    def __init__(self, idx, server, rcpt, stop):
        super().__init__(daemon=True)
        self.idx, self.server, self.rcpt, self.stop = idx, server, rcpt, stop
        self.acked, self.errors, self.seq = [], [], 0

    def run(self):
        while not self.stop.is_set():
            try:
                c = SMTPRaw(self.server.port, timeout=10)
            except Exception:
                time.sleep(0.05)
                continue
            try:
                c.hello()
                for _ in range(3):
                    self.seq += 1
                    tok = "K%d-%d" % (self.idx, self.seq)
                    c.cmd_expect("MAIL FROM:<k@remote.test>", 250)
                    c.cmd_expect("RCPT TO:<%s>" % self.rcpt, 250)
                    c.cmd_expect("DATA", 354)
                    c.send(("Subject: crash %s\r\n\r\n%s\r\n" % (tok, "z" * 200)).encode()
                           + b".\r\n")
                    r = c.reply()
                    if r.code == 250:
                        self.acked.append(tok)
                    elif r.code // 100 != 4:
                        self.errors.append("end of data %r" % r)
            except AssertionError as e:
                if "connection closed" not in str(e):
                    self.errors.append(str(e)[:500])
            except Exception:
                pass
            finally:
                c.close()


class _Reader(threading.Thread):
    """Logs in, lists, quits, again and again: the index is in use while
    the server is killed. Protocol errors are recorded, resets are not."""

    def __init__(self, server, user, password, stop):
        super().__init__(daemon=True)
        self.server, self.user, self.password, self.stop = server, user, password, stop
        self.errors, self.sessions = [], 0

    def run(self):
        while not self.stop.is_set():
            try:
                c = POP3Raw(self.server.pop3_port, timeout=10)
            except Exception:
                time.sleep(0.05)
                continue
            try:
                r = c.login(self.user, self.password)
                if r != "+OK Logged in":
                    if r != IN_USE and not r.startswith("-ERR [SYS/TEMP]"):
                        self.errors.append("login: %r" % r)
                    continue
                n, _ = c.stat()
                ids = c.uidl()
                if len(ids) != n or len({u for _, u in ids}) != n or \
                        [i for i, _ in ids] != list(range(1, n + 1)):
                    self.errors.append("bad UIDL listing %r for STAT %d" % (ids[:5], n))
                c.cmd("QUIT")
                self.sessions += 1
            except (ConnectionClosed, OSError):
                pass
            except AssertionError as e:
                if "connection closed" not in str(e):
                    self.errors.append(str(e)[:500])
            finally:
                c.close()
            time.sleep(0.02)


def test_crash_during_delivery_every_acked_message_listed_once(make_server):
    u, upw = "crash@example.test", "pw-crash"
    s = make_pop3_server(make_server, users={u: upw})
    rng = random.Random(4)
    stop = threading.Event()
    senders = [_Sender(i, s, u, stop) for i in range(4)]
    reader = _Reader(s, u, upw, stop)
    for t in senders + [reader]:
        t.start()
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.6, 1.2))
            s.kill()
            time.sleep(rng.uniform(0.0, 0.2))
            s.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in senders + [reader]:
            t.join(20)
    acked = [t for snd in senders for t in snd.acked]
    errors = [e for snd in senders for e in snd.errors] + reader.errors
    assert len(acked) >= 10, "too few messages accepted: %d %s" % (len(acked), errors[:3])
    s.kill()
    s.start()
    s.wait_queue_empty(timeout=40)
    files = {U(k): v for k, v in maildir_uniques(s, u).items()}
    with POP3Raw(s.pop3_port, timeout=30) as c:
        c.login_ok(u, upw)
        n, size = c.stat()
        ids = c.uidl()
        listed = [uq for _, uq in ids]
        assert len(listed) == len(set(listed)) == n, "a message listed twice: %r" % listed
        assert set(listed) == set(files), (
            "UIDL differs from the Maildir: only listed %s, only in files %s"
            % (set(listed) - set(files), set(files) - set(listed)))
        assert size == sum(len(d) for d in files.values())
        seen = {}
        for i, uq in ids:
            data, _ = c.retr(i)
            assert data == files[uq], "RETR %d differs from file %s" % (i, uq)
            m = re.search(rb"Subject: crash (K\d+-\d+)\r\n", data)
            assert m, data[:300]
            seen[m.group(1).decode()] = seen.get(m.group(1).decode(), 0) + 1
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    lost = [t for t in acked if t not in seen]
    assert not lost, "%d acknowledged messages not listed: %s" % (len(lost), lost[:10])
    dups = {t: k for t, k in seen.items() if k > 1}
    print("crash/pop3: %d acknowledged, %d listed, %d duplicated deliveries (allowed), "
          "%d reader sessions" % (len(acked), n, len(dups), reader.sessions))
    assert not errors, errors[:5]


# ---------------------------------------------------------------- STLS, CAPA, USER


def test_stls_injection_discarded(ps):
    u = addr("auth")
    with POP3Raw(ps.pop3_port, context=client_context(ps.pki["ca"])) as c:
        c.send(b"STLS\r\nUSER %s\r\n" % u.encode())
        c.expect("+OK Begin TLS negotiation")
        c.wrap()
        # had USER been kept, this PASS would log in
        c.cmd_expect("PASS " + pw("auth"), "-ERR Send USER first")
        c.login_ok(u, pw("auth"))
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    # a pipelined CAPA and NOOP get no reply either
    with POP3Raw(ps.pop3_port, context=client_context(ps.pki["ca"])) as c:
        c.send(b"STLS\r\nCAPA\r\nNOOP\r\n")
        c.expect("+OK Begin TLS negotiation")
        c.wrap()
        c.cmd_expect("QUIT", "+OK Bye")


def test_capa_plaintext_network(ps):
    with POP3Raw(ps.pop3_port, context=client_context(ps.pki["ca"])) as c:
        assert c.greeting == GREETING
        lines = c.capa()
        assert lines[0] == "TOP" and lines[-1] == "IMPLEMENTATION estafeta", lines
        assert capa_set(lines) == capa_expected(True, ALL_MECHS, True), lines
        c.stls()
        assert capa_set(c.capa()) == capa_expected(True, ALL_MECHS, False)
        c.cmd_expect("STLS", "-ERR TLS already active")
        c.login_ok(addr("capa"), pw("capa"))
        assert capa_set(c.capa()) == capa_expected(False, None, False)
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(ps.pop3s_port, implicit=True, context=client_context(ps.pki["ca"])) as c:
        assert c.greeting == GREETING
        assert capa_set(c.capa()) == capa_expected(True, ALL_MECHS, False)
        c.cmd_expect("STLS", "-ERR TLS already active")


def test_capa_and_user_without_tls(strict):
    with POP3Raw(strict.pop3_port, context=client_context(strict.pki["ca"])) as c:
        # plaintext, not from a plaintext network: no USER, no PLAIN/LOGIN
        assert capa_set(c.capa()) == capa_expected(False, {"SCRAM-SHA-256"}, True)
        c.cmd_expect("USER " + CAROL, PLAIN_REFUSED)
        c.cmd_expect("PASS " + CAROL_PW, "-ERR Send USER first")
        c.cmd_expect("AUTH PLAIN " + b64("\0%s\0%s" % (CAROL, CAROL_PW)), PLAIN_REFUSED)
        c.cmd_expect("AUTH LOGIN", PLAIN_REFUSED)
        c.send(b"AUTH\r\n")
        assert c.line() == "+OK"
        assert c.multi() == [b"SCRAM-SHA-256"]
        c.stls()
        assert capa_set(c.capa()) == capa_expected(True, ALL_MECHS, False)
        c.login_ok(CAROL, CAROL_PW)
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    # SCRAM does not send the password: allowed without TLS
    with POP3Raw(strict.pop3_port) as c:
        r, info = c.auth_scram(DAVE, DAVE_PW)
        assert r == "+OK Logged in", (r, c.dump())
        assert info["server_signature"] is True, info
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(strict.pop3s_port, implicit=True,
                 context=client_context(strict.pki["ca"])) as c:
        assert capa_set(c.capa()) == capa_expected(True, ALL_MECHS, False)
        c.login_ok(CAROL, CAROL_PW)
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_poplib_stls_then_login_strict(strict):
    ctx = client_context(strict.pki["ca"])
    p = poplib.POP3("127.0.0.1", strict.pop3_port, timeout=10)
    try:
        with pytest.raises(poplib.error_proto) as e:
            p.user(CAROL)
        assert str(e.value) == "b'%s'" % PLAIN_REFUSED, e.value
        p.stls(context=ctx)
        p.user(CAROL)
        assert p.pass_(CAROL_PW) == b"+OK Logged in"
        p.quit()
    finally:
        p.close()


# ---------------------------------------------------------------- AUTH


def test_auth_plain_login_scram(ps):
    u, upw = addr("auth"), pw("auth")
    with POP3Raw(ps.pop3_port) as c:
        assert c.auth_plain(u, upw) == "+OK Logged in", c.dump()
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(ps.pop3_port) as c:
        assert c.auth_plain(u, upw, initial=False) == "+OK Logged in", c.dump()
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(ps.pop3_port) as c:
        assert c.auth_plain(u, upw, authzid=u) == "+OK Logged in", c.dump()
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(ps.pop3_port) as c:
        assert c.auth_login(u, upw) == "+OK Logged in", c.dump()
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    for initial in (True, False):
        with POP3Raw(ps.pop3s_port, implicit=True) as c:
            r, info = c.auth_scram(u, upw, initial=initial)
            assert r == "+OK Logged in", c.dump()
            assert info["server_signature"] is True, info
            c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(ps.pop3_port) as c:
        c.cmd_expect("auth plain " + b64("\0%s\0%s" % (u, upw)), "+OK Logged in")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_auth_failures_and_cancel(ps):
    u, upw = addr("auth"), pw("auth")
    with POP3Raw(ps.pop3_port) as c:
        c.send(b"AUTH\r\n")
        assert c.line() == "+OK"
        assert set(x.decode() for x in c.multi()) == ALL_MECHS
        assert c.auth_plain(u, "wrong") == AUTH_FAILED
        assert c.auth_plain("nosuch@example.test", "wrong") == AUTH_FAILED
        assert c.auth_plain(u, upw, authzid=DAVE) == AUTH_FAILED
        assert c.auth_login(u, "wrong") == AUTH_FAILED
        r, _ = c.auth_scram(u, "wrong")
        assert r == AUTH_FAILED, c.dump()
        r, _ = c.auth_scram(u, upw, tamper_proof=True)
        assert r == AUTH_FAILED, c.dump()
        r, _ = c.auth_scram("nosuch@example.test", "x")
        assert r == AUTH_FAILED, c.dump()
        # cancel at every step
        c.cmd_expect("AUTH PLAIN", "+ ")
        c.cmd_expect("*", "-ERR Authentication cancelled")
        assert c.cmd("AUTH LOGIN").startswith("+ ")
        c.cmd_expect("*", "-ERR Authentication cancelled")
        assert c.cmd("AUTH LOGIN").startswith("+ ")
        assert c.cmd(b64(u)).startswith("+ ")
        c.cmd_expect("*", "-ERR Authentication cancelled")
        assert c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=%s,r=abcdefghijkl" % u)).startswith("+ ")
        c.cmd_expect("*", "-ERR Authentication cancelled")
        # bad base64
        c.cmd_expect("AUTH PLAIN", "+ ")
        c.cmd_expect("!!!notbase64", "-ERR Cannot decode response")
        c.cmd_expect("AUTH PLAIN =AAA", "-ERR Cannot decode response")
        assert c.cmd("AUTH LOGIN").startswith("+ ")
        c.cmd_expect("a b c", "-ERR Cannot decode response")
        # the session still works
        assert c.auth_plain(u, upw) == "+OK Logged in"
        c.cmd_expect("AUTH PLAIN", "-ERR Command not valid in this state")
        c.cmd_expect("USER " + u, "-ERR Command not valid in this state")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    # (a new session: more than 5 errors would close the connection)
    with POP3Raw(ps.pop3_port) as c:
        c.cmd_expect("AUTH CRAM-MD5", "-ERR Unsupported authentication mechanism")
        c.cmd_expect("AUTH DIGEST-MD5", "-ERR Unsupported authentication mechanism")
        c.cmd_expect("AUTH XYZZY", "-ERR Unsupported authentication mechanism")
        assert c.auth_plain(u, upw) == "+OK Logged in"
        c.cmd_expect("AUTH PLAIN", "-ERR Command not valid in this state")
        c.cmd_expect("USER " + u, "-ERR Command not valid in this state")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_user_pass_replies(ps):
    u, upw = addr("auth"), pw("auth")
    with POP3Raw(ps.pop3_port) as c:
        c.cmd_expect("PASS " + upw, "-ERR Send USER first")
        c.cmd_expect("USER " + u, "+OK Send your password")
        c.cmd_expect("PASS wrong", AUTH_FAILED)
        # the USER is forgotten after a failed PASS
        c.cmd_expect("PASS " + upw, "-ERR Send USER first")
        c.cmd_expect("USER nosuch@example.test", "+OK Send your password")
        c.cmd_expect("PASS " + upw, AUTH_FAILED)
        c.cmd_expect("APOP %s c4c9334bac560ecc979e58001b3e22fb" % u, "-ERR APOP not supported")
        c.cmd_expect("UTF8", "+OK UTF8 enabled")
        c.cmd_expect("STAT", "-ERR Command not valid in this state")
        c.cmd_expect("USER " + u.upper(), "+OK Send your password")
        c.cmd_expect("PASS " + upw, "+OK Logged in")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(ps.pop3_port) as c:
        c.cmd_expect("QUIT", "+OK Bye")
        assert c.read_until_close() == b""
    # a password with spaces and a colon is the rest of the line
    with POP3Raw(ps.pop3_port) as c:
        c.login_ok(DAVE, DAVE_PW)
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_auth_delay(make_server):
    s = make_pop3_server(make_server, auth_delay=2)
    with POP3Raw(s.pop3_port) as c:
        t0 = time.monotonic()
        assert c.login(CAROL, "wrong") == AUTH_FAILED
        took_wrong = time.monotonic() - t0
        t0 = time.monotonic()
        assert c.login("nosuch@example.test", "wrong") == AUTH_FAILED
        took_unknown = time.monotonic() - t0
        t0 = time.monotonic()
        assert c.auth_plain(CAROL, "wrong") == AUTH_FAILED
        took_sasl = time.monotonic() - t0
        # meanwhile others are served at once
        res = {}

        def slow():
            with POP3Raw(s.pop3_port) as c2:
                t = time.monotonic()
                res["r"] = c2.login(DAVE, "wrong-again")
                res["t"] = time.monotonic() - t
        th = threading.Thread(target=slow)
        th.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        with POP3Raw(s.pop3_port) as c3:
            c3.capa()
        other = time.monotonic() - t0
        th.join(15)
        t0 = time.monotonic()
        c.login_ok(CAROL, CAROL_PW)
        took_ok = time.monotonic() - t0
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    assert took_wrong >= 2.0, "wrong password answered after %.2fs" % took_wrong
    assert took_unknown >= 2.0, "unknown user answered after %.2fs" % took_unknown
    assert took_sasl >= 2.0, "AUTH PLAIN failure answered after %.2fs" % took_sasl
    assert took_ok < 2.0, "successful login delayed %.2fs" % took_ok
    assert other < 1.0, "another client waited %.2fs during a delayed failure" % other
    assert res.get("r") == AUTH_FAILED and res["t"] >= 2.0, res


def test_lockout_shared_with_smtp_auth(make_server):
    sub = free_port()
    s = make_pop3_server(make_server, extra=(
        "listen 127.0.0.1:%d submission\n"
        "limit auth-failures 3\nlimit auth-lockout 60\n" % sub))

    def smtp_auth(source, password):
        with SMTPTLS(sub, source=source) as c:
            c.hello()
            return c.auth_plain(CAROL, password)

    # 127.0.0.1: two SMTP failures and one POP3 failure lock POP3 and SMTP
    check(smtp_auth("127.0.0.1", "wrong"), 535)
    check(smtp_auth("127.0.0.1", "wrong"), 535)
    with POP3Raw(s.pop3_port) as c:
        assert c.login(CAROL, "wrong") == AUTH_FAILED
        assert c.login(CAROL, CAROL_PW) == LOCKED, c.dump()
        c.cmd_expect("AUTH PLAIN " + b64("\0%s\0%s" % (DAVE, DAVE_PW)), LOCKED)
        r, _ = c.auth_scram(DAVE, DAVE_PW)
        assert r == LOCKED, c.dump()
    check(smtp_auth("127.0.0.1", CAROL_PW), 454)
    # 127.0.0.2: three POP3 failures lock SMTP AUTH too
    for _ in range(3):
        with POP3Raw(s.pop3_port, source="127.0.0.2") as c:
            assert c.login(DAVE, "wrong") == AUTH_FAILED
    check(smtp_auth("127.0.0.2", CAROL_PW), 454)
    with POP3Raw(s.pop3_port, source="127.0.0.2") as c:
        assert c.login(DAVE, DAVE_PW) == LOCKED
    # 127.0.0.3 is not locked
    with POP3Raw(s.pop3_port, source="127.0.0.3") as c:
        c.login_ok(DAVE, DAVE_PW)
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    check(smtp_auth("127.0.0.3", CAROL_PW), 235)


# ---------------------------------------------------------------- errors and hostile input


def test_errors_close_after_bad_commands(ps):
    # BASE_CONFIG: limit smtp-bad-commands 5
    with POP3Raw(ps.pop3_port) as c:
        for i in range(5):
            r = c.cmd("XYZZY%d" % i)
            assert r.startswith("-ERR "), r
        assert c.capa()[0] == "TOP"     # still open after 5 errors
        c.send(b"BOGUS\r\n")
        rest = c.line()
        assert rest.startswith("-ERR "), rest
        tail = c.read_until_close()
        for line in tail.split(b"\r\n"):
            assert line == b"" or line.startswith(b"-ERR "), tail


def test_line_too_long_and_bad_characters(ps):
    with POP3Raw(ps.pop3_port) as c:
        # 255 octets with CRLF is allowed (RFC 2449 4), 256 is not
        r = c.cmd("USER " + "a" * 248)
        assert r != "-ERR Line too long", r
        c.cmd_expect("USER " + "a" * 249, "-ERR Line too long")
        c.cmd_expect("NOOP " + "x" * 100000, "-ERR Line too long")
        c.send(b"NO\rOP\r\n")
        c.expect("-ERR Bad character in command")
        c.send(b"CAPA\0\r\n")
        c.expect("-ERR Bad character in command")
        assert c.capa()[0] == "TOP"


def test_errors_in_transaction(ps):
    bad = ["RETR", "RETR 1 2", "RETR x", "RETR -1", "RETR 0", "RETR 4294967296",
           "DELE", "TOP 1", "TOP 1 x", "LIST 1 2", "UIDL a", "STLS", "PASS x",
           "APOP a b", "UTF8 x", "XTND", "LAST", "USER x", "AUTH PLAIN"]
    # at most 5 errors per session (smtp-bad-commands 5), so none is closed
    for k in range(0, len(bad), 4):
        with session(ps, "errs") as c:
            for line in bad[k:k + 4]:
                r = c.cmd(line)
                assert r.startswith("-ERR "), (line, r, c.dump())
            c.cmd_expect("NOOP", "+OK")
            c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


@pytest.mark.parametrize("lines", [
    [b"", b" ", b"\t", b"USER", b"USER  x", b"PASS", b"AUTH PLAIN " + b"A" * 240],
    [b"\xff\xfe\xfd", b"USER \xc3", b"USER \xc3\xa9@example.test", b"CAPA x", b"QUIT x"],
    [b"LIST", b"UIDL", b"RETR 1", b"TOP 1 1", b"DELE 1", b"RSET", b"STAT"],
    [b"AUTH PLAIN AGFAYg==", b"AUTH LOGIN =", b"AUTH SCRAM-SHA-256 " + b64("x").encode(),
     b"AUTH SCRAM-SHA-256 " + b64("n,,n=,r=").encode(), b"AUTH PLAIN " + b"=" * 8],
    [b"STLS x", b"%s%n%x", b"A" * 254, b"USER " + b"\x01"],
], ids=["empty", "eightbit", "transaction-only", "sasl", "misc"])
def test_hostile_input_only_ok_or_err(ps, lines):
    with POP3Raw(ps.pop3_port) as c:
        for line in lines:
            try:
                c.send(line + b"\r\n")
                r = c.line()
            except ConnectionClosed:
                break
            while r.startswith("+ "):       # a SASL continuation: cancel it
                r = c.cmd("*")
            assert r.startswith("+OK") or r.startswith("-ERR "), (line, r, c.dump())
            if r == "+OK" and line in (b"AUTH",):
                c.multi()
    # the server is alive and well
    with POP3Raw(ps.pop3_port) as c:
        assert c.greeting == GREETING
        c.cmd_expect("QUIT", "+OK Bye")


# ---------------------------------------------------------------- more edges


def test_pipelined_commands(ps):
    """PIPELINING (RFC 2449 6.6): a batch of commands in one write gets its
    replies in order."""
    u = addr("pipe")
    msgs = [deliver(ps, u) for _ in range(2)]
    with POP3Raw(ps.pop3_port) as c:
        c.send(("USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nRETR 1\r\nUIDL 2\r\n"
                "TOP 2 0\r\nDELE 1\r\nRETR 2\r\nNOOP\r\nQUIT\r\n"
                % (u, pw("pipe"))).encode())
        c.expect("+OK Send your password")
        c.expect("+OK Logged in")
        c.expect("+OK 2 %d" % sum(len(m[0]) for m in msgs))
        c.expect("+OK")
        assert c.multi() == [b"1 %d" % len(msgs[0][0]), b"2 %d" % len(msgs[1][0])]
        c.expect("+OK %d octets" % len(msgs[0][0]))
        assert b"".join(x + b"\r\n" for x in c.multi()) == msgs[0][0]
        c.expect("+OK 2 %s" % U(msgs[1][1]))
        c.expect("+OK Top of message follows")
        c.multi()
        c.expect("+OK Message 1 deleted")
        c.expect("+OK %d octets" % len(msgs[1][0]))
        assert b"".join(x + b"\r\n" for x in c.multi()) == msgs[1][0]
        c.expect("+OK")
        c.expect("+OK Logging out, 1 message deleted")
        assert c.read_until_close() == b""
    assert set(maildir_uniques(ps, u)) == {msgs[1][1]}


def test_top_message_without_body(ps):
    u = addr("top2")
    d, _ = deliver(ps, u, tok="Subject: nobody", body=b"Subject: nobody\r\nX-A: b\r\n")
    assert b"\r\n\r\n" not in d
    with session(ps, "top2") as c:
        for n in (0, 1, 10):
            r, lines = c.cmd_multi("TOP 1 %d" % n)
            got = b"".join(x + b"\r\n" for x in lines)
            # the header (an empty line after it is tolerated)
            assert got in (d, d + b"\r\n"), (n, got)
        assert c.retr(1)[0] == d
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_drop_during_retr_releases_lock(ps):
    u = addr("drop")
    line = b"." + b"x" * 70 + b"\r\n"
    d, uq = deliver(ps, u, tok="Subject: drop",
                    body=b"Subject: drop\r\n\r\n" + line * 12000)
    d2, uq2 = deliver(ps, u)
    c = session(ps, "drop")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    c.cmd_expect("DELE 2", "+OK Message 2 deleted")
    c.send(b"RETR 1\r\n")
    time.sleep(0.2)
    c.sock.recv(1000)
    c.sock.close()      # in the middle of the reply, with a DELE mark
    deadline = time.monotonic() + 5
    while True:
        with POP3Raw(ps.pop3_port) as c2:
            r = c2.login(u, pw("drop"))
            if r == "+OK Logged in":
                assert c2.uidl() == [(1, U(uq)), (2, U(uq2))]
                assert c2.retr(1)[0] == d
                c2.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
                break
        assert r == IN_USE and time.monotonic() < deadline, r
        time.sleep(0.1)
    assert set(maildir_uniques(ps, u)) == {uq, uq2}


def test_kill_during_session_removes_nothing(make_server):
    u = "killed@example.test"
    s = make_pop3_server(make_server, users={u: "pw-killed"})
    msgs = [deliver(s, u) for _ in range(2)]
    c = POP3Raw(s.pop3_port)
    c.login_ok(u, "pw-killed")
    c.cmd_expect("DELE 1", "+OK Message 1 deleted")
    c.cmd_expect("DELE 2", "+OK Message 2 deleted")
    s.kill()
    c.close()
    s.start()
    with POP3Raw(s.pop3_port) as c:
        c.login_ok(u, "pw-killed")       # the lock died with the process
        assert c.uidl() == [(1, U(msgs[0][1])), (2, U(msgs[1][1]))]
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    assert set(maildir_uniques(s, u)) == {m[1] for m in msgs}


def test_sigterm_while_client_stalls_in_retr(make_server):
    """SIGTERM must end the server in bounded time even when a POP3 client
    stopped reading in the middle of a RETR (as test_review_io checks for
    SMTP): finish_server fails the test if it takes more than 15 s."""
    u = "stall@example.test"
    s = make_pop3_server(_big_factory(make_server), users={u: "pw-stall"},
                         extra="limit timeout-close 2\n")
    # 16 MB: more than the socket buffers hold, so the server is still
    # streaming when SIGTERM comes
    line = b"." + b"s" * 70 + b"\r\n"
    d, uq = deliver(s, u, tok="Subject: stall",
                    body=b"Subject: stall\r\n\r\n" + line * (16000000 // 73))
    c = POP3Raw(s.pop3_port)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.login_ok(u, "pw-stall")
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("RSET", "+OK")
        c.send(b"RETR 1\r\n")
        c.sock.recv(100)
        time.sleep(0.5)
        assert "pop3.disconnect" not in s.log().split("pop3.login")[-1]
        t0 = time.monotonic()
        rc = s.stop(timeout=15)
        took = time.monotonic() - t0
    finally:
        c.close()
    print("SIGTERM with a stalled RETR: exit after %.1f s" % took)
    assert rc == 0, "server exit status %r after SIGTERM" % rc
    assert took < 15, "SIGTERM took %.1f s with a stalled POP3 client" % took
    assert set(maildir_uniques(s, u)) == {uq}


def test_sasl_continuation_too_long(ps):
    with POP3Raw(ps.pop3_port) as c:
        c.cmd_expect("AUTH PLAIN", "+ ")
        c.cmd_expect("A" * 20000, "-ERR Line too long")
        # the exchange is over: a command is a command again
        assert c.capa()[0] == "TOP"
        c.cmd_expect("AUTH PLAIN", "+ ")
        r = c.cmd("A" * 12288)
        assert r.startswith("-ERR "), r
        assert c.capa()[0] == "TOP"


def test_pop3_config_ranges(tmp_path):
    """timeout-pop3 is at least 10 minutes (RFC 1939 3); the listener roles
    pop3 and pop3s exist."""
    from helpers import estafeta_bin, make_config
    require_binary()
    (tmp_path / "data").mkdir()
    cases = [("limit timeout-pop3 599", 1), ("limit timeout-pop3 600", 0),
             ("limit timeout-pop3 10m", 0), ("limit timeout-pop3 86400", 0),
             ("limit timeout-pop3 86401", 1),
             ("listen 127.0.0.1:2110 pop3", 0), ("listen 127.0.0.1:2995 pop3s", 0),
             ("listen 127.0.0.1:2110 pop4", 1)]
    wrong = []
    for line, want in cases:
        cfg = tmp_path / "t.conf"
        cfg.write_text(make_config(tmp_path / "data", 2525, extra=line + "\n"))
        p = subprocess.run([str(estafeta_bin()), "check-config", "-c", str(cfg)],
                           capture_output=True, text=True, timeout=30)
        if p.returncode != want:
            wrong.append("%s: exit %d, want %d %s" % (line, p.returncode, want, p.stderr.strip()))
    assert not wrong, "\n".join(wrong)


def test_auth_mechanisms_setting_limits_sasl(make_server):
    """auth-mechanisms applies to POP3: only the configured mechanisms are
    offered in CAPA and AUTH, the others are refused."""
    s = make_pop3_server(make_server, extra="auth-mechanisms SCRAM-SHA-256 PLAIN\n")
    with POP3Raw(s.pop3_port) as c:
        caps = capa_set(c.capa())
        assert ("SASL", frozenset({"PLAIN", "SCRAM-SHA-256"})) in caps, caps
        c.cmd_expect("AUTH LOGIN", "-ERR Unsupported authentication mechanism")
        assert c.auth_plain(CAROL, CAROL_PW) == "+OK Logged in"
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_client_gone_during_login_or_delay(make_server):
    """A client that closes while its password is being checked (worker)
    or while its failure is delayed: no crash, and the mailbox is not left
    locked."""
    s = make_pop3_server(make_server, auth_delay=2)
    for password in (CAROL_PW, "wrong"):
        c = POP3Raw(s.pop3_port)
        c.send("USER %s\r\nPASS %s\r\n" % (CAROL, password))
        c.expect("+OK Send your password")
        c.close()
    time.sleep(0.5)
    with POP3Raw(s.pop3_port) as c:
        c.login_ok(CAROL, CAROL_PW)
        # the delayed failure of a pipelined batch comes before QUIT's reply
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    with POP3Raw(s.pop3_port) as c:
        t0 = time.monotonic()
        c.send("USER %s\r\nPASS wrong\r\nQUIT\r\n" % CAROL)
        c.expect("+OK Send your password")
        c.expect(AUTH_FAILED)
        c.expect("+OK Bye")
        assert time.monotonic() - t0 >= 2.0
    time.sleep(2.5)     # let the first delay timer fire after its client left


def test_sigterm_during_delayed_auth_failure(make_server):
    """SIGTERM while a failed login waits out auth-delay: the server must
    still exit promptly (the session must not outlive the delay and wait
    for the 10-minute POP3 timeout)."""
    s = make_pop3_server(make_server, auth_delay=3)
    c = POP3Raw(s.pop3_port)
    try:
        c.send("USER %s\r\nPASS wrong\r\n" % CAROL)
        c.expect("+OK Send your password")
        time.sleep(0.5)          # the password check is done, the delay runs
        t0 = time.monotonic()
        rc = s.stop(timeout=15)
        took = time.monotonic() - t0
        rest = c.read_until_close(timeout=1) if rc is not None else b""
    finally:
        c.close()
    assert rc == 0, "server did not exit within 15 s of SIGTERM (rc %r)" % rc
    assert took < 10, "SIGTERM took %.1f s" % took
    for line in rest.split(b"\r\n"):
        assert line == b"" or line.startswith(b"-ERR "), rest
