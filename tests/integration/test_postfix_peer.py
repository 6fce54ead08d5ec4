"""Postfix from Debian as a real next hop (issue 5): mail that carol submits
to estafeta for example.net goes, by the MX record our DNS server gives,
to a private Postfix instance (postfix.py) on 127.0.0.2, over STARTTLS with
the certificate verified (relay-tls verify against the test CA), and lands
in Postfix's Maildir byte-exact apart from the header fields each server
prepends. Everything stays on loopback; every wait is bounded.

The Postfix certificate is made for mx.example.net (postfix.make_host_cert,
signed by the test CA of helpers.make_pki), and the MX record names
mx.example.net: estafeta checks the certificate against the MX host name.
(make_pki's mail certificate names mail.example.test, which is estafeta's
own hostname, so an MX with that name would be a mail loop.)

Postfix stores Maildir files with LF line ends: what was sent is compared
after CRLF -> LF (postfix.normalize).
"""

import re
import smtplib
import time

import pytest

import postfix as pfmod
from dnsserver import DNSServer
from helpers import (Server, add_user, finish_server, free_port, require_binary,
                     run_estafeta, token, wait_for_log)
from postfix import Postfix, make_host_cert, normalize, split_headers
from test_outbound import PASSWORD, SENDER, mx_zone, status_part, wait_dsn

MX_HOST = "mx.example.net"
MX_ADDR = "127.0.0.2"
DOMAIN = "example.net"
BOXES = ["someone@example.net", "r1@example.net", "r2@example.net", "r3@example.net"]

# Fields Postfix prepends on delivery (virtual(8) and smtpd/cleanup) and the
# one estafeta prepends on submission.
ADDED_BY_POSTFIX = ("return-path", "x-original-to", "delivered-to", "received")

pytestmark = pytest.mark.skipif(not pfmod.available(),
                                reason="Postfix not installed or not running as root")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mx_cert(pki, tmp_path_factory):
    return make_host_cert(pki, MX_HOST, tmp_path_factory.mktemp("mxcert"))


@pytest.fixture
def dns():
    d = DNSServer(mx_zone(DOMAIN, MX_HOST, MX_ADDR))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def pf(tmp_path, mx_cert):
    """A running Postfix for example.net on 127.0.0.2 with STARTTLS; always
    stopped at teardown (even when the test stopped and restarted it)."""
    p = Postfix(tmp_path / "postfix", addr=MX_ADDR, hostname=MX_HOST,
                domains=(DOMAIN,), mailboxes=BOXES, tls=mx_cert)
    try:
        p.start()
        yield p
    finally:
        p.stop()
        assert not p.running(), "postfix master still running after stop"


def peer_server(tmp_path, dns_port, pf, pki, relay_retry=1, extra=""):
    """estafeta relaying to pf: MX hosts on pf's port, relay-tls verify with
    the test CA, a submission listener and user carol (as
    test_outbound.relay_server), message-size raised to 4M for the 1 MiB
    body. relay_retry: relay-retry-min in seconds (max: twice that)."""
    require_binary()
    conf = (f"dns-resolver 127.0.0.1@{dns_port}\n"
            f"mx-port {pf.port}\n"
            "relay-tls verify\n"
            f"relay-tls-ca {pki['ca']}\n"
            f"limit relay-retry-min {relay_retry}\nlimit relay-retry-max {2 * relay_retry}\n"
            "limit retry-min 1\nlimit retry-max 2\nlimit relay-idle 1\n" + extra)
    sub = free_port()
    conf += (f"listen 127.0.0.1:{sub} submission\nusers-file users\n"
             "auth-plaintext-networks 127.0.0.0/8\n")
    s = Server(tmp_path / "estafeta", extra=conf)
    text = s.config_path.read_text()
    assert "limit message-size 1M\n" in text
    s.config_path.write_text(text.replace("limit message-size 1M\n",
                                          "limit message-size 4M\n"))
    s.sub_port = sub
    add_user(s, SENDER, PASSWORD)
    s.start()
    return s


@pytest.fixture
def est_factory(tmp_path, dns, pf, pki):
    """est_factory(relay_retry=1, extra="", dns_port=None): estafeta relaying
    to pf (see peer_server), at most one per test. At teardown the test
    fails on a sanitizer report or an unclean exit."""
    made = []

    def factory(relay_retry=1, extra="", dns_port=None):
        assert not made
        s = peer_server(tmp_path, dns_port or dns.port, pf, pki, relay_retry, extra)
        made.append(s)
        return s

    yield factory
    for s in made:
        problems = finish_server(s)
        if problems:
            pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))


@pytest.fixture
def est(est_factory):
    """estafeta relaying to pf with fast retries (relay-retry-min 1 s)."""
    return est_factory()


# ---------------------------------------------------------------- helpers


def submit(server, rcpts, body, extra_headers="", eight_bit=False):
    """carol submits a message (headers + body, CRLF); returns (token, the
    bytes as sent, i.e. before any server added anything)."""
    tok = token()
    head = (f"From: <{SENDER}>\r\nTo: <{rcpts[0]}>\r\nSubject: {tok}\r\n"
            f"Message-ID: <{tok}@example.test>\r\nDate: Sun, 22 Nov 2026 00:00:00 +0000\r\n"
            f"{extra_headers}").encode()
    if isinstance(body, str):
        body = body.encode()
    msg = head + b"\r\n" + body
    with smtplib.SMTP("127.0.0.1", server.sub_port, timeout=30) as c:
        c.ehlo("client.example.test")
        c.login(SENDER, PASSWORD)
        c.sendmail(SENDER, rcpts, msg,
                   mail_options=["BODY=8BITMIME"] if eight_bit else [])
    return tok, msg


def field_names(header_block):
    """Names (lower case) of the fields of an LF header block, in order."""
    return [line.split(b":", 1)[0].decode().lower()
            for line in header_block.split(b"\n")
            if line and line[:1] not in (b" ", b"\t")]


def assert_arrived_exact(stored, sent):
    """stored (Postfix Maildir, LF) = fields the servers prepended + sent
    (CRLF -> LF) exactly; returns the prepended fields (bytes)."""
    want = normalize(sent)
    assert stored.endswith(want), (
        "stored message does not end with what was sent\nsent   %r\nstored %r"
        % (want[:600], stored[:1200]))
    added = stored[:len(stored) - len(want)]
    names = field_names(added)
    assert names, "no header added at all: %r" % stored[:400]
    assert set(names) <= set(ADDED_BY_POSTFIX), (
        "unexpected added fields %s in\n%s" % (names, added.decode(errors="replace")))
    # estafeta's own Received (from carol's submission) is there too
    assert names.count("received") >= 2, added
    # body and original header block, separately, as the issue states
    s_head, s_body = split_headers(stored)
    o_head, o_body = split_headers(want)
    assert s_body == o_body
    assert s_head.endswith(o_head)
    return added


def unfolded_fields(added):
    text = added.decode("utf-8", errors="replace")
    return re.sub(r"\n[ \t]+", " ", text).splitlines()


# ---------------------------------------------------------------- tests


def test_relay_to_postfix_byte_exact_over_verified_starttls(est, pf, dns):
    """A message carol submits for someone@example.net goes to Postfix (MX
    by DNS, mx-port) over STARTTLS with the certificate verified, and is
    stored byte-exact below the added header fields."""
    body = ("Hello Postfix,\r\n\r\nthis goes through estafeta.\r\n"
            "  indented line\r\n\ttab line\r\nlast line\r\n")
    tok, sent = submit(est, ["someone@example.net"], body)
    stored, = pf.wait_messages("someone@example.net", 1, token=tok)
    added = assert_arrived_exact(stored, sent)
    fields = unfolded_fields(added)
    assert fields[0] == "Return-Path: <%s>" % SENDER, fields
    assert "Delivered-To: someone@example.net" in fields
    # Postfix's Received: from estafeta (its EHLO name), with TLS
    pf_received = [f for f in fields if f.startswith("Received: from ")][0]
    assert pf_received.startswith("Received: from mail.example.test (unknown [127.0.0.1])"), \
        pf_received
    assert "by %s (Postfix) with ESMTPS id" % MX_HOST in pf_received, pf_received
    assert "(using TLSv1." in pf_received, pf_received
    assert "for <someone@example.net>" in pf_received, pf_received
    # estafeta's Received from the submission below it
    assert any("by mail.example.test" in f for f in fields[1:]), fields
    # Postfix's log: TLS, the client, the delivery
    pf.wait_log(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: TLSv1\.[23]")
    pf.wait_log(r"to=<someone@example\.net>, relay=virtual, .*status=sent \(delivered to maildir\)")
    # estafeta's log: the certificate was verified, the recipient is done
    wait_for_log(est, r"event=relay\.tls .*host=%s .*verified=yes" % re.escape(MX_HOST))
    wait_for_log(est, r"relay\.sent")
    est.wait_queue_empty(timeout=20)
    assert est.messages(SENDER) == [], "no DSN expected"
    assert dns.queries_for(DOMAIN)


def test_certificate_name_mismatch_is_not_delivered(est_factory, pf):
    """relay-tls verify is real: the same Postfix under an MX name its
    certificate does not carry gets nothing; the message is deferred."""
    d = DNSServer(mx_zone(DOMAIN, "wrong.example.net", MX_ADDR))
    d.start()
    try:
        s = est_factory(dns_port=d.port)
        submit(s, ["someone@example.net"], "must not arrive\r\n")
        wait_for_log(s, r"relay\.deferred", timeout=30)
        wait_for_log(s, r"event=relay\.tls .*host=wrong\.example\.net .*verified=no")
        assert s.queue_files("msg"), "message must stay queued"
        assert pf.maildir_messages("someone@example.net") == []
        assert not any(b"multipart/report" in m for _, m in s.messages(SENDER))
        # Postfix saw the TLS handshake, but never a MAIL FROM
        assert "Anonymous TLS connection established" in pf.log()
        assert "client=unknown[127.0.0.1]" not in pf.log()
    finally:
        d.stop()


def test_dots_8bit_and_one_mib_body_byte_exact(est, pf):
    """Lines starting with '.', an 8-bit UTF-8 body sent with BODY=8BITMIME,
    and a 1 MiB body: stored byte-exact."""
    target = 1024 * 1024
    lines = []
    total = 0
    i = 0
    while total + 1000 < target:
        kind = i % 7
        if kind == 0:
            line = ".leading dot %d\r\n" % i
        elif kind == 1:
            line = "..two dots %d\r\n" % i
        elif kind == 2:
            line = ".\r\n" if i % 14 == 2 else ". dot space\r\n"
        elif kind == 3:
            line = "Grüße aus Łódź – ½ € ✓ 日本語 %d\r\n" % i
        elif kind == 4:
            line = "x" * 900 + "\r\n"
        elif kind == 5:
            line = "\r\n"
        else:
            line = "From line that mbox would mangle %d\r\n" % i
        b = line.encode()
        lines.append(b)
        total += len(b)
        i += 1
    lines.append(b"." + b"z" * (target - total - 3) + b"\r\n")
    body = b"".join(lines)
    assert len(body) == target
    hdr = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    tok, sent = submit(est, ["someone@example.net"], body, extra_headers=hdr,
                       eight_bit=True)
    stored, = pf.wait_messages("someone@example.net", 1, token=tok, timeout=60)
    assert_arrived_exact(stored, sent)
    assert len(split_headers(stored)[1]) == len(normalize(body))
    est.wait_queue_empty(timeout=30)
    # a short 8-bit one with a dot-only line near the end, too
    small = ".\r\n..\r\nÄ\r\n.\r\n".encode()
    tok2, sent2 = submit(est, ["someone@example.net"], small, extra_headers=hdr,
                         eight_bit=True)
    stored2, = pf.wait_messages("someone@example.net", 1, token=tok2)
    assert_arrived_exact(stored2, sent2)
    est.wait_queue_empty(timeout=20)


def test_several_messages_several_recipients_each_once(est, pf):
    """Messages to overlapping sets of recipients: every recipient gets each
    of its messages exactly once."""
    plan = [
        ["r1@example.net"],
        ["r1@example.net", "r2@example.net"],
        ["r2@example.net", "r3@example.net", "r1@example.net"],
        ["r3@example.net"],
        ["r1@example.net", "r3@example.net"],
        ["r2@example.net"],
    ]
    sent = []
    for i, rcpts in enumerate(plan):
        tok, msg = submit(est, rcpts, "message %d\r\n.dot %d\r\n" % (i, i))
        sent.append((tok, msg, rcpts))
    expect = {a: [] for a in ("r1@example.net", "r2@example.net", "r3@example.net")}
    for tok, msg, rcpts in sent:
        for r in rcpts:
            expect[r].append((tok, msg))
    for addr, msgs in expect.items():
        pf.wait_messages(addr, len(msgs), timeout=30)
    est.wait_queue_empty(timeout=30)
    deadline = time.monotonic() + 20
    while pf.queue_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pf.queue_files() == [], pf.log_tail()
    time.sleep(1.0)          # a duplicate would have had time to arrive
    for addr, msgs in expect.items():
        stored = pf.maildir_messages(addr)
        assert len(stored) == len(msgs), (addr, len(stored), len(msgs), pf.log_tail())
        for tok, msg in msgs:
            hits = [m for m in stored if tok.encode() in m]
            assert len(hits) == 1, "%s: %d copies of %s" % (addr, len(hits), tok)
            assert_arrived_exact(hits[0], msg)
    total = sum(len(v) for v in expect.values())
    assert len(re.findall(r"relay=virtual, .*status=sent", pf.log())) == total
    assert est.messages(SENDER) == [], "no DSN expected"


def test_unknown_recipient_bounces_with_postfix_reply(est, pf):
    """Postfix refuses an unknown recipient (550 5.1.1): carol gets a DSN
    whose Diagnostic-Code carries Postfix's reply; the known recipient of
    the same message is delivered."""
    tok, sent = submit(est, ["nosuchuser@example.net", "someone@example.net"],
                       "one good, one bad\r\n")
    stored, = pf.wait_messages("someone@example.net", 1, token=tok)
    assert_arrived_exact(stored, sent)
    dsn = wait_dsn(est, SENDER, timeout=30)
    st = status_part(dsn)
    assert "Final-Recipient: rfc822; nosuchuser@example.net" in st, st
    assert "Action: failed" in st, st
    assert "Status: 5.1.1" in st, st
    diag = re.search(r"Diagnostic-Code: smtp;\s*(.*(?:\n[ \t].*)*)", st)
    assert diag, st
    diag_text = re.sub(r"\s+", " ", diag.group(1))
    assert "550" in diag_text and "5.1.1" in diag_text, diag_text
    assert "User unknown in virtual mailbox table" in diag_text, diag_text
    assert "Remote-MTA: dns; %s" % MX_HOST in st, st
    assert "someone@example.net" not in st, st
    pf.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 550 5\.1\.1 "
                r"<nosuchuser@example\.net>")
    est.wait_queue_empty(timeout=20)


def test_postfix_down_defers_then_flush_delivers(est_factory, pf):
    """Postfix stopped: the message stays queued (deferred, no DSN). Postfix
    started again and `estafeta queue flush --all`: delivered. The relay
    retry interval is 10 minutes, so only the flush can bring it."""
    est = est_factory(relay_retry=600)
    pf.stop()
    assert not pf.running()
    mark = len(est.log())
    tok, sent = submit(est, ["someone@example.net"], "while you were out\r\n")
    wait_for_log(est, r"relay\.deferred", timeout=30, start=mark)
    assert est.queue_files("msg"), "message must stay queued"
    assert not any(b"multipart/report" in m for _, m in est.messages(SENDER))
    pf.start()
    time.sleep(1.0)
    assert pf.maildir_messages("someone@example.net") == [], \
        "delivered before the flush: the retry interval was not honoured"
    p = run_estafeta(est, "queue", "flush", "--all")
    assert p.returncode == 0, p.stdout + p.stderr
    stored, = pf.wait_messages("someone@example.net", 1, token=tok, timeout=30)
    assert_arrived_exact(stored, sent)
    est.wait_queue_empty(timeout=20)
    assert not any(b"multipart/report" in m for _, m in est.messages(SENDER))


def test_fixture_accept_only_and_catch_all(tmp_path):
    """The fixture's benchmark modes (issue 6), without estafeta: a catch-all
    mailbox takes any address of the domain; accept-only (deliver=False)
    accepts and discards; other domains are refused, nothing goes out."""
    with Postfix(tmp_path / "deliver", addr="127.0.0.3",
                 catch_all={DOMAIN: "all"}, process_limit=200,
                 connection_limit=0) as p:
        with smtplib.SMTP(p.addr, p.port, timeout=30) as c:
            c.ehlo("bench.example.test")
            assert not c.has_extn("starttls")          # tls=None: no STARTTLS
            assert c.has_extn("smtputf8") and c.has_extn("8bitmime")
            c.sendmail("a@remote.test", ["x@example.net", "y@example.net"],
                       b"Subject: catch\r\n\r\nall\r\n")
            with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
                c.sendmail("a@remote.test", ["z@elsewhere.test"], b"Subject: no\r\n\r\nx\r\n")
            assert e.value.recipients["z@elsewhere.test"][0] == 550
        msgs = p.wait_messages("all@example.net", 2)
        assert all(m.endswith(b"Subject: catch\n\nall\n") for m in msgs)
    assert not p.running()
    with Postfix(tmp_path / "accept", deliver=False, mailboxes=["someone@example.net"],
                 in_flow_delay="0s") as p:
        with smtplib.SMTP(p.addr, p.port, timeout=30) as c:
            for i in range(3):
                c.sendmail("a@remote.test", ["someone@example.net"],
                           b"Subject: %d\r\n\r\nx\r\n" % i)
        deadline = time.monotonic() + 20
        while p.sent_count() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.sent_count() == 3, p.log_tail()
        assert "status=sent (accept-only)" in p.log()
        assert p.maildir_messages("someone@example.net") == []
    assert not p.running()
