"""Outbound delivery (issue 5): routing by MX through a DNS server the test
runs on loopback, the SMTP client against a scripted sink, retries and
bounces (RFC 3464). Everything stays on 127.0.0.0/8."""
import email
import email.policy
import os
import signal
import smtplib
import time

import pytest

from dnsserver import DNSServer
from helpers import Server, add_user, finish_server, free_port, token, wait_for_log
from smtpsink import Sink


def relay_server(tmp_path, dns_port, extra="", name="estafeta"):
    """A server whose MX hosts listen on mx_port (sinks bind 127.0.0.x on
    that port), with fast retries."""
    conf = (f"dns-resolver 127.0.0.1@{dns_port}\n"
            + ("" if "relay-retry" in extra else
               "limit relay-retry-min 1\nlimit relay-retry-max 2\n") +
            "limit retry-min 1\nlimit retry-max 2\n"
            + ("" if "relay-idle" in extra else "limit relay-idle 1\n") + extra)
    sub = free_port()
    conf += (f"listen 127.0.0.1:{sub} submission\nusers-file users\n"
             "auth-plaintext-networks 127.0.0.0/8\n")
    s = Server(tmp_path / name, extra=conf)
    s.sub_port = sub
    add_user(s, SENDER, PASSWORD)
    s.start()
    return s


SENDER = "carol@example.test"
PASSWORD = "carol-Secret-1"


def submission(server):
    c = smtplib.SMTP("127.0.0.1", server.sub_port, timeout=10)
    c.ehlo("client.example.test")
    c.login(SENDER, PASSWORD)
    return c


@pytest.fixture
def dns():
    d = DNSServer({})
    d.start()
    yield d
    d.stop()


def send(server, sender, rcpts, body, extra_headers=""):
    tok = token()
    msg = (f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {tok}\r\n"
           f"Message-ID: <{tok}@remote.test>\r\nDate: Sun, 22 Nov 2026 00:00:00 +0000\r\n"
           f"{extra_headers}\r\n{body}")
    with submission(server) as c:
        c.sendmail(sender, rcpts, msg.encode())
    return tok, msg.encode()


def mx_zone(domain, host, addr, pref=10):
    return {domain: {"MX": [(pref, host)]}, host: {"A": [addr]}}


def headers_of(data):
    return data.split(b"\r\n\r\n", 1)[0]


def body_of(data):
    return data.split(b"\r\n\r\n", 1)[1]


def wait_dsn(server, address, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        for _, m in server.messages(address):
            if b"multipart/report" in m:
                return email.message_from_bytes(m, policy=email.policy.default)
        time.sleep(0.1)
    raise AssertionError("no DSN for %s\n%s" % (address, server.log_tail()))


def status_part(dsn):
    """The message/delivery-status part, as text (per-message fields, then
    each recipient's group)."""
    for part in dsn.walk():
        if part.get_content_type() in ("message/delivery-status",
                                       "message/global-delivery-status"):
            return "\n".join(str(g) for g in part.get_payload())
    raise AssertionError("no delivery-status part")


def test_mx_delivery_byte_exact(tmp_path, dns):
    """Mail from a local user to another domain goes to that domain's MX
    (looked up in our DNS server) and arrives byte-exact below the
    headers we add; the queue is then empty."""
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        body = "line one\r\n.leading dot\r\n..two dots\r\n\r\nend\r\n"
        tok, sent = send(s, SENDER, ["someone@example.net"], body)
        msgs = sink.wait_messages(1)
        m = msgs[0]
        assert m.mail_from == SENDER
        assert [r[0] for r in m.rcpts] == ["someone@example.net"]
        assert body_of(m.data) == body.encode()
        assert b"Subject: " + tok.encode() in headers_of(m.data)
        # every header the client sent is still there, in order, after ours
        assert m.data.endswith(sent.split(b"\r\n\r\n", 1)[1])
        assert sent.split(b"\r\n\r\n", 1)[0] in m.data
        assert m.helo == "mail.example.test"
        s.wait_queue_empty(timeout=20)
        assert dns.queries_for("example.net")
    finally:
        finish_server(s)
        sink.stop()


def test_recipients_grouped_and_per_recipient_outcome(tmp_path, dns):
    """Two recipients in one transaction; one refused 550 gets a bounce
    with the remote reply, the other is delivered; one connection."""
    sink = Sink({"rcpt": {"bad@example.net": "550 5.1.1 <bad@example.net>: no such user"}}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        tok, _ = send(s, SENDER, ["good@example.net", "bad@example.net"], "hi\r\n")
        sink.wait_messages(1)
        assert [r[0] for r in sink.messages[0].rcpts] == ["good@example.net"]
        dsn = wait_dsn(s, SENDER)
        assert dsn["From"].addresses[0].addr_spec.startswith("MAILER-DAEMON@")
        assert dsn.get_content_type() == "multipart/report"
        assert dsn.get_param("report-type") == "delivery-status"
        text = dsn.as_string()
        assert "Final-Recipient: rfc822; bad@example.net" in text
        assert "Action: failed" in text
        assert "Status: 5.1.1" in text
        assert "no such user" in text
        assert "good@example.net" not in status_part(dsn)
        s.wait_queue_empty(timeout=20)
        assert sink.connections == 1
    finally:
        finish_server(s)
        sink.stop()


def test_temporary_failure_retried_then_delivered(tmp_path, dns):
    """451 at RCPT: the message stays queued and is sent on a later try."""
    sink = Sink({"rcpt": "451 4.7.1 greylisted, try later"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["grey@example.net"], "hello\r\n")
        wait_for_log(s, r"relay\.deferred", timeout=20)
        assert sink.messages == []
        sink.script["rcpt"] = "250 2.1.5 ok now"
        sink.wait_messages(1, timeout=30)
        s.wait_queue_empty(timeout=20)
        assert s.messages(SENDER) == []   # no bounce
    finally:
        finish_server(s)
        sink.stop()


def test_nxdomain_bounces_and_null_mx_bounces(tmp_path, dns):
    dns.set_zone({"nullmx.test": {"MX": [(0, ".")]}})
    s = relay_server(tmp_path, dns.port)
    try:
        send(s, SENDER, ["x@nowhere.test"], "a\r\n")
        dsn = wait_dsn(s, SENDER)
        assert "Status: 5.1.2" in dsn.as_string()
        send(s, SENDER, ["y@nullmx.test"], "b\r\n")
        end = time.time() + 20
        while time.time() < end:
            texts = [m for _, m in s.messages(SENDER) if b"5.1.10" in m]
            if texts:
                break
            time.sleep(0.1)
        assert texts, s.log_tail()
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)


def test_servfail_defers(tmp_path, dns):
    dns.set_zone({"broken.test": "SERVFAIL"})
    s = relay_server(tmp_path, dns.port)
    try:
        send(s, SENDER, ["x@broken.test"], "a\r\n")
        wait_for_log(s, r"relay\.deferred.*4\.4\.3", timeout=30)
        assert not any(b"multipart/report" in m for _, m in s.messages(SENDER))
        assert s.queue_files("msg")
    finally:
        finish_server(s)


def test_mx_preference_and_fallback(tmp_path, dns):
    """The best MX refuses connections: the next one gets the mail."""
    sink = Sink(host="127.0.0.3").start()
    # nothing listens on 127.0.0.2 at that port: the best MX refuses
    dns.set_zone({"example.net": {"MX": [(10, "mx1.example.net"), (20, "mx2.example.net")]},
                  "mx1.example.net": {"A": ["127.0.0.2"]},
                  "mx2.example.net": {"A": ["127.0.0.3"]}})
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["z@example.net"], "fallback\r\n")
        sink.wait_messages(1)
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


def test_route_smarthost(tmp_path, dns):
    """A configured route wins over DNS (no MX query is made)."""
    sink = Sink().start()
    s = relay_server(tmp_path, dns.port, f"route * [127.0.0.1]:{sink.port}\n")
    try:
        send(s, SENDER, ["a@far.test", "b@other.test"], "via smarthost\r\n")
        sink.wait_messages(1)
        got = sorted(r[0] for m in sink.messages for r in m.rcpts)
        if len(got) < 2:
            sink.wait_messages(2)
            got = sorted(r[0] for m in sink.messages for r in m.rcpts)
        assert got == ["a@far.test", "b@other.test"]
        assert dns.queries_for("far.test") == []
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


@pytest.mark.parametrize("stage,script", [
    ("greeting", {"greeting": "554 5.7.1 go away"}),
    ("mail", {"mail": "451 4.3.0 try later"}),
    ("data", {"data": "451 4.3.0 no"}),
    ("dot", {"dot": "452 4.3.1 full"}),
    ("drop", {"drop_after_dot": True}),
    ("421", {"mail": "421 4.3.2 shutting down"}),
])
def test_temporary_failures_at_each_stage_keep_the_message(tmp_path, dns, stage, script):
    sink = Sink(script).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["t@example.net"], "x\r\n")
        wait_for_log(s, r"relay\.deferred", timeout=30)
        assert s.queue_files("msg"), "message must stay queued"
        assert not any(b"multipart/report" in m for _, m in s.messages(SENDER))
        # the peer recovers: delivered once
        sink.script = {}
        sink.wait_messages(1, timeout=30)
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


@pytest.mark.parametrize("stage,script,status", [
    ("mail", {"mail": "550 5.7.1 sender refused"}, "5.7.1"),
    ("data", {"data": "554 5.6.0 no data"}, "5.6.0"),
    ("dot", {"dot": "552 5.3.4 too big"}, "5.3.4"),
])
def test_permanent_failures_bounce(tmp_path, dns, stage, script, status):
    sink = Sink(script).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["p@example.net"], "x\r\n")
        dsn = wait_dsn(s, SENDER)
        assert f"Status: {status}" in dsn.as_string()
        assert "Remote-MTA: dns; mx.example.net" in dsn.as_string()
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


@pytest.mark.parametrize("raw", [
    b"220-" + b"x" * 100000 + b"\r\n",                 # a line with no end in sight
    b"220-ok\r\n" * 5000,                              # a reply that never ends
    b"999 what\r\n",                                   # not a reply code
    b"220-ok\r\n250 mixed codes\r\n",
    b"\x00\xff\xfe\r\n",
])
def test_hostile_server_replies_defer_without_crash(tmp_path, dns, raw):
    sink = Sink({"greeting": raw}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["h@example.net"], "x\r\n")
        wait_for_log(s, r"relay\.deferred", timeout=30)
        assert s.running()
        assert s.queue_files("msg")
    finally:
        finish_server(s)
        sink.stop()


def test_no_bounce_of_a_bounce(tmp_path, dns):
    """A message from the null sender that fails is dropped, not bounced."""
    sink = Sink({"rcpt": "550 5.1.1 nobody"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.remote.test")
            # a DSN arriving for a local alias that forwards elsewhere
            c.sendmail("", ["fwd@example.test"], b"Subject: bounce\r\n\r\nx\r\n")
        wait_for_log(s, r"relay\.failed", timeout=30)
        s.wait_queue_empty(timeout=20)
        assert not any(b"multipart/report" in m for _, _, m in s.all_messages())
    finally:
        finish_server(s)
        sink.stop()


def test_dsn_notify_never_and_success(tmp_path, dns):
    """NOTIFY=NEVER: no bounce. NOTIFY=SUCCESS to a next hop without DSN:
    a 'relayed' report (RFC 3461 4.1)."""
    sink = Sink({"rcpt": {"never@example.net": "550 5.1.1 no"},
                 "extensions": ["PIPELINING", "8BITMIME"]}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        with submission(s) as c:
            c.mail(SENDER, ["RET=HDRS", "ENVID=abc123"])
            c.rcpt("never@example.net", ["NOTIFY=NEVER"])
            c.rcpt("ok@example.net", ["NOTIFY=SUCCESS,FAILURE",
                                      "ORCPT=rfc822;ok@example.net"])
            c.data(b"Subject: dsn\r\n\r\nbody\r\n")
        dsn = wait_dsn(s, SENDER)
        text = dsn.as_string()
        assert "Action: relayed" in text
        assert "Final-Recipient: rfc822; ok@example.net" in text
        assert "Original-Envelope-Id: abc123" in text
        assert "never@example.net" not in text
        s.wait_queue_empty(timeout=20)
        assert len([m for _, m in s.messages(SENDER) if b"multipart/report" in m]) == 1
    finally:
        finish_server(s)
        sink.stop()


def test_dsn_parameters_passed_to_dsn_capable_peer(tmp_path, dns):
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        with submission(s) as c:
            c.mail(SENDER, ["RET=FULL", "ENVID=e+2Bnv"])
            c.rcpt("ok@example.net", ["NOTIFY=SUCCESS", "ORCPT=rfc822;orig@example.net"])
            c.data(b"Subject: dsn\r\n\r\nbody\r\n")
        m = sink.wait_messages(1)[0]
        assert "RET=FULL" in m.mail_params and "ENVID=e+2Bnv" in m.mail_params
        assert m.rcpts[0][1] == "NOTIFY=SUCCESS ORCPT=rfc822;orig@example.net"
        s.wait_queue_empty(timeout=20)
        # the next hop reports success: no DSN from us
        time.sleep(0.5)
        assert not any(b"multipart/report" in m for _, m in s.messages(SENDER))
    finally:
        finish_server(s)
        sink.stop()


def test_size_refused_before_sending(tmp_path, dns):
    sink = Sink({"extensions": ["PIPELINING", "SIZE 100", "8BITMIME"]}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["big@example.net"], "x" * 500 + "\r\n")
        dsn = wait_dsn(s, SENDER)
        assert "Status: 5.3.4" in dsn.as_string()
        assert not any(c.startswith(b"MAIL") for c in sink.commands)
    finally:
        finish_server(s)
        sink.stop()


def test_chunking_used_when_offered(tmp_path, dns):
    sink = Sink({"extensions": ["PIPELINING", "CHUNKING", "8BITMIME", "SIZE 1000000"]}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        body = "".join(f"line {i} .\r\n" for i in range(20000))
        tok, sent = send(s, SENDER, ["c@example.net"], body)
        m = sink.wait_messages(1)[0]
        assert m.bdat
        assert m.data.endswith(body.encode())
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


def test_connection_reused_for_several_messages(tmp_path, dns):
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\nlimit relay-idle 5\n")
    try:
        for i in range(5):
            send(s, SENDER, [f"r{i}@example.net"], f"n{i}\r\n")
        sink.wait_messages(5)
        s.wait_queue_empty(timeout=20)
        assert sink.connections < 5
    finally:
        finish_server(s)
        sink.stop()


def test_mx_pointing_to_ourselves_is_a_loop(tmp_path, dns):
    dns.set_zone({"loop.test": {"MX": [(10, "mail.example.test")]},
                  "mail.example.test": {"A": ["127.0.0.1"]}})
    s = relay_server(tmp_path, dns.port)
    try:
        send(s, SENDER, ["x@loop.test"], "a\r\n")
        dsn = wait_dsn(s, SENDER)
        assert "5.4.6" in dsn.as_string()
    finally:
        finish_server(s)


def test_kill_during_relay_loses_nothing(tmp_path, dns):
    """SIGKILL while the peer holds the final reply: after a restart the
    message is sent again (twice at most), never lost."""
    sink = Sink({"drop_after_dot": True}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["k@example.net"], "kill me\r\n")
        end = time.time() + 20
        while not sink.dropped and time.time() < end:
            time.sleep(0.05)
        assert sink.dropped
        s.kill()
        sink.script = {}
        s.start()
        sink.wait_messages(1, timeout=30)
        s.wait_queue_empty(timeout=20)
        assert body_of(sink.messages[0].data) == b"kill me\r\n"
    finally:
        finish_server(s)
        sink.stop()


# ---------------------------------------------------------------- TLS, AUTH

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from helpers import make_pki
    return make_pki(tmp_path_factory.mktemp("relaypki"))


def test_starttls_opportunistic_with_unverifiable_certificate(tmp_path, dns, pki):
    """Default policy `may`: STARTTLS when offered, even with a certificate
    nobody vouches for (RFC 7435); the message goes encrypted."""
    sink = Sink({"tls": (pki["mail_cert"], pki["mail_key"])}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["tls@example.net"], "secret\r\n")
        m = sink.wait_messages(1)[0]
        assert m.tls
        wait_for_log(s, r"relay\.tls .*verified=no", timeout=10)
    finally:
        finish_server(s)
        sink.stop()


def test_starttls_verify_against_ca_and_name(tmp_path, dns, pki):
    """`verify`: the certificate must chain to relay-tls-ca and carry the
    MX host's name; a wrong name defers (4.7.5), never sends in clear."""
    sink = Sink({"tls": (pki["mail_cert"], pki["mail_key"])}).start()
    # localhost is a name of the test certificate (mail.example.test too,
    # but that is this server's own name: a loop); mx.wrong.net is not
    dns.set_zone({"example.net": {"MX": [(10, "localhost")]},
                  "wrong.net": {"MX": [(10, "mx.wrong.net")]},
                  "mx.wrong.net": {"A": ["127.0.0.1"]}})
    s = relay_server(tmp_path, dns.port,
                     f"mx-port {sink.port}\nrelay-tls verify\nrelay-tls-ca {pki['ca']}\n")
    try:
        send(s, SENDER, ["v@example.net"], "verified\r\n")
        m = sink.wait_messages(1)[0]
        assert m.tls
        wait_for_log(s, r"relay\.tls .*verified=yes", timeout=10)
        send(s, SENDER, ["w@wrong.net"], "must not go\r\n")
        wait_for_log(s, r"relay\.deferred .*4\.7\.5", timeout=30)
        assert len(sink.messages) == 1
        assert s.queue_files("msg")
    finally:
        finish_server(s)
        sink.stop()


def test_encrypt_policy_without_starttls_defers(tmp_path, dns):
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\nrelay-tls encrypt\n")
    try:
        send(s, SENDER, ["e@example.net"], "x\r\n")
        wait_for_log(s, r"relay\.deferred .*4\.7\.10", timeout=30)
        assert sink.messages == []
        assert not any(c.startswith(b"MAIL") for c in sink.commands)
    finally:
        finish_server(s)
        sink.stop()


def test_starttls_response_injection_is_discarded(tmp_path, dns, pki):
    """Bytes a server sends after its 220 to STARTTLS (before the handshake)
    must never be read as replies inside TLS (CVE-2011-0411 class)."""
    sink = Sink({"tls": (pki["mail_cert"], pki["mail_key"]),
                 "starttls_inject": b"250-injected\r\n250 injected\r\n"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["i@example.net"], "x\r\n")
        # either the handshake fails on the junk (and the message is sent
        # again in plaintext, `may`), or the junk is dropped: never read as
        # the EHLO reply
        end = time.time() + 30
        while not sink.messages and time.time() < end:
            time.sleep(0.1)
        assert s.running()
        assert b"injected" not in s.log().encode()
    finally:
        finish_server(s)
        sink.stop()


def test_auth_to_smarthost(tmp_path, dns, pki):
    sink = Sink({"tls": (pki["mail_cert"], pki["mail_key"]),
                 "auth": {"relayuser": "relay pass"}}).start()
    pwfile = tmp_path / "smarthost.pw"
    pwfile.write_text("relay pass\n")
    os.chmod(pwfile, 0o644)
    s = relay_server(tmp_path, dns.port,
                     f"route * [127.0.0.1]:{sink.port} tls=encrypt auth=relayuser "
                     f"password-file={pwfile}\n")
    try:
        send(s, SENDER, ["a@anywhere.test"], "authenticated\r\n")
        m = sink.wait_messages(1)[0]
        assert m.tls
        assert sink.logins == [("relayuser", True)]
        assert b"relay pass" not in s.log().encode()
    finally:
        finish_server(s)
        sink.stop()


def test_smarthost_refuses_credentials_defers(tmp_path, dns, pki):
    sink = Sink({"tls": (pki["mail_cert"], pki["mail_key"]),
                 "auth": {"relayuser": "other"}}).start()
    pwfile = tmp_path / "smarthost.pw"
    pwfile.write_text("wrong\n")
    os.chmod(pwfile, 0o644)
    s = relay_server(tmp_path, dns.port,
                     f"route * [127.0.0.1]:{sink.port} tls=encrypt auth=relayuser "
                     f"password-file={pwfile}\n")
    try:
        send(s, SENDER, ["a@anywhere.test"], "x\r\n")
        wait_for_log(s, r"relay\.deferred .*authentication to the smarthost failed", timeout=30)
        assert sink.messages == []
    finally:
        finish_server(s)
        sink.stop()


def test_delay_warning_sent_once(tmp_path, dns):
    sink = Sink({"rcpt": "451 4.3.0 later"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\nlimit delay-warning 1\n")
    try:
        send(s, SENDER, ["slow@example.net"], "x\r\n")
        dsn = wait_dsn(s, SENDER, timeout=30)
        text = status_part(dsn)
        assert "Action: delayed" in text
        assert "Will-Retry-Until:" in text
        time.sleep(5)   # several more attempts happen meanwhile
        reports = [m for _, m in s.messages(SENDER) if b"multipart/report" in m]
        assert len(reports) == 1
        assert s.queue_files("msg")
    finally:
        finish_server(s)
        sink.stop()


def test_etrn_starts_the_queue_for_authenticated_clients(tmp_path, dns):
    """RFC 1985: ETRN from an authenticated client (or etrn-networks)
    retries deferred mail now; an anonymous one gets 459."""
    sink = Sink({"rcpt": "451 4.3.0 later"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n"
                     "limit relay-retry-min 3600\nlimit relay-retry-max 3600\n")
    try:
        send(s, SENDER, ["etrn@example.net"], "x\r\n")
        wait_for_log(s, r"relay\.deferred", timeout=30)
        sink.script = {}
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.remote.test")
            code, msg = c.docmd("ETRN", "example.net")
            assert code == 459, (code, msg)
        assert sink.messages == []
        with submission(s) as c:
            assert "etrn" in c.esmtp_features
            code, msg = c.docmd("ETRN", "bogus..domain")
            assert code == 501
            code, msg = c.docmd("ETRN", "@example.net")
            assert code == 250, (code, msg)
        sink.wait_messages(1, timeout=20)
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


def test_etrn_networks(tmp_path, dns):
    s = relay_server(tmp_path, dns.port, "etrn-networks 127.0.0.0/8\n")
    try:
        with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
            c.ehlo("client.remote.test")
            assert "etrn" in c.esmtp_features
            code, msg = c.docmd("ETRN", "example.net")
            assert code == 250, (code, msg)
        wait_for_log(s, r"queue\.flush", timeout=10)
    finally:
        finish_server(s)


def test_ipv6_address_of_the_mx(tmp_path, dns):
    """An MX host with only an AAAA record is reached over IPv6; with both,
    a dead IPv4 address falls back to the IPv6 one."""
    sink = Sink(host="::1").start()
    dns.set_zone({"six.test": {"MX": [(10, "mx.six.test")]},
                  "mx.six.test": {"AAAA": ["::1"]},
                  "both.test": {"MX": [(10, "mx.both.test")]},
                  "mx.both.test": {"A": ["127.0.0.9"], "AAAA": ["::1"]}})
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["v6@six.test"], "over ipv6\r\n")
        sink.wait_messages(1)
        send(s, SENDER, ["v6@both.test"], "fallback to ipv6\r\n")
        sink.wait_messages(2)
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


def test_connections_per_destination_limit(tmp_path, dns):
    """With relay-connections-per-destination 1, ten messages go over one
    connection at a time (and all arrive)."""
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n"
                     "limit relay-connections-per-destination 1\nlimit relay-idle 5\n")
    try:
        import threading
        active = {"now": 0, "max": 0}
        orig = sink.server.RequestHandlerClass.handle

        def counting(handler):
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
            try:
                orig(handler)
            finally:
                active["now"] -= 1
        sink.server.RequestHandlerClass = type("H", (sink.server.RequestHandlerClass,),
                                               {"handle": counting})
        threads = [threading.Thread(target=send, args=(s, SENDER, [f"c{i}@example.net"],
                                                       f"m{i}\r\n"))
                   for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sink.wait_messages(10, timeout=60)
        s.wait_queue_empty(timeout=20)
        assert active["max"] == 1
    finally:
        finish_server(s)
        sink.stop()


def test_queue_bounce_by_the_administrator_sends_a_dsn(tmp_path, dns):
    """`estafeta queue bounce` fails the pending recipients; the server then
    sends the sender a DSN and the message leaves the queue."""
    import subprocess
    from helpers import estafeta_bin
    sink = Sink({"rcpt": "451 4.3.0 later"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n"
                     "limit relay-retry-min 3600\nlimit relay-retry-max 3600\n")
    try:
        send(s, SENDER, ["stuck@example.net"], "x\r\n")
        wait_for_log(s, r"relay\.deferred", timeout=30)
        p = subprocess.run([str(estafeta_bin()), "queue", "bounce", "--all", "-c",
                            str(s.config_path)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        dsn = wait_dsn(s, SENDER)
        text = status_part(dsn)
        assert "Final-Recipient: rfc822; stuck@example.net" in text
        assert "Action: failed" in text
        assert "administrator" in dsn.as_string()
        s.wait_queue_empty(timeout=20)
        assert sink.messages == []
    finally:
        finish_server(s)
        sink.stop()


def test_helo_fallback_when_ehlo_refused(tmp_path, dns):
    """A server that refuses EHLO gets HELO (RFC 5321 3.2) and plain SMTP:
    no ESMTP parameters on MAIL or RCPT."""
    sink = Sink({"ehlo": "502 5.5.2 EHLO not supported"}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        send(s, SENDER, ["old@example.net"], "plain smtp\r\n")
        m = sink.wait_messages(1)[0]
        assert m.mail_params == "" and m.rcpts[0][1] == ""
        assert any(c.startswith(b"HELO ") for c in sink.commands)
        assert body_of(m.data) == b"plain smtp\r\n"
    finally:
        finish_server(s)
        sink.stop()


def test_smtputf8_address_to_a_peer_without_smtputf8_bounces(tmp_path, dns):
    """RFC 6531 3.4: an internationalized envelope address cannot go to a
    server without SMTPUTF8: bounced with 5.6.7, nothing sent."""
    sink = Sink({"extensions": ["PIPELINING", "8BITMIME"]}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n")
    try:
        with submission(s) as c:
            c.mail(SENDER, ["SMTPUTF8"])
            c.rcpt("jos\u00e9@example.net")
            c.data("Subject: utf8\r\n\r\nol\u00e1\r\n".encode())
        dsn = wait_dsn(s, SENDER)
        assert "5.6.7" in dsn.as_string()
        assert not any(c.startswith(b"MAIL") for c in sink.commands)
        s.wait_queue_empty(timeout=20)
    finally:
        finish_server(s)
        sink.stop()


def test_relay_recipients_split_into_transactions(tmp_path, dns):
    """relay-recipients 2: five recipients of one domain go as three
    transactions (2, 2, 1) on one connection, each recipient once."""
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\nlimit relay-recipients 2\n")
    try:
        rcpts = [f"r{i}@example.net" for i in range(5)]
        send(s, SENDER, rcpts, "split\r\n")
        sink.wait_messages(3)
        s.wait_queue_empty(timeout=20)
        assert [len(m.rcpts) for m in sink.messages] == [2, 2, 1]
        assert sorted(r[0] for m in sink.messages for r in m.rcpts) == rcpts
        assert all(body_of(m.data) == b"split\r\n" for m in sink.messages)
        assert sink.connections == 1
    finally:
        finish_server(s)
        sink.stop()


def test_relay_messages_per_connection(tmp_path, dns):
    """relay-messages-per-connection 1: every message has its own connection."""
    sink = Sink().start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\n"
                     "limit relay-messages-per-connection 1\nlimit relay-idle 5\n")
    try:
        for i in range(3):
            send(s, SENDER, [f"m{i}@example.net"], f"n{i}\r\n")
            sink.wait_messages(i + 1)
        s.wait_queue_empty(timeout=20)
        assert sink.connections == 3
        assert sorted(m.rcpts[0][0] for m in sink.messages) == [f"m{i}@example.net" for i in range(3)]
    finally:
        finish_server(s)
        sink.stop()


def test_stalled_server_times_out_and_message_stays(tmp_path, dns):
    """A server that never greets: timeout-greeting ends the wait, the
    message stays queued (deferred, 4.4.2) and nothing is sent."""
    sink = Sink({"greeting_delay": 20}).start()
    dns.set_zone(mx_zone("example.net", "mx.example.net", "127.0.0.1"))
    s = relay_server(tmp_path, dns.port, f"mx-port {sink.port}\nlimit timeout-greeting 1\n"
                     "limit relay-retry-min 3600\nlimit relay-retry-max 3600\n")
    try:
        send(s, SENDER, ["slow@example.net"], "x\r\n")
        wait_for_log(s, r"relay\.deferred .*4\.4\.2 timeout waiting for the greeting", timeout=30)
        assert s.running()
        assert s.queue_files("msg")
        assert sink.commands == []
        assert not any(b"multipart/report" in m for _, m in s.messages(SENDER))
    finally:
        finish_server(s)
        sink.stop()
