"""Message submission (RFC 6409) end to end: real clients (Python smtplib,
swaks, msmtp) over STARTTLS on the submission listener and implicit TLS on
submissions; the message as stored (Received with ESMTPSA/ESMTPA/ESMTPS,
"(authenticated)", never the login name or password; Date and Message-ID
added when missing; Bcc removed); which sender addresses a user may use
(sender-login-match); relaying for authenticated users only."""

import json
import re
import smtplib
import subprocess
import time

import pytest

from helpers import (HOSTNAME, PASSWORDS, SMTPTLS, check, client_context,
                     header_section, header_values, make_submission_server, qid_of,
                     received_of, run_estafeta, split_stored, token)

CAROL, CAROL_PW = "carol@example.test", PASSWORDS["carol@example.test"]
DAVE, DAVE_PW = "dave@example.test", PASSWORDS["dave@example.test"]

DATE_RE = re.compile(r"^(\w{3}, )?\d{1,2} \w{3} \d{4} \d\d:\d\d(:\d\d)? [+-]\d{4}$")


def message(tok, extra_headers=b"", body=None):
    return (b"From: Carol <carol@example.test>\r\n"
            b"To: Demo <demo@example.test>\r\n"
            + extra_headers +
            b"Subject: submission " + tok.encode() + b"\r\n"
            b"\r\n" + (body if body is not None else
                       b"Body line one " + tok.encode() + b"\r\nline two\r\n"))


def submit(server, data, rcpts=("demo@example.test",), sender=CAROL, user=CAROL,
           pw=CAROL_PW, implicit=True):
    """Log in (PLAIN under TLS) and send data; returns (qid, client)."""
    ctx = client_context(server.pki["ca"])
    if implicit:
        c = SMTPTLS(server.subs_port, implicit=True, context=ctx)
    else:
        c = SMTPTLS(server.sub_port, context=ctx)
        c.hello()
        c.starttls()
    with c:
        c.hello("submit.client.example")
        check(c.auth_plain(user, pw), 235, "2.7.0", None, c)
        c.start_mail(sender, rcpts)
        r = c.send_data(data)
        check(r, 250, "2.0.0", None, c)
        c.cmd_expect("QUIT", 221)
        return qid_of(r.text), c


def assert_submission_headers(stored, qid, sent, with_="ESMTPSA", tls=True,
                              kept_date=None, kept_msgid=None):
    """sent: the message as sent (its body is compared), or None."""
    """The stored copy of an authenticated submission."""
    rp, received, rest = split_stored(stored)
    r = received_of(stored)
    assert re.search(r"\bwith %s\b" % with_, r), r
    assert re.search(r"\bid %s\b" % re.escape(qid), r), r
    assert "(authenticated)" in r, r
    if tls:
        # the exact spelling of the version is checked once, in
        # test_received_tls_comment_as_documented
        m = re.search(r"\(using TLSv1\.[23] with cipher ([A-Za-z0-9_-]+) \(\d+ bits\)\)", r)
        assert m, "no (using TLSv1.x with cipher NAME (N bits)) comment in %r" % r
    else:
        assert "cipher" not in r, r
    low = r.lower()
    for pw in PASSWORDS.values():
        assert pw.lower() not in low
    assert "carol" not in low and "dave" not in low, "login name in Received: %r" % r
    for pw in PASSWORDS.values():
        assert pw.encode() not in stored
    hdr = header_section(rest)
    assert not re.search(rb"(?im)^bcc:", hdr), "Bcc: left in the stored message:\n%r" % hdr
    dates = header_values(rest, "Date")
    ids = header_values(rest, "Message-ID")
    assert len(dates) == 1, "Date fields: %r\n%r" % (dates, hdr)
    assert len(ids) == 1, "Message-ID fields: %r\n%r" % (ids, hdr)
    if kept_date == "any":
        pass
    elif kept_date is not None:
        assert dates[0] == kept_date, dates
    else:
        assert DATE_RE.match(dates[0]), "added Date %r is not RFC 5322" % dates[0]
    if kept_msgid == "any":
        pass
    elif kept_msgid is not None:
        assert ids[0] == kept_msgid, ids
    else:
        assert ids[0] == "<%s@%s>" % (qid, HOSTNAME), ids
    # the body is untouched
    if sent is not None:
        assert rest.split(b"\r\n\r\n", 1)[1] == sent.split(b"\r\n\r\n", 1)[1]
    return rp, r, rest


BCC_HEADERS = (b"Bcc: Alice <alice@example.test>,\r\n"
               b"  hidden@remote.test\r\n")


# ---------------------------------------------------------------- Python smtplib


def test_smtplib_starttls_login_submission(sub_server, pki):
    tok = token()
    data = message(tok, BCC_HEADERS)
    with smtplib.SMTP("127.0.0.1", sub_server.sub_port, local_hostname="smtplib.example",
                      timeout=15) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s.starttls(context=client_context(pki["ca"]))
        s.ehlo()
        assert "PLAIN" in s.esmtp_features.get("auth", "").split(), s.esmtp_features
        s.login(CAROL, CAROL_PW)
        code, resp = s.mail(CAROL)
        assert code == 250, resp
        for rcpt in ("demo@example.test", "alice@example.test"):
            code, resp = s.rcpt(rcpt)
            assert code == 250, resp
        code, resp = s.data(data)
        assert code == 250, resp
        qid = qid_of(resp.decode())
    for box in ("demo@example.test", "alice@example.test"):
        [stored] = sub_server.wait_messages(box, tok)
        rp, r, rest = assert_submission_headers(stored, qid, data)
        assert rp == "<%s>" % CAROL
        assert r.startswith("Received: from smtplib.example ([127.0.0.1])"), r
        assert b"Subject: submission " + tok.encode() + b"\r\n" in rest
        # the additions come at the end of the header section
        hdr = header_section(rest).decode()
        names = [l.split(":")[0] for l in hdr.split("\r\n") if l and l[0] not in " \t"]
        assert names[:3] == ["From", "To", "Subject"], names
        assert set(names[3:]) == {"Date", "Message-ID"}, names


def test_smtplib_ssl_submissions_keeps_date_and_message_id(sub_server, pki):
    tok = token()
    date = "Mon, 2 Nov 2026 10:00:00 +0100"
    msgid = "<%s@client.example>" % tok
    extra = ("Date: %s\r\nMessage-ID: %s\r\nbcc: one@remote.test\r\n"
             "BCC:\r\nCc: Bob <bob@example.test>\r\n" % (date, msgid)).encode()
    data = message(tok, extra)
    with smtplib.SMTP_SSL("127.0.0.1", sub_server.subs_port, local_hostname="ssl.example",
                          timeout=15, context=client_context(pki["ca"])) as s:
        s.ehlo()
        s.user, s.password = CAROL, CAROL_PW
        code, resp = s.auth("LOGIN", s.auth_login)
        assert code == 235, resp
        assert s.mail(CAROL)[0] == 250
        for rcpt in ("demo@example.test", "bob@example.test"):
            assert s.rcpt(rcpt)[0] == 250
        code, resp = s.data(data)
        assert code == 250, resp
        qid = qid_of(resp.decode())
    for box in ("demo@example.test", "bob@example.test"):
        [stored] = sub_server.wait_messages(box, tok)
        _, r, rest = assert_submission_headers(stored, qid, data,
                                               kept_date=date, kept_msgid=msgid)
        assert b"Cc: Bob <bob@example.test>\r\n" in rest


# ---------------------------------------------------------------- stored headers per path


def test_received_tls_comment_as_documented(sub_server, pki):
    """doc/smtp.md: `(using TLSv1.3 with cipher NAME (BITS bits))` with the
    negotiated protocol and cipher."""
    tok = token()
    data = message(tok)
    ctx = client_context(pki["ca"])
    with SMTPTLS(sub_server.subs_port, implicit=True, context=ctx) as c:
        cipher, _, bits = c.sock.cipher()
        version = c.sock.version()            # "TLSv1.3"
        c.hello()
        check(c.auth_plain(CAROL, CAROL_PW), 235, "2.7.0", None, c)
        c.start_mail(CAROL, ["demo@example.test"])
        check(c.send_data(data), 250, "2.0.0", None, c)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    r = received_of(stored)
    want = "(using %s with cipher %s (%d bits))" % (version, cipher, bits)
    assert want in r, "want %r in %r" % (want, r)


def test_scram_without_tls_is_esmtpa(sub_server):
    tok = token()
    data = message(tok)
    with SMTPTLS(sub_server.sub_port) as c:
        c.hello("scram.client.example")
        r, info = c.auth_scram(DAVE, DAVE_PW)
        check(r, 235, "2.7.0", None, c)
        c.start_mail(DAVE, ["demo@example.test"])
        r = c.send_data(data)
        check(r, 250, "2.0.0", None, c)
        qid = qid_of(r.text)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    assert_submission_headers(stored, qid, data, with_="ESMTPA", tls=False)


def test_mx_with_starttls_is_esmtps_and_unmodified(sub_server, pki):
    """On mx the message is not a submission: nothing added or removed."""
    tok = token()
    data = message(tok, BCC_HEADERS)
    with SMTPTLS(sub_server.port, context=client_context(pki["ca"])) as c:
        c.hello()
        c.starttls()
        c.hello("mx.client.example")
        c.start_mail("someone@remote.test", ["demo@example.test"])
        r = c.send_data(data)
        check(r, 250, "2.0.0", None, c)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    rp, _, rest = split_stored(stored)
    r = received_of(stored)
    assert re.search(r"\bwith ESMTPS\b", r), r
    assert "(authenticated)" not in r, r
    assert rest == data, "mx message changed:\n%r\n%r" % (data, rest)


def test_mx_plaintext_is_esmtp(sub_server):
    tok = token()
    data = message(tok)
    with SMTPTLS(sub_server.port) as c:
        c.hello("plain.client.example")
        c.start_mail("someone@remote.test", ["demo@example.test"])
        check(c.send_data(data), 250, "2.0.0", None, c)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    r = received_of(stored)
    assert re.search(r"\bwith ESMTP\b", r) and "(authenticated)" not in r and "cipher" not in r, r
    assert split_stored(stored)[2] == data


@pytest.mark.parametrize("implicit", [True, False], ids=["465", "587"])
def test_bcc_only_header_and_no_header_section(sub_server, implicit):
    tok = token()
    # a message that is nothing but a Bcc: field and a body
    data = b"Bcc: demo@example.test\r\n\r\n" + tok.encode() + b" body\r\n"
    qid, _ = submit(sub_server, data, implicit=implicit)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    _, _, rest = split_stored(stored)
    assert not re.search(rb"(?im)^bcc:", header_section(rest)), rest
    assert header_values(rest, "Message-ID") == ["<%s@%s>" % (qid, HOSTNAME)], rest
    assert len(header_values(rest, "Date")) == 1, rest
    assert rest.endswith(b"\r\n\r\n" + tok.encode() + b" body\r\n"), rest


def test_bcc_in_body_is_kept(sub_server):
    tok = token()
    data = message(tok, body=b"Bcc: this is body text " + tok.encode() + b"\r\n")
    qid, _ = submit(sub_server, data)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    assert stored.endswith(b"\r\n\r\nBcc: this is body text " + tok.encode() + b"\r\n")


# ---------------------------------------------------------------- swaks


def swaks(port, *extra):
    tok = token()
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "swaks.client.example",
           "--to", "demo@example.test", "--from", CAROL,
           "--header", "Subject: swaks " + tok, "--body", "swaks body " + tok,
           "--timeout", "15"] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return tok, p


@pytest.mark.parametrize("mode,mech", [("--tls", "PLAIN"), ("--tls", "LOGIN"),
                                       ("--tlsc", "PLAIN"), ("--tlsc", "LOGIN")])
def test_swaks_tls_auth(sub_server, mode, mech):
    port = sub_server.sub_port if mode == "--tls" else sub_server.subs_port
    tok, p = swaks(port, mode, "--auth", mech, "--auth-user", CAROL,
                   "--auth-password", CAROL_PW)
    assert p.returncode == 0, "swaks failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    assert "<~  235 2.7.0" in p.stdout or "<~  235 " in p.stdout, p.stdout
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    r = received_of(stored)
    assert re.search(r"\bwith ESMTPSA\b", r) and "(authenticated)" in r, r
    assert "carol" not in r.lower()


def test_swaks_auth_without_tls_refused(sub_server):
    tok, p = swaks(sub_server.sub_port, "--auth", "PLAIN", "--auth-user", CAROL,
                   "--auth-password", CAROL_PW)
    assert p.returncode != 0, p.stdout
    # swaks sees no PLAIN in the unencrypted EHLO, or is refused with 538
    assert "<~  235" not in p.stdout, p.stdout
    sub_server.assert_not_delivered(tok)


def test_swaks_wrong_password(sub_server):
    tok, p = swaks(sub_server.subs_port, "--tlsc", "--auth", "PLAIN", "--auth-user", CAROL,
                   "--auth-password", "wrong-password")
    assert p.returncode != 0
    assert "535 5.7.8" in p.stdout, p.stdout
    sub_server.assert_not_delivered(tok)


# ---------------------------------------------------------------- msmtp


MSMTP_MODES = [
    ("587", "on"), ("587", "plain"), ("587", "scram-sha-256"),
    ("465", "login"), ("465", "scram-sha-256"),
]


@pytest.mark.parametrize("port_name,auth", MSMTP_MODES)
def test_msmtp(sub_server, pki, tmp_path, port_name, auth):
    tok = token()
    implicit = port_name == "465"
    rc = tmp_path / "msmtprc"
    rc.write_text(
        "defaults\n"
        "logfile %s\n"
        "account test\n"
        "host 127.0.0.1\n"
        "port %d\n"
        "domain msmtp.client.example\n"
        "from %s\n"
        "auth %s\n"
        "user %s\n"
        "password %s\n"
        "tls on\n"
        "tls_starttls %s\n"
        "tls_trust_file %s\n"
        "timeout 15\n"
        % (tmp_path / "msmtp.log", sub_server.subs_port if implicit else sub_server.sub_port,
           CAROL, auth, CAROL, CAROL_PW, "off" if implicit else "on", pki["ca"]))
    rc.chmod(0o600)
    data = ("From: %s\nTo: demo@example.test\nSubject: msmtp %s\nBcc: bob@example.test\n\n"
            "msmtp body %s\n" % (CAROL, tok, tok)).encode()
    p = subprocess.run(["msmtp", "-C", str(rc), "-a", "test", "-d", "demo@example.test"],
                       input=data, capture_output=True, timeout=60)
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    assert p.returncode == 0, "msmtp failed (%d):\n%s" % (p.returncode, out)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    queued = re.findall(r"queued as (\w+)", out)
    assert queued, out
    # msmtp adds Date: and Message-ID: itself; there must be one of each
    _, r, rest = assert_submission_headers(stored, queued[-1], None, with_="ESMTPSA",
                                           kept_date="any", kept_msgid="any")
    assert rest.endswith(b"\r\n\r\nmsmtp body " + tok.encode() + b"\r\n"), rest
    if auth != "on":
        assert "AUTH %s" % auth.upper() in out, out


# ---------------------------------------------------------------- sender binding


@pytest.mark.parametrize("sender", [
    CAROL, "carol+tag@example.test", "crew@example.test", "crew+list@example.test",
])
def test_sender_allowed(sub_server, sender):
    tok = token()
    data = message(tok)
    qid, _ = submit(sub_server, data, sender=sender)
    [stored] = sub_server.wait_messages("demo@example.test", tok)
    assert split_stored(stored)[0] == "<%s>" % sender


@pytest.mark.parametrize("sender", [
    "alice@example.test", DAVE, "dave+carol@example.test", "solo@example.test",
    "team@example.test", "postmaster@example.test", "carol@remote.test",
    "someone@remote.test", "",
])
def test_sender_refused(sub_server, pki, sender):
    with SMTPTLS(sub_server.subs_port, implicit=True, context=client_context(pki["ca"])) as c:
        c.hello()
        check(c.auth_plain(CAROL, CAROL_PW), 235, "2.7.0", None, c)
        r = c.cmd("MAIL FROM:<%s>" % sender)
        check(r, 553, "5.7.1", None, c)
        if sender:
            assert "<%s>: Sender address rejected: not owned by user" % sender in r.text, r
        # the session goes on
        c.cmd_expect("RCPT TO:<demo@example.test>", 503, "5.5.1")
        c.cmd_expect("MAIL FROM:<%s>" % CAROL, 250, "2.1.0")


def test_sender_login_match_off(make_server, pki):
    s = make_submission_server(make_server, pki, extra="sender-login-match off\n"
                                                       "limit auth-delay 0\n")
    for sender in ("alice@example.test", "someone@remote.test", DAVE):
        tok = token()
        submit(s, message(tok), sender=sender)
        [stored] = s.wait_messages("demo@example.test", tok)
        assert split_stored(stored)[0] == "<%s>" % sender


# ---------------------------------------------------------------- relaying


def test_authenticated_relay_is_queued(make_server, pki):
    s = make_submission_server(make_server, pki, extra="limit auth-delay 0\n")
    tok = token()
    data = message(tok)
    qid, c = submit(s, data, rcpts=("someone@remote.test", "demo@example.test"),
                    implicit=False)
    # the local copy is delivered, the remote one waits for the relay
    [stored] = s.wait_messages("demo@example.test", tok)
    assert_submission_headers(stored, qid, data)
    deadline = time.monotonic() + 10
    while True:
        p = run_estafeta(s, "queue", "list", "--json")
        if "someone@remote.test" in p.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert p.returncode == 0, p.stderr
    rcpts = [(r["address"], r["state"]) for m in json.loads(p.stdout)
             for r in m["recipients"]]
    assert ("someone@remote.test", "pending") in rcpts, p.stdout + s.log_tail()
    assert ("demo@example.test", "pending") not in rcpts, p.stdout
    assert s.queue_files("msg"), "queue/msg is empty"
    # the queued copy holds the submission fix-ups too
    queued = b"".join(f.read_bytes() for f in s.queue_files("msg"))
    assert tok.encode() in queued
    assert ("<%s@%s>" % (qid, HOSTNAME)).encode() in queued


def test_unauthenticated_relay_refused_on_mx(sub_server, pki):
    with SMTPTLS(sub_server.port, context=client_context(pki["ca"])) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<%s>" % CAROL, 250, "2.1.0")
        r = c.cmd("RCPT TO:<someone@remote.test>")
        check(r, 554, "5.7.1", "<someone@remote.test>: Relay access denied", c)
        # TLS grants nothing either
        c.cmd_expect("RSET", 250)
        c.starttls()
        c.hello()
        c.cmd_expect("MAIL FROM:<%s>" % CAROL, 250, "2.1.0")
        check(c.cmd("RCPT TO:<someone@remote.test>"), 554, "5.7.1", None, c)


def test_submission_without_auth_cannot_reach_anyone(sub_server, pki):
    with SMTPTLS(sub_server.subs_port, implicit=True, context=client_context(pki["ca"])) as c:
        c.hello()
        c.cmd_expect("MAIL FROM:<a@b.test>", 530, "5.7.0")
        c.cmd_expect("RCPT TO:<someone@remote.test>", 503, "5.5.1")
        c.cmd_expect("RCPT TO:<demo@example.test>", 503, "5.5.1")
        c.cmd_expect("DATA", 503, "5.5.1")


def test_no_secrets_in_log(sub_server):
    """After everything above, the server log holds no password (and no
    base64 PLAIN blob carrying one)."""
    import base64
    text = sub_server.log()
    for user, pw in PASSWORDS.items():
        assert pw not in text, "password of %s in the server log" % user
        blob = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()).decode()
        assert blob not in text
