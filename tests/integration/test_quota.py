"""Quota seen from outside (doc/store.md "Quota", doc/config.md `quota`):
the "Your mailbox is almost full" warning (once per crossing of 90%, again
only after the usage went below), `estafeta user list` with each user's
usage next to the limits (reading the files only, writing nothing), and
the RCPT-time check, which runs on a worker thread: its answers must
still come in command order when many recipients are pipelined."""

import os
import re
import time

from helpers import (SMTPRaw, check, require_binary, run_estafeta, smtp_send, token)

WARN = b"Subject: Your mailbox is almost full\r\n"


def quota_server(make_server, limits, permanent=False):
    require_binary()
    extra = "quota %s\n" % limits
    if permanent:
        extra += "quota-exceeded permanent\n"
    return make_server(extra=extra)


def body(tok):
    return ("Subject: %s\r\n\r\nbody %s\r\n" % (tok, tok)).encode()


def files(server, addr):
    return server.messages(addr)


def warnings(server, addr):
    return [d for _, d in files(server, addr) if WARN in d]


def send_and_wait(server, addr, count_after):
    """One message to addr over SMTP; waits until the Maildir holds
    count_after files and the queue is empty."""
    smtp_send(server, addr, body(token()))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if len(files(server, addr)) >= count_after and not server.queue_files("msg"):
            break
        time.sleep(0.05)
    server.wait_queue_empty()
    got = len(files(server, addr))
    assert got == count_after, "expected %d files in %s, found %d\n%s" % (
        count_after, addr, got, server.log_tail())


def test_warning_once_per_crossing(make_server):
    s = quota_server(make_server, "0 10")
    u = "alice@example.test"
    for i in range(8):
        send_and_wait(s, u, i + 1)
    assert warnings(s, u) == []
    # The 9th message takes alice to 90% of 10 messages: it and the warning.
    send_and_wait(s, u, 10)
    [w] = warnings(s, u)
    head, _, text = w.partition(b"\r\n\r\n")
    assert head.startswith(b"Return-Path: <>\r\n"), head
    assert b"\r\nFrom: Mail System <postmaster@example.test>\r\n" in head, head
    assert b"\r\nTo: <alice@example.test>\r\n" in head, head
    assert b"\r\nAuto-Submitted: auto-generated\r\n" in head, head
    assert re.search(rb"\r\nDate: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n",
                     head), head
    assert b"Your mailbox alice@example.test is almost full." in text, text
    assert b"9 of 10 messages" in text and b"  Messages: 9 of 10 (90%)" in text, text
    assert b"Trash" in text and b"refused" in text, text
    assert all(b < 0x80 for b in w) and b"\n" not in w.replace(b"\r\n", b""), w
    # Full now (10 files): refused at RCPT (temporary), and no second warning.
    # (The RCPT check remembers a usage for 2 s, counting the recipients it
    # accepts, but not the warning: past that it reads the usage again.)
    time.sleep(2.2)
    with SMTPRaw(s.port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<s@remote.test>", 250)
        r = c.cmd("RCPT TO:<%s>" % u)
        check(r, 452, "4.2.2", "<%s>: Mailbox full, try again later" % u, c)
        c.cmd("QUIT")
    s.wait_queue_empty()
    assert len(warnings(s, u)) == 1
    # The user deletes mail (another tool, here by hand): 5 files left, the
    # warning among them. Past the RCPT cache (2 s), mail is taken again;
    # the first check sees 5 (below 90%) and re-arms the warning.
    plain = sorted(p for p, d in files(s, u) if WARN not in d)
    for p in plain[:5]:
        os.unlink(p)
    time.sleep(2.2)
    send_and_wait(s, u, 6)
    send_and_wait(s, u, 7)
    send_and_wait(s, u, 8)
    assert len(warnings(s, u)) == 1
    # Crossing again (9 of 10): a second warning.
    send_and_wait(s, u, 10)
    assert len(warnings(s, u)) == 2
    state = (s.maildir(u) / "estafeta.quota").read_text()
    assert state.startswith("estafeta-quota 1 sent "), state


def test_warning_by_bytes_and_user_list(make_server):
    s = quota_server(make_server, "20K 0")
    u = "bob@example.test"
    big = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 230   # ~18.4 KiB
    smtp_send(s, u, big)
    deadline = time.monotonic() + 15
    while len(files(s, u)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    s.wait_queue_empty()
    [w] = warnings(s, u)
    assert re.search(rb"  Space:    18(\.\d)? KiB used of 20 KiB \(9\d%\)\r\n", w), w
    # estafeta user list: every user with usage next to the limit, from the
    # files alone: nothing in the Maildirs changes (it may run as root).
    before = sorted((str(p), p.stat().st_mtime_ns) for p in s.data_dir.rglob("*"))
    p = run_estafeta(s, "user", "list")
    assert p.returncode == 0, p.stderr
    after = sorted((str(p), p.stat().st_mtime_ns) for p in s.data_dir.rglob("*"))
    assert before == after
    lines = {l.split()[0]: l for l in p.stdout.splitlines()}
    total = sum(len(d) for _, d in files(s, u))
    assert re.fullmatch(r"bob@example\.test \(config\) +2 messages, (\d+) KiB of 20 KiB "
                        r"\((\d+)%\)", lines["bob@example.test"]), lines
    m = re.search(r"(\d+) KiB of 20 KiB \((\d+)%\)", lines["bob@example.test"])
    assert int(m.group(1)) == round(total / 1024) or abs(int(m.group(1)) - total / 1024) < 1
    assert int(m.group(2)) == total * 100 // (20 * 1024)
    assert re.fullmatch(r"demo@example\.test \(config\) +0 messages, 0 B of 20 KiB \(0%\)",
                        lines["demo@example.test"]), lines


def test_user_list_without_quota(make_server):
    require_binary()
    s = make_server()
    smtp_send(s, "demo@example.test", body(token()))
    s.wait_queue_empty()
    p = run_estafeta(s, "user", "list")
    assert p.returncode == 0, p.stderr
    [line] = [l for l in p.stdout.splitlines() if l.startswith("demo@example.test")]
    assert re.fullmatch(r"demo@example\.test \(config\) +1 message, \d+ B \(no quota\)",
                        line), line


def _pipelined_rcpts(s, full, room):
    """One write: MAIL, RCPTs alternating a full and a not-full mailbox (and
    an unknown user), DATA. The replies must be in command order."""
    cmds = ["MAIL FROM:<s@remote.test>"]
    want = [(250, None)]
    order = [full, room, "nobody@example.test", full, room, full, "demo@example.test"]
    for a in order:
        cmds.append("RCPT TO:<%s>" % a)
        if a == full:
            want.append((None, a))
        elif a == "nobody@example.test":
            want.append((550, None))
        else:
            want.append((250, None))
    cmds.append("DATA")
    want.append((354, None))
    return cmds, want


def _check_pipelined(s, permanent):
    full, room = "bob@example.test", "alice@example.test"
    for i in range(3):      # bob: 3 messages = full (plus the warning)
        smtp_send(s, full, body(token()))
    s.wait_queue_empty()
    assert len(files(s, full)) == 4, files(s, full)
    time.sleep(2.2)         # past the RCPT cache of the last accepted RCPT
    cmds, want = _pipelined_rcpts(s, full, room)
    tok = token()
    with SMTPRaw(s.port) as c:
        c.hello()
        c.send(("\r\n".join(cmds) + "\r\n").encode())
        for code, addr in want:
            r = c.reply()
            if addr is None:
                check(r, code, None, None, c)
            elif permanent:
                check(r, 552, "5.2.2", "<%s>: Mailbox full" % addr, c)
            else:
                check(r, 452, "4.2.2", "<%s>: Mailbox full, try again later" % addr, c)
        c.send(body(tok) + b".\r\n")     # the DATA was in the pipeline
        check(c.reply(), 250, None, None, c)
        c.cmd("QUIT")
    s.wait_queue_empty()
    assert len([d for _, d in files(s, room) if tok.encode() in d]) == 1
    assert len([d for _, d in files(s, "demo@example.test") if tok.encode() in d]) == 1
    assert not [d for _, d in files(s, full) if tok.encode() in d]


def test_rcpt_quota_pipelined_in_order(make_server):
    s = quota_server(make_server, "0 3")
    _check_pipelined(s, permanent=False)


def test_rcpt_quota_pipelined_permanent(make_server):
    s = quota_server(make_server, "0 3", permanent=True)
    _check_pipelined(s, permanent=True)


def test_rcpt_quota_many_sessions_at_once(make_server):
    """Several clients pipelining RCPTs for full and not-full mailboxes at
    once: every session gets its own answers, in its own order."""
    import threading
    s = quota_server(make_server, "0 3")
    full, room = "bob@example.test", "alice@example.test"
    for i in range(3):
        smtp_send(s, full, body(token()))
    s.wait_queue_empty()
    time.sleep(2.2)
    errors = []

    def client(n):
        try:
            with SMTPRaw(s.port) as c:
                c.hello()
                for _ in range(5):
                    cmds = ["MAIL FROM:<s%d@remote.test>" % n]
                    rc = [full if (n + k) % 2 else room for k in range(6)]
                    cmds += ["RCPT TO:<%s>" % a for a in rc] + ["RSET"]
                    c.send(("\r\n".join(cmds) + "\r\n").encode())
                    assert c.reply().code == 250
                    for a in rc:
                        r = c.reply()
                        assert r.code == (452 if a == full else 250), (a, r)
                    assert c.reply().code == 250        # RSET
                c.cmd("QUIT")
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append("client %d: %r" % (n, e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def _usage_total(server, addr):
    """The sum of estafeta.usage's lines (doc/store.md "The usage file")."""
    text = (server.maildir(addr) / "estafeta.usage").read_text()
    lines = text.splitlines()
    assert lines[0] == "estafeta-usage 1", text
    b = m = 0
    for line in lines[1:]:
        x, y = line.split(" ")
        b, m = b + int(x), m + int(y)
    return b, m


def _maildir_usage(server, addr):
    """Bytes and messages of every folder's new/ and cur/, from the disk."""
    root = server.maildir(addr)
    b = m = 0
    for folder in [root] + [p for p in root.iterdir() if p.name.startswith(".")]:
        for sub in ("new", "cur"):
            d = folder / sub
            if d.is_dir():
                for f in d.iterdir():
                    b, m = b + f.stat().st_size, m + 1
    return b, m


def test_usage_file_follows_the_mail(make_server):
    """The running total the quota check reads well below the limits is made
    by the first exact reading and then kept by every delivery: it equals
    what is on disk. Mail deleted by hand is seen at the next check at
    once (the total over-counts, which only sends the check to the disk),
    and mail another program put there by the next exact reading."""
    s = quota_server(make_server, "0 100")
    u = "alice@example.test"
    for i in range(3):
        send_and_wait(s, u, i + 1)
    assert _usage_total(s, u) == _maildir_usage(s, u)
    # Another program adds a message: the total does not know it yet...
    extra = s.maildir(u) / "cur" / "1.other.host:2,S"
    extra.write_bytes(b"Subject: x\r\n\r\nby hand\r\n")
    extra.chmod(0o644)
    before = _usage_total(s, u)
    assert before != _maildir_usage(s, u)
    send_and_wait(s, u, 5)
    # ...so the delivery added its own line to it, and no more.
    b, m = _usage_total(s, u)
    assert m == before[1] + 1
    # The total is replaced by an exact reading when it is stale (here:
    # made to look 16 minutes old); it is then what the disk says.
    old = time.time() - 16 * 60
    os.utime(s.maildir(u) / "estafeta.usage", (old, old))
    send_and_wait(s, u, 6)
    assert _usage_total(s, u) == _maildir_usage(s, u)
