"""TLS on the three listener roles (doc/smtp.md "TLS, AUTH and submission"):
STARTTLS (RFC 3207) on mx and submission, implicit TLS (RFC 8314) on
submissions, what EHLO offers in each state, STARTTLS command injection
(CVE-2011-0411, security.md 3), the protocol versions and cipher policy of
io/tls.h, SNI certificate selection, the self-signed certificate made at
first start, and handshakes that fail or stall (timeout-tls)."""

import socket
import ssl
import subprocess
import time
import warnings

import pytest

from helpers import (HOSTNAME, OTHER_NAME, WILD_NAME, SMTPTLS, cert_der, check,
                     client_context, make_submission_server)

BASE_KEYWORDS = {"PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES",
                 "SMTPUTF8", "CHUNKING", "DSN"}
ALL_AUTH = {"PLAIN", "LOGIN", "SCRAM-SHA-256"}


def ctx(pki, **kw):
    return client_context(pki["ca"], **kw)


# ---------------------------------------------------------------- EHLO per role


def test_ehlo_mx_offers_starttls_not_auth(sub_server, pki):
    with SMTPTLS(sub_server.port, context=ctx(pki)) as c:
        kw = c.ehlo_keywords()
        assert BASE_KEYWORDS <= set(kw), (kw, c.dump())
        assert "STARTTLS" in kw, "mx with a certificate must offer STARTTLS\n" + c.dump()
        assert "AUTH" not in kw, "AUTH is for submission/submissions only\n" + c.dump()
        c.starttls()
        kw = c.ehlo_keywords()
        assert "STARTTLS" not in kw, "STARTTLS offered again under TLS\n" + c.dump()
        assert "AUTH" not in kw, c.dump()
        assert BASE_KEYWORDS <= set(kw), (kw, c.dump())
        c.cmd_expect("QUIT", 221, "2.0.0")


def test_ehlo_submission_before_and_after_starttls(sub_server, pki):
    with SMTPTLS(sub_server.sub_port, context=ctx(pki)) as c:
        kw = c.ehlo_keywords()
        assert BASE_KEYWORDS <= set(kw), (kw, c.dump())
        assert "STARTTLS" in kw, c.dump()
        # Without TLS and not from a plaintext network: only SCRAM.
        assert "AUTH" in kw, "SCRAM-SHA-256 is offered even without TLS\n" + c.dump()
        assert set(kw["AUTH"]) == {"SCRAM-SHA-256"}, (kw["AUTH"], c.dump())
        c.starttls()
        kw = c.ehlo_keywords()
        assert "STARTTLS" not in kw, c.dump()
        assert set(kw.get("AUTH", [])) == ALL_AUTH, (kw.get("AUTH"), c.dump())
        assert BASE_KEYWORDS <= set(kw), (kw, c.dump())


def test_ehlo_submissions_implicit_tls(sub_server, pki):
    with SMTPTLS(sub_server.subs_port, implicit=True, context=ctx(pki)) as c:
        assert c.greeting.code == 220 and c.greeting.text.startswith(HOSTNAME + " "), c.dump()
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        kw = c.ehlo_keywords()
        assert "STARTTLS" not in kw, c.dump()
        assert set(kw.get("AUTH", [])) == ALL_AUTH, (kw.get("AUTH"), c.dump())
        assert BASE_KEYWORDS <= set(kw), (kw, c.dump())


def test_cram_md5_offered_only_when_configured(make_server, pki):
    s = make_submission_server(make_server, pki, extra=(
        "auth-mechanisms PLAIN LOGIN SCRAM-SHA-256 CRAM-MD5\nlimit auth-delay 0\n"))
    with SMTPTLS(s.sub_port, context=ctx(pki)) as c:
        kw = c.ehlo_keywords()
        # CRAM-MD5 does not send the password in the clear
        assert set(kw.get("AUTH", [])) == {"SCRAM-SHA-256", "CRAM-MD5"}, c.dump()
        c.starttls()
        assert set(c.ehlo_keywords().get("AUTH", [])) == ALL_AUTH | {"CRAM-MD5"}, c.dump()


def test_auth_mechanisms_restricts_offer(make_server, pki):
    s = make_submission_server(make_server, pki, extra="auth-mechanisms SCRAM-SHA-256\n")
    with SMTPTLS(s.subs_port, implicit=True, context=ctx(pki)) as c:
        assert c.ehlo_keywords().get("AUTH") == ["SCRAM-SHA-256"], c.dump()


# ---------------------------------------------------------------- STARTTLS


def test_starttls_verified_tls13_no_compression(sub_server, pki):
    with SMTPTLS(sub_server.sub_port, context=ctx(pki)) as c:
        c.hello()
        r = c.cmd("STARTTLS")
        check(r, 220, "2.0.0", "Ready to start TLS", c)
        c.wrap()     # verifies the chain and mail.example.test
        assert c.sock.version() == "TLSv1.3", c.sock.version()
        assert c.sock.compression() is None
        c.cmd_expect("NOOP", 250, "2.0.0")
        c.cmd_expect("QUIT", 221, "2.0.0")


@pytest.mark.parametrize("port_attr", ["port", "sub_port"])
@pytest.mark.parametrize("injected", [b"RSET\r\n", b"MAIL FROM:<x@y.test>\r\n",
                                      b"NOOP\r\nNOOP\r\nHELP\r\n"])
def test_starttls_injection_discarded(sub_server, pki, port_attr, injected):
    """CVE-2011-0411: plaintext after STARTTLS in the same write must not be
    executed once TLS is up; the session restarts at the greeting state."""
    port = getattr(sub_server, port_attr)
    with SMTPTLS(port, context=ctx(pki)) as c:
        c.hello()
        c.send(b"STARTTLS\r\n" + injected)
        r = c.reply()
        check(r, 220, "2.0.0", None, c)
        # nothing may have been answered in plaintext either
        time.sleep(0.3)
        c.sock.settimeout(0.3)
        try:
            extra = c.sock.recv(4096, socket.MSG_PEEK)
        except socket.timeout:
            extra = b""
        c.sock.settimeout(10)
        assert c.buf == b"" and extra == b"", \
            "server answered the injected command in plaintext: %r %r\n%s" % (
                c.buf, extra, c.dump())
        c.wrap()
        # The first reply under TLS must answer THIS command (a 250 "Hello"
        # line naming it), not a 250 Ok for an injected RSET/NOOP, a 214 for
        # HELP, or a 503/530 for the injected MAIL.
        r = c.cmd("EHLO after.tls.example")
        check(r, 250, None, None, c)
        assert "Hello after.tls.example" in r.text, \
            "first reply under TLS is not the EHLO reply: %r\n%s" % (r, c.dump())
        kw = {l.split()[0].upper() for l in r.lines[1:] if l.split()}
        assert "STARTTLS" not in kw, c.dump()
        if port_attr == "sub_port":
            assert c.auth_plain("carol@example.test", "carol-Secret-1").code == 235, c.dump()
            c.cmd_expect("MAIL FROM:<carol@example.test>", 250, "2.1.0")
        else:
            c.cmd_expect("MAIL FROM:<a@b.test>", 250, "2.1.0")
        # the session works on, and nothing else is pending
        c.cmd_expect("RSET", 250, "2.0.0")
        c.cmd_expect("NOOP", 250, "2.0.0")
        # and nothing else is pending
        c.sock.settimeout(0.5)
        try:
            more = c.sock.recv(4096)
        except (socket.timeout, ssl.SSLError):
            more = b""
        assert c.buf == b"" and more == b"", "extra replies: %r %r\n%s" % (c.buf, more, c.dump())


def test_starttls_resets_session_mx(sub_server, pki):
    with SMTPTLS(sub_server.port, context=ctx(pki)) as c:
        c.hello()
        c.starttls()
        c.cmd_expect("MAIL FROM:<a@b.test>", 503, "5.5.1", "send HELO/EHLO first")
        c.hello()
        c.cmd_expect("MAIL FROM:<a@b.test>", 250, "2.1.0")


def test_starttls_resets_session_submission(sub_server, pki):
    with SMTPTLS(sub_server.sub_port, context=ctx(pki)) as c:
        c.hello()
        c.starttls()
        # EHLO is needed again: AUTH before it is 503 (RFC 4954 4)
        r = c.auth_plain("carol@example.test", "carol-Secret-1")
        check(r, 503, "5.5.1", "send EHLO first", c)
        r = c.cmd("MAIL FROM:<carol@example.test>")
        assert (r.code, r.enh) in ((503, "5.5.1"), (530, "5.7.0")), c.dump()
        c.hello()
        assert c.auth_plain("carol@example.test", "carol-Secret-1").code == 235, c.dump()
        c.cmd_expect("MAIL FROM:<carol@example.test>", 250, "2.1.0")


def test_starttls_with_argument(sub_server, pki):
    with SMTPTLS(sub_server.sub_port, context=ctx(pki)) as c:
        c.hello()
        c.cmd_expect("STARTTLS now", 501, "5.5.4", "Syntax: STARTTLS")
        # still plaintext and usable; a proper STARTTLS works
        c.starttls()
        c.hello()


def test_second_starttls_refused(sub_server, pki):
    with SMTPTLS(sub_server.sub_port, context=ctx(pki)) as c:
        c.hello()
        c.starttls()
        c.cmd_expect("STARTTLS", 503, "5.5.1", "TLS already active")
        c.hello()
        c.cmd_expect("STARTTLS", 503, "5.5.1", "TLS already active")
        c.cmd_expect("NOOP", 250, "2.0.0")


def test_starttls_on_implicit_tls_refused(sub_server, pki):
    with SMTPTLS(sub_server.subs_port, implicit=True, context=ctx(pki)) as c:
        c.hello()
        c.cmd_expect("STARTTLS", 503, "5.5.1", "TLS already active")
        c.cmd_expect("NOOP", 250, "2.0.0")


# ---------------------------------------------------------------- versions and ciphers


def _handshake(port, context, starttls, server_hostname=HOSTNAME):
    c = SMTPTLS(port, context=context, implicit=not starttls, read_greeting=not starttls,
                server_hostname=server_hostname)
    if starttls:
        c.greeting = c.reply()
        c.hello()
        c.starttls()
    return c


def _old_tls_context():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        c = client_context(None, minimum=ssl.TLSVersion.TLSv1,
                           maximum=ssl.TLSVersion.TLSv1_1)
    c.set_ciphers("ALL:@SECLEVEL=0")
    return c


@pytest.mark.parametrize("which", ["subs_port", "sub_port", "port"])
def test_tls11_refused(sub_server, which):
    starttls = which != "subs_port"
    c = SMTPTLS(getattr(sub_server, which), context=_old_tls_context(),
                read_greeting=starttls)
    try:
        if starttls:
            c.hello()
            c.cmd_expect("STARTTLS", 220, "2.0.0")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as ei:
            c.wrap()
            pytest.fail("TLS %s handshake accepted with %s" % (c.sock.version(), c.sock.cipher()))
        assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value), \
            "the test client could not offer TLS 1.1 (%s)" % ei.value
    finally:
        c.close()


@pytest.mark.parametrize("which", ["subs_port", "sub_port"])
def test_tls12_accepted_with_aead_and_forward_secrecy(sub_server, pki, which):
    context = ctx(pki, maximum=ssl.TLSVersion.TLSv1_2)
    with _handshake(getattr(sub_server, which), context, which == "sub_port") as c:
        assert c.sock.version() == "TLSv1.2"
        name = c.sock.cipher()[0]
        assert name.startswith(("ECDHE-", "DHE-")), name
        assert "GCM" in name or "CHACHA20" in name, name
        c.hello()


def test_tls12_cbc_and_plain_rsa_refused(sub_server):
    """io/tls.h: TLS 1.2 suites are ECDHE/DHE with AES-GCM or ChaCha20 only."""
    for ciphers in ("AES256-SHA:AES128-SHA:AES128-SHA256:AES256-GCM-SHA384",
                    "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA",
                    "DES-CBC3-SHA:ECDHE-RSA-DES-CBC3-SHA:RC4-SHA:NULL-SHA:aNULL"):
        context = client_context(None, maximum=ssl.TLSVersion.TLSv1_2)
        try:
            context.set_ciphers(ciphers + ":@SECLEVEL=0")
        except ssl.SSLError:
            continue     # this OpenSSL cannot even offer them
        c = SMTPTLS(sub_server.subs_port, context=context, read_greeting=False)
        try:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                c.wrap()
                pytest.fail("accepted %s with client list %s" % (c.sock.cipher(), ciphers))
        finally:
            c.close()


@pytest.mark.parametrize("which", ["subs_port", "sub_port"])
def test_tls13_accepted(sub_server, pki, which):
    context = ctx(pki, minimum=ssl.TLSVersion.TLSv1_3)
    with _handshake(getattr(sub_server, which), context, which == "sub_port") as c:
        assert c.sock.version() == "TLSv1.3"
        c.hello()


# ---------------------------------------------------------------- SNI


@pytest.mark.parametrize("sni,want", [
    (None, "mail"),                 # no SNI: the first certificate
    (HOSTNAME, "mail"),
    (OTHER_NAME, "other"),
    (WILD_NAME, "other"),           # *.wild.example.org
    ("unknown.example.net", "mail"),  # no match: the default
])
@pytest.mark.parametrize("which", ["subs_port", "sub_port"])
def test_sni_selects_certificate(sub_server, pki, sni, want, which):
    context = client_context(None)       # see what is presented, verify below
    with _handshake(getattr(sub_server, which), context, which == "sub_port",
                    server_hostname=sni) as c:
        der = c.sock.getpeercert(binary_form=True)
        assert der == cert_der(pki[want + "_cert"]), \
            "SNI %r: got a certificate other than %s.pem" % (sni, want)
        c.hello()
    if sni is not None and sni != "unknown.example.net":
        # and it verifies for that name against the test CA
        with _handshake(getattr(sub_server, which), ctx(pki), which == "sub_port",
                        server_hostname=sni) as c:
            c.hello()


# ---------------------------------------------------------------- self-signed default


def _cert_text(path):
    return subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(path)],
                          capture_output=True, text=True, timeout=30, check=True).stdout


def test_selfsigned_certificate_created_at_first_start(make_server):
    s = make_submission_server(make_server, pki=None)
    tls_dir = s.data_dir / "tls"
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    assert cert.is_file() and key.is_file(), "no self-signed certificate in %s: %s" % (
        tls_dir, list(tls_dir.iterdir()) if tls_dir.is_dir() else "missing")
    assert key.stat().st_mode & 0o077 == 0, "key.pem is group/other accessible: %o" % key.stat().st_mode
    text = _cert_text(cert)
    assert "CN = %s" % HOSTNAME in text or "CN=%s" % HOSTNAME in text, text
    assert "DNS:%s" % HOSTNAME in text, text
    first = cert_der(cert)
    # It is what the listeners present, and it verifies as its own anchor.
    context = client_context(cert)
    with SMTPTLS(s.subs_port, implicit=True, context=context) as c:
        assert c.sock.getpeercert(binary_form=True) == first
        c.hello()
    with SMTPTLS(s.sub_port, context=client_context(None)) as c:
        c.hello()
        c.starttls()
        assert c.sock.getpeercert(binary_form=True) == first
    # A restart keeps it.
    assert s.stop() == 0
    s.start()
    assert cert_der(cert) == first, "the self-signed certificate was replaced at restart"
    with SMTPTLS(s.subs_port, implicit=True, context=context) as c:
        assert c.sock.getpeercert(binary_form=True) == first


# ---------------------------------------------------------------- failed and stalled handshakes


def _closed_without_smtp(sock, timeout):
    """Read until close; return (bytes, seconds). Fails if still open."""
    sock.settimeout(timeout)
    t0 = time.monotonic()
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("connection still open after %.1fs; got %r" % (timeout, data))
    return data, time.monotonic() - t0


def _assert_no_plaintext_reply(data):
    # A TLS alert record (content type 21) is allowed; an SMTP reply is not.
    assert data == b"" or data[:1] == b"\x15", "plaintext sent on a failed handshake: %r" % data


def test_implicit_tls_plaintext_client_dropped(sub_server):
    s = socket.create_connection(("127.0.0.1", sub_server.subs_port), timeout=10)
    try:
        s.sendall(b"EHLO plain.example.net\r\nMAIL FROM:<a@b.test>\r\n")
        data, _ = _closed_without_smtp(s, 10)
        _assert_no_plaintext_reply(data)
    finally:
        s.close()


def test_starttls_garbage_handshake_dropped(sub_server):
    c = SMTPTLS(sub_server.sub_port)
    try:
        c.hello()
        c.cmd_expect("STARTTLS", 220, "2.0.0")
        c.sock.sendall(b"\x16\x03\x01\x00\x05hello" + b"\xff" * 64 + b"\r\nQUIT\r\n")
        data, _ = _closed_without_smtp(c.sock, 10)
        _assert_no_plaintext_reply(data)
    finally:
        c.close()


def test_stalled_handshakes_do_not_block_and_time_out(make_server, pki):
    s = make_submission_server(make_server, pki,
                               extra="limit timeout-tls 5\nlimit auth-delay 0\n")
    t0 = time.monotonic()
    silent = socket.create_connection(("127.0.0.1", s.subs_port), timeout=15)
    partial = socket.create_connection(("127.0.0.1", s.subs_port), timeout=15)
    # the first bytes of a ClientHello record that claims 512 octets
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 20)
    garbage = socket.create_connection(("127.0.0.1", s.subs_port), timeout=15)
    garbage.sendall(b"\x00" * 3)
    stalled_starttls = SMTPTLS(s.sub_port)
    stalled_starttls.hello()
    stalled_starttls.cmd_expect("STARTTLS", 220, "2.0.0")
    t_starttls = time.monotonic()
    try:
        # Others are served promptly meanwhile, on every listener.
        for _ in range(3):
            t1 = time.monotonic()
            with SMTPTLS(s.subs_port, implicit=True, context=ctx(pki)) as c:
                c.hello()
                assert c.auth_plain("carol@example.test", "carol-Secret-1").code == 235, c.dump()
                c.cmd_expect("QUIT", 221)
            with SMTPTLS(s.sub_port, context=ctx(pki)) as c:
                c.hello()
                c.starttls()
                c.hello()
            with SMTPTLS(s.port) as c:
                c.hello()
            assert time.monotonic() - t1 < 3.0, \
                "sessions took %.1fs while handshakes stall" % (time.monotonic() - t1)
        # The stalled ones are dropped after timeout-tls (5 s), not later.
        for name, sock, start in (("silent", silent, t0), ("partial", partial, t0),
                                  ("garbage", garbage, t0),
                                  ("after STARTTLS", stalled_starttls.sock, t_starttls)):
            remaining = max(0.5, start + 12 - time.monotonic())
            data, _ = _closed_without_smtp(sock, remaining)
            took = time.monotonic() - start
            low = 0.0 if name == "garbage" else 4.0    # garbage may be dropped at once
            assert low <= took <= 12.0, "%s: dropped after %.1fs, want ~5s" % (name, took)
            if name != "garbage":
                _assert_no_plaintext_reply(data)
    finally:
        for sock in (silent, partial, garbage):
            sock.close()
        stalled_starttls.close()


# ---------------------------------------------------------------- reload


def test_sighup_swaps_certificates(make_server, pki):
    """io/tls.h: SIGHUP installs a new certificate set; handshakes and
    sessions on the old one carry on."""
    import signal
    s = make_submission_server(make_server, pki, extra="limit auth-delay 0\n")
    old = SMTPTLS(s.subs_port, implicit=True, context=ctx(pki))
    try:
        assert old.sock.getpeercert(binary_form=True) == cert_der(pki["mail_cert"])
        old.hello()
        # other.example.org becomes the default (first) certificate
        text = s.config_path.read_text()
        mail_line = "tls-certificate %s %s\n" % (pki["mail_cert"], pki["mail_key"])
        other_line = "tls-certificate %s %s\n" % (pki["other_cert"], pki["other_key"])
        assert mail_line in text and other_line in text
        text = text.replace(mail_line, "").replace(other_line, other_line + mail_line)
        s.config_path.write_text(text)
        mark = len(s.log())
        s.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        got = None
        while time.monotonic() < deadline:
            with SMTPTLS(s.subs_port, implicit=True, context=client_context(None),
                         server_hostname=None) as c:
                got = c.sock.getpeercert(binary_form=True)
            if got == cert_der(pki["other_cert"]):
                break
            time.sleep(0.2)
        assert got == cert_der(pki["other_cert"]), \
            "default certificate not swapped after SIGHUP\n" + s.log()[mark:][-3000:]
        # SNI still finds the first one by name
        with SMTPTLS(s.sub_port, context=ctx(pki)) as c:
            c.hello()
            c.starttls()
            assert c.sock.getpeercert(binary_form=True) == cert_der(pki["mail_cert"])
        # the session opened before the reload still works
        old.cmd_expect("NOOP", 250, "2.0.0")
        check(old.auth_plain("carol@example.test", "carol-Secret-1"), 235, "2.7.0", None, old)
        old.cmd_expect("QUIT", 221)
    finally:
        old.close()


def test_bad_certificate_refused_at_start(make_server, pki, tmp_path):
    """A key that does not match its certificate is a start-up error naming
    the file, not a server without TLS."""
    s = make_submission_server(make_server, None, start=False, extra=(
        "tls-certificate %s %s\n" % (pki["mail_cert"], pki["other_key"])))
    with pytest.raises(AssertionError) as ei:
        s.start(timeout=5)
    assert s.proc is None or s.proc.poll() is not None
    log = s.log()
    assert str(pki["mail_cert"]) in log or str(pki["other_key"]) in log, log[-2000:]
    assert "exited" in str(ei.value)
