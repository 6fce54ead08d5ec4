"""250 means on disk (security.md section 1, doc/queue.md, doc/store.md).

- crash: concurrent clients while the server is SIGKILLed several times;
  every acknowledged message must end up complete in its Maildir.
- recovery: leftovers in queue/incoming/ are removed, a corrupt committed
  file is set aside in queue/corrupt/, the good ones are delivered.
"""

import random
import re
import socket
import threading
import time

import pytest

from helpers import SMTPRaw, check, give_to_server, qid_of, split_stored, token

MAILBOXES = ("demo@example.test", "alice@example.test", "bob@example.test")
RCPT_CHOICES = [
    (["demo@example.test"], ["demo@example.test"]),
    (["alice@example.test", "bob@example.test"], ["alice@example.test", "bob@example.test"]),
    (["team@example.test"], ["alice@example.test", "bob@example.test"]),
    (["demo+x@example.test", "bob@example.test"], ["demo@example.test", "bob@example.test"]),
]


def body_for(tok):
    """Deterministic message for a token "C<thread>-<seq>-<lines>"."""
    n = int(tok.rsplit("-", 1)[1])
    head = ("Subject: crash %s\r\nMessage-ID: <%s@crash.test>\r\n\r\n" % (tok, tok)).encode()
    lines = b"".join(b"%s line %05d %s\r\n" % (tok.encode(), i, b"=" * (i % 60))
                     for i in range(n))
    return head + lines + b"END " + tok.encode() + b"\r\n"


TOKEN_RE = re.compile(rb"Subject: crash (C\d+-\d+-\d+)\r\n")


class Client(threading.Thread):
    def __init__(self, idx, port, stop):
        super().__init__(daemon=True)
        self.idx, self.port, self.stop = idx, port, stop
        self.acked = []        # (token, qid, mailboxes)
        self.errors = []       # protocol errors that are not connection failures
        self.seq = 0
        self.rng = random.Random(idx)

    def run(self):
        while not self.stop.is_set():
            try:
                c = SMTPRaw(self.port, timeout=15)
            except (OSError, Exception):
                time.sleep(0.05)
                continue
            try:
                if c.greeting.code != 220:
                    continue
                c.hello("crash%d.client.test" % self.idx)
                for _ in range(self.rng.randint(1, 4)):
                    if self.stop.is_set():
                        break
                    self.one(c)
                c.cmd("QUIT")
            except (OSError, Exception) as e:  # killed server: reset / closed
                if isinstance(e, AssertionError):
                    self.errors.append(str(e)[:2000])
            finally:
                c.close()

    def one(self, c):
        self.seq += 1
        tok = "C%d-%d-%d" % (self.idx, self.seq, self.rng.randint(20, 400))
        rcpts, boxes = self.rng.choice(RCPT_CHOICES)
        c.cmd_expect("MAIL FROM:<crash%d@remote.test>" % self.idx, 250, "2.1.0")
        for r in rcpts:
            c.cmd_expect("RCPT TO:<%s>" % r, 250, "2.1.5")
        c.cmd_expect("DATA", 354)
        c.send(body_for(tok) + b".\r\n")
        r = c.reply()
        if r.code == 250:
            self.acked.append((tok, qid_of(r.text), boxes))
        elif r.code // 100 != 4:
            self.errors.append("unexpected end-of-data reply %r for %s" % (r, tok))


def test_crash_kill9(make_server):
    s = make_server()
    rng = random.Random(1234)
    stop = threading.Event()
    clients = [Client(i, s.port, stop) for i in range(8)]
    for cl in clients:
        cl.start()
    kills = 0
    try:
        for _ in range(4):
            time.sleep(rng.uniform(0.8, 2.5))
            s.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            s.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for cl in clients:
            cl.join(20)
    assert kills == 4
    acked = [a for cl in clients for a in cl.acked]
    errors = [e for cl in clients for e in cl.errors]
    assert len(acked) >= 20, "too few messages accepted (%d): %s\n%s" % (
        len(acked), errors[:3], s.log_tail())
    print("crash test: %d messages acknowledged, %d kills" % (len(acked), kills))
    # a final crash, then a clean restart and delivery of everything queued
    s.kill()
    s.start()
    s.wait_queue_empty(timeout=40)

    found = {}          # (token, mailbox) -> count
    problems = []
    for box in MAILBOXES:
        for path, data in s.messages(box):
            if not data.startswith(b"Return-Path: <crash"):
                continue
            m = TOKEN_RE.search(data)
            if not m:
                problems.append("unrecognisable (truncated?) message %s: %r" % (path, data[:200]))
                continue
            tok = m.group(1).decode()
            try:
                rp, _, rest = split_stored(data)
            except (AssertionError, ValueError) as e:
                problems.append("bad layout %s: %s" % (path, e))
                continue
            if rest != body_for(tok):
                problems.append("truncated or altered message %s (%d of %d octets)"
                                % (path, len(rest), len(body_for(tok))))
            if not re.search(r",S=(\d+)", path.name) or \
                    int(re.search(r",S=(\d+)", path.name).group(1)) != len(data):
                problems.append("S= size wrong in %s (%d octets)" % (path.name, len(data)))
            found[(tok, box)] = found.get((tok, box), 0) + 1
    lost = [(tok, qid, box) for tok, qid, boxes in acked for box in boxes
            if (tok, box) not in found]
    assert not problems, "\n".join(problems[:20])
    assert not lost, "%d acknowledged deliveries lost, e.g. %s\n%s" % (
        len(lost), lost[:10], s.log_tail(150))
    assert not errors, "protocol errors during the run: %s" % errors[:5]
    assert s.queue_files("msg") == []
    assert s.queue_files("corrupt") == [], "crashes produced corrupt queue files: %s" % (
        s.queue_files("corrupt"))


def send_one(port, rcpt, tok):
    with SMTPRaw(port) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<sender@remote.test>", 250, "2.1.0")
        c.cmd_expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
        r = c.send_data(b"Subject: " + tok.encode() + b"\r\n\r\nrecovery test\r\n")
        check(r, 250, "2.0.0", None, c)
        return qid_of(r.text)


def test_recovery_incoming_and_corrupt(make_server):
    s = make_server()
    # Block delivery to bob (a file where his Maildir should be): the
    # messages stay committed in queue/msg/ (temporary failure, retried later).
    block = s.data_dir / "mail" / "example.test" / "bob"
    block.parent.mkdir(parents=True, exist_ok=True)
    give_to_server(block.parent)
    block.write_bytes(b"not a directory\n")
    toks = [token() for _ in range(3)]
    qids = [send_one(s.port, "bob@example.test", t) for t in toks]
    msgdir = s.queue_dir() / "msg"
    for q in qids:
        assert s.queued(q), "%s not queued after 250: %s %s\n%s" % (
            q, sorted(p.name for p in msgdir.iterdir()), s.log_records(), s.log_tail())
    # After the failed pass each is a queue file of its own (out of the
    # accept log), which the damage below is done to.
    time.sleep(0.5)
    rc = s.stop()
    assert rc == 0, s.log_tail()
    for q in qids:
        assert (msgdir / q).is_file(), "message %s gone although undelivered\n%s" % (
            q, s.log_tail())

    good, flipped, truncated = qids
    # a flipped byte inside the envelope (covered by its CRC)
    p = msgdir / flipped
    data = bytearray(p.read_bytes())
    assert data.startswith(b"ESTAFETA-QUEUE1\n"), data[:32]
    data[len(data) - 48 - 12] ^= 0x20
    p.write_bytes(bytes(data))
    # a committed file cut short (lost its footer)
    p = msgdir / truncated
    data = p.read_bytes()
    p.write_bytes(data[:len(data) // 2])
    # a half-written message left in incoming/ by a crash
    incoming = s.queue_dir() / "incoming"
    leftover = incoming / "0ZZZZZZZZZZabcdefghijkl"
    leftover.write_bytes(b"ESTAFETA-QUEUE1\nSubject: half written\r\n\r\npart")

    block.unlink()
    start = len(s.log())
    s.start()
    [stored] = s.wait_messages("bob@example.test", toks[0])
    assert split_stored(stored)[2] == (b"Subject: " + toks[0].encode()
                                       + b"\r\n\r\nrecovery test\r\n")
    s.wait_queue_empty()
    assert not leftover.exists()
    corrupt = s.queue_dir() / "corrupt"
    names = sorted(p.name for p in corrupt.iterdir()) if corrupt.is_dir() else []
    assert flipped in names and truncated in names, (names, s.log_tail())
    assert good not in names
    # the set-aside files are kept byte for byte for the admin
    assert (corrupt / truncated).read_bytes() == data[:len(data) // 2]
    for t in toks[1:]:
        s.assert_not_delivered(t)
    log = s.log()[start:]
    assert "queue.set_aside" in log, s.log_tail()
    assert "queue.recover.incomplete" in log, s.log_tail()


@pytest.mark.parametrize("spool", ["log", "files"])
def test_restart_delivers_queued(make_server, spool):
    """A message committed but not yet delivered when the server is killed is
    delivered after the restart: from the accept log (recovery makes it a
    queue file) or from its own file."""
    s = make_server(extra="limit queue-log-message 0\n" if spool == "files" else "")
    block = s.data_dir / "mail" / "example.test" / "alice"
    block.parent.mkdir(parents=True, exist_ok=True)
    give_to_server(block.parent)
    block.write_bytes(b"x")
    tok = token()
    qid = send_one(s.port, "alice@example.test", tok)
    s.kill()
    assert s.queued(qid)
    block.unlink()
    s.start()
    s.wait_messages("alice@example.test", tok)
    s.wait_queue_empty()
    assert len([m for _, m in s.messages("alice@example.test") if tok.encode() in m]) == 1


def test_port_reusable_after_kill(make_server):
    """Restarting right after SIGKILL with clients connected works (SO_REUSEADDR)."""
    s = make_server()
    conns = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(3)]
    s.kill()
    s.start()
    for c in conns:
        c.close()
    with SMTPRaw(s.port) as c:
        c.hello()
