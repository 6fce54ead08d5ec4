"""Connection limits and timeouts (doc/smtp.md)."""

import time

from helpers import HOSTNAME, SMTPRaw, check, token


def test_connections_per_client(make_server):
    s = make_server(extra="limit connections-per-client 3\n")
    held = [SMTPRaw(s.port) for _ in range(3)]
    try:
        for c in held:
            assert c.greeting.code == 220, c.dump()
        extra = SMTPRaw(s.port)
        check(extra.greeting, 421, "4.7.0", "Too many connections", extra)
        assert extra.greeting.text == "4.7.0 %s Too many connections, try again later" % HOSTNAME
        extra.expect_closed()
        extra.close()
        # the held sessions still work
        for c in held:
            c.cmd_expect("NOOP", 250, "2.0.0")
        # a slot frees when a session ends
        held[0].cmd_expect("QUIT", 221, "2.0.0")
        held[0].expect_closed()
        held[0].close()
        deadline = time.monotonic() + 5
        while True:
            c = SMTPRaw(s.port)
            if c.greeting.code == 220 or time.monotonic() > deadline:
                break
            c.close()
            time.sleep(0.1)
        assert c.greeting.code == 220, c.dump()
        held[0] = c
    finally:
        for c in held:
            c.close()


def test_idle_timeouts(make_server):
    """timeout-command / timeout-data (minimum 10 s): 421 4.4.2, then close;
    a message cut off by the timeout is not delivered."""
    s = make_server(extra="limit timeout-command 10\nlimit timeout-data 10\n")
    tok = token()
    idle = SMTPRaw(s.port)
    idle.hello()
    data = SMTPRaw(s.port)
    data.hello()
    data.start_mail("sender@remote.test")
    data.cmd_expect("DATA", 354)
    data.send(b"Subject: " + tok.encode() + b"\r\n\r\npartial\r\n")
    t0 = time.monotonic()
    for c in (idle, data):
        c.sock.settimeout(25)
        r = c.reply()
        check(r, 421, "4.4.2", "Timeout", c)
        assert r.text == "4.4.2 %s Timeout, closing connection" % HOSTNAME, r
        c.expect_closed()
        c.close()
    assert time.monotonic() - t0 >= 8, "timed out too early"
    s.assert_not_delivered(tok)


def _thread_nices(pid):
    """{thread name: [nice, ...]} of a running process (/proc/PID/task),
    and the nice of its main thread."""
    import os
    out, main = {}, None
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            stat = f.read()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        nice = int(fields[16])  # field 19: nice
        out.setdefault(name, []).append(nice)
        if int(tid) == pid:
            main = nice
    return out, main


def _settled_nices(pid, offset, count, timeout=5.0):
    """_thread_nices once the `count` "deliver" threads sit `offset` below
    the main thread (they name themselves and lower their priority as they
    start, maybe after the server says it is ready), or at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        nices, main = _thread_nices(pid)
        want = [min(main + offset, 19)] * count
        if sorted(nices.get("deliver", [])) == want or time.monotonic() > deadline:
            return nices, main


def test_delivery_nice(make_server):
    """The delivery threads run `delivery-nice` (default 10) below the
    server's own nice value, every other thread at it (whatever nice the
    test suite itself runs at), and mail is still delivered."""
    s = make_server()
    nices, main = _settled_nices(s.proc.pid, 10, 16)
    assert nices.get("deliver") == [min(main + 10, 19)] * 16, (main, nices)
    for name in ("commit", "auth", "quota", "pop3", "relay"):
        assert nices.get(name) == [main], (name, main, nices)  # doc/architecture.md
    others = [n for name, ns in nices.items() if name != "deliver" for n in ns]
    assert set(others) == {main}, (main, nices)
    tok = token()
    c = SMTPRaw(s.port)
    c.hello()
    c.start_mail("sender@remote.test", ["alice@example.test"])
    check(c.send_data(b"Subject: " + tok.encode() + b"\r\n\r\nbody\r\n"),
          250, "2.0.0", None, c)
    c.close()
    assert len(s.wait_messages("alice@example.test", tok)) == 1

    s2 = make_server(extra="limit delivery-nice 0\nlimit delivery-threads 3\n")
    nices, main = _settled_nices(s2.proc.pid, 0, 3)
    assert nices.get("deliver") == [main] * 3, (main, nices)


def _burst(server, boxes, per_session, sessions):
    """sessions concurrent connections, each sending per_session messages
    (round robin over boxes); returns {box: [token, ...]} of the 250s."""
    import threading
    sent, errors, lock = {b: [] for b in boxes}, [], threading.Lock()

    def client(n):
        try:
            c = SMTPRaw(server.port)
            c.hello()
            for k in range(per_session):
                box, tok = boxes[(n + k) % len(boxes)], token()
                c.start_mail("s%d@remote.test" % n, [box])
                check(c.send_data(("Subject: %s\r\n\r\nbody %s\r\n" % (tok, tok)).encode()),
                      250, "2.0.0", None, c)
                with lock:
                    sent[box].append(tok)
            c.close()
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append("client %d: %r" % (n, e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sent


def test_delivery_batch(make_server):
    """A burst into two mailboxes lands whole and exactly once with
    batches (the default, 32: one syncfs per batch, doc/store.md "Batched
    delivery") and with `limit delivery-batch 1` (an fsync per message),
    and no delivery is retried on the way."""
    boxes = ["alice@example.test", "bob@example.test"]
    for extra in ("", "limit delivery-batch 1\n"):
        s = make_server(extra=extra)
        sent = _burst(s, boxes, 10, 4)
        s.wait_queue_empty(timeout=30)
        for box in boxes:
            got = [m for _, m in s.messages(box)]
            assert len(got) == len(sent[box]), (extra, box, len(got), len(sent[box]))
            for tok in sent[box]:
                hits = [m for m in got if tok.encode() in m]
                assert len(hits) == 1, (extra, box, tok, len(hits))
                assert hits[0].endswith(("body %s\r\n" % tok).encode()), hits[0][-80:]
        assert "deliver.tempfail" not in s.log(), (extra, s.log_tail())
