"""Shared helpers for the estafeta integration tests.

Everything here talks to the real binary over loopback and looks at the real
files it writes; nothing is mocked. See conftest.py for the fixtures.
"""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOSTNAME = "mail.example.test"

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
)


def estafeta_bin():
    b = os.environ.get("ESTAFETA_BIN")
    if b:
        return Path(b)
    return REPO / "build" / "asan" / "estafeta"


def require_binary():
    import pytest
    b = estafeta_bin()
    if not b.exists():
        pytest.skip("estafeta binary not found at %s (set ESTAFETA_BIN or "
                    "run make VARIANT=asan)" % b)
    return b


def finish_server(server):
    """Stop a server; return a list of problems (sanitizer reports, bad exit)."""
    was_running = server.running()
    rc = server.stop()
    problems = []
    reports = server.sanitizer_reports()
    if reports:
        problems.append("sanitizer report(s) %s in server log" % reports)
    if was_running and rc is None:
        problems.append("server did not exit within 15 s of SIGTERM")
    elif was_running and rc != 0:
        problems.append("server exited %s on SIGTERM (expected 0)" % rc)
    return problems


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


BASE_CONFIG = """\
hostname {hostname}
data-dir {data_dir}
log-level debug
listen 127.0.0.1:{port} mx
domain example.test
domain catch.test catch-all=demo@example.test
user demo@example.test
user alice@example.test
user bob@example.test
alias team@example.test alice@example.test, bob@example.test
alias fwd@example.test someone@remote.test
postmaster demo@example.test
recipient-delimiter +
vrfy {vrfy}
expn {expn}
limit message-size 1M
limit smtp-bad-commands 5
"""


# estafeta refuses to run as root without run-as (it never parses network
# input as root). When the tests run as root the server switches to this
# user; it then needs to reach the data dir and re-read the config on SIGHUP.
RUN_AS = "nobody"


def make_config(data_dir, port, vrfy=False, expn=False, extra=""):
    text = BASE_CONFIG.format(hostname=HOSTNAME, data_dir=data_dir, port=port,
                              vrfy="on" if vrfy else "off",
                              expn="on" if expn else "off")
    if os.geteuid() == 0:
        text += "run-as %s\n" % RUN_AS
    if "dns-resolver" not in extra:
        # Nothing listens on 127.0.0.1:9: every lookup fails at once
        # (temporarily), so mail to other domains waits in the queue and no
        # query ever leaves loopback. Relay tests run their own DNS server.
        text += "dns-resolver 127.0.0.1@9\n"
    return text + extra


def make_traversable(path):
    """As root: let the run-as user traverse every directory from path up to
    the first one it can already traverse (pytest's temp dirs are 0700)."""
    if os.geteuid() != 0:
        return
    p = Path(path).resolve()
    for d in [p] + list(p.parents):
        mode = d.stat().st_mode
        if not mode & 0o001:
            os.chmod(d, (mode & 0o7777) | 0o001)


def give_to_server(path):
    """As root: hand a directory the test created inside the data dir to the
    run-as user, as the server would have created it."""
    if os.geteuid() != 0:
        return
    import pwd
    pw = pwd.getpwnam(RUN_AS)
    os.chown(path, pw.pw_uid, pw.pw_gid)


# ---------------------------------------------------------------- server


class Server:
    """One estafeta process on a private data dir and port."""

    def __init__(self, root, vrfy=False, expn=False, extra="", name="estafeta",
                 env=None):
        self.root = Path(root)
        self.env = dict(env or {})
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(exist_ok=True)
        make_traversable(self.root)
        self.port = free_port()
        self.config_path = self.root / "estafeta.conf"
        self.config_path.write_text(make_config(self.data_dir, self.port,
                                                vrfy, expn, extra))
        self.log_path = self.root / "server.log"
        self.proc = None
        self.exit_codes = []   # return codes of earlier runs (kill/stop)

    # -- process control

    def start(self, timeout=10.0):
        binary = estafeta_bin()
        env = dict(os.environ)
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        env.update(self.env)
        logf = open(self.log_path, "ab")
        logf.write(b"---- test harness: starting server ----\n")
        logf.flush()
        self.proc = subprocess.Popen(
            [str(binary), "serve", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
            cwd=str(self.root))
        logf.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "server exited with %s before it was ready\n%s"
                    % (self.proc.returncode, self.log_tail()))
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            except OSError as e:
                last = e
                time.sleep(0.05)
                continue
            try:
                s.settimeout(max(0.5, deadline - time.monotonic()))
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(1024)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"220 "):
                    try:
                        s.sendall(b"QUIT\r\n")
                        s.recv(1024)
                    except OSError:
                        pass
                    return
                last = "greeting %r" % data
            except OSError as e:
                last = e
            finally:
                s.close()
            time.sleep(0.05)
        raise AssertionError("server not ready after %.0fs (last: %s)\n%s"
                             % (timeout, last, self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit status (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_codes.append("hung on SIGTERM")
                self.proc = None
                return None
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        self.proc = None
        return rc

    def kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.exit_codes.append("SIGKILL")
            self.proc = None

    # -- logs

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=80):
        text = self.log().splitlines()
        return "---- server log (%s, last %d lines) ----\n%s" % (
            self.log_path, min(lines, len(text)), "\n".join(text[-lines:]))

    def sanitizer_reports(self):
        return [m for m in SANITIZER_MARKERS if m in self.log()]

    # -- files

    def maildir(self, address):
        local, domain = address.split("@")
        return self.data_dir / "mail" / domain / local

    def queue_dir(self):
        return self.data_dir / "queue"

    def queue_files(self, sub):
        d = self.queue_dir() / sub
        if not d.exists():
            return []
        return [p for p in d.rglob("*") if p.is_file()]

    def log_records(self, images=True):
        """Live records of the queue's accept log (doc/queue.md "The accept
        log"): [(id, queue-file image or None)], records without a done
        line. Reads only the record headers unless images is true."""
        d = self.queue_dir() / "log"
        out = []
        if not d.is_dir():
            return out
        for seg in sorted(p for p in d.iterdir() if "." not in p.name):
            try:
                done_path = d / (seg.name + ".done")
                done = (set(done_path.read_text(errors="replace").split("\n"))
                        if done_path.exists() else set())
                seq = int(seg.name, 16)
                with open(seg, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    off = 0
                    # 64-byte record headers; a record of the file's earlier
                    # life as another segment (a reused spare) ends the scan.
                    while off + 64 <= size:
                        f.seek(off)
                        h = f.read(64)
                        if (len(h) < 64 or h[:8] != b"EQLOGR02"
                                or int.from_bytes(h[16:24], "big") != seq):
                            break
                        n = int.from_bytes(h[8:16], "big")
                        qid = h[24:48].rstrip(b"\0").decode(errors="replace")
                        if off + 64 + n > size:
                            break
                        if qid not in done:
                            out.append((qid, f.read(n) if images else None))
                        off += 64 + n
            except FileNotFoundError:
                continue
        return out

    def queued(self, qid):
        """Whether qid is committed in the queue: a file in msg/ or a live
        record of the accept log."""
        return ((self.queue_dir() / "msg" / qid).is_file()
                or qid in [i for i, _ in self.log_records(images=False)])

    def messages(self, address):
        """[(path, bytes)] in address's new/ (and cur/)."""
        out = []
        for sub in ("new", "cur"):
            d = self.maildir(address) / sub
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    if p.is_file():
                        try:
                            out.append((p, p.read_bytes()))
                        except FileNotFoundError:
                            pass
        return out

    def all_messages(self):
        """[(address, path, bytes)] for every Maildir under mail/."""
        out = []
        base = self.data_dir / "mail"
        if not base.is_dir():
            return out
        for p in base.rglob("*"):
            if p.is_file() and p.parent.name in ("new", "cur"):
                rel = p.relative_to(base).parts
                addr = "%s@%s" % (rel[1], rel[0]) if len(rel) >= 4 else str(p)
                try:
                    out.append((addr, p, p.read_bytes()))
                except FileNotFoundError:
                    pass
        return out

    def wait_messages(self, address, token, count=1, timeout=10.0):
        """Wait until `count` messages containing token are in address's
        Maildir; return their contents (exactly count expected: a few more
        seconds are not waited for, the caller asserts the count)."""
        if isinstance(token, str):
            token = token.encode()
        deadline = time.monotonic() + timeout
        found = []
        while time.monotonic() < deadline:
            found = [m for _, m in self.messages(address) if token in m]
            if len(found) >= count:
                return found
            if not self.running():
                break
            time.sleep(0.05)
        raise AssertionError(
            "expected %d message(s) with %r in %s, found %d\nmaildir: %s\n"
            "queue msg/: %s\n%s"
            % (count, token, address, len(found),
               list_tree(self.maildir(address)),
               [str(p) for p in self.queue_files("msg")], self.log_tail()))

    def wait_queue_empty(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (not self.queue_files("msg") and not self.queue_files("incoming")
                    and not self.log_records(images=False)):
                return
            time.sleep(0.05)
        raise AssertionError("queue not empty after %.0fs: msg=%s incoming=%s log=%s\n%s"
                             % (timeout, self.queue_files("msg"),
                                self.queue_files("incoming"),
                                [i for i, _ in self.log_records()], self.log_tail()))

    def wait_queue_without(self, token, timeout=10.0):
        """Wait until no queued message holds token. (Not "until the queue
        is empty": DSNs for remote senders of earlier tests wait there for a
        relay that the tests do not give them.)"""
        if isinstance(token, str):
            token = token.encode()
        deadline = time.monotonic() + timeout
        while True:
            held = []
            for p in self.queue_files("msg") + self.queue_files("incoming"):
                try:
                    if token in p.read_bytes():
                        held.append(p)
                except FileNotFoundError:
                    pass
            held += ["log:" + qid for qid, image in self.log_records() if token in image]
            if not held:
                return
            if time.monotonic() > deadline:
                raise AssertionError("message with %r still queued after %.0fs: %s\n%s"
                                     % (token, timeout, held, self.log_tail()))
            time.sleep(0.05)

    def assert_not_delivered(self, token):
        """Nothing holding token is in any Maildir. Waits for the queue to
        drain first: a message is committed before the server replies, so a
        wrongly accepted one is in queue/msg/ or already delivered."""
        if isinstance(token, str):
            token = token.encode()
        self.wait_queue_without(token)
        bad = [(a, str(p)) for a, p, m in self.all_messages() if token in m]
        assert not bad, "message with %r was delivered: %s\n%s" % (
            token, bad, self.log_tail())


def list_tree(path):
    path = Path(path)
    if not path.exists():
        return "(%s does not exist)" % path
    return [str(p.relative_to(path)) for p in sorted(path.rglob("*"))]


# ---------------------------------------------------------------- raw SMTP


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines          # text after "NNN-" / "NNN "

    @property
    def text(self):
        return self.lines[0] if self.lines else ""

    @property
    def enh(self):
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)", self.text)
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.code, self.lines)


class ConnectionClosed(Exception):
    pass


class SMTPRaw:
    """A byte-exact SMTP client: send what you like, read replies in order."""

    def __init__(self, port, timeout=10.0, read_greeting=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.transcript = []
        self.greeting = self.reply() if read_greeting else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(b"C: " + data[:300] + (b"..." if len(data) > 300 else b""))
        self.sock.sendall(data)

    def _readline(self):
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed("connection closed; partial %r; transcript:\n%s"
                                       % (self.buf, self.dump()))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.transcript.append(b"S: " + line + b"\n")
        assert line.endswith(b"\r"), "reply line without CRLF: %r" % line
        return line[:-1].decode("utf-8", errors="replace")

    def reply(self):
        lines = []
        while True:
            line = self._readline()
            m = re.match(r"^(\d{3})([ -])(.*)$", line) or re.match(r"^(\d{3})()()$", line)
            assert m, "malformed reply line %r\n%s" % (line, self.dump())
            code = int(m.group(1))
            if lines:
                assert code == lines[0][0], "code changed inside a multi-line reply: %r" % line
            lines.append((code, m.group(3)))
            if m.group(2) != "-":
                return Reply(code, [t for _, t in lines])

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply()

    def expect(self, code, enh=None, text=None):
        r = self.reply()
        check(r, code, enh, text, self)
        return r

    def cmd_expect(self, line, code, enh=None, text=None):
        r = self.cmd(line)
        check(r, code, enh, text, self)
        return r

    def expect_closed(self, timeout=5.0):
        """The server closes the connection without sending anything more."""
        self.sock.settimeout(timeout)
        extra = self.buf
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                extra += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError("connection still open after %.0fs; got %r\n%s"
                                 % (timeout, extra, self.dump()))
        assert extra == b"", "unexpected bytes before close: %r\n%s" % (extra, self.dump())

    def read_all_until_close(self, timeout=10.0):
        """Every reply until the server closes; returns the list."""
        out = []
        while True:
            try:
                out.append(self.reply())
            except ConnectionClosed:
                return out

    def dump(self):
        return b"".join(x if x.endswith(b"\n") else x + b"\n"
                        for x in self.transcript).decode("utf-8", errors="replace")

    def hello(self, name="client.example.net"):
        r = self.cmd("EHLO " + name)
        check(r, 250, None, None, self)
        return r

    def start_mail(self, sender="sender@remote.test", rcpts=("demo@example.test",),
                   mail_params=""):
        self.cmd_expect("MAIL FROM:<%s>%s" % (sender, mail_params), 250, "2.1.0")
        for r in rcpts:
            self.cmd_expect("RCPT TO:<%s>" % r, 250, "2.1.5")

    def send_data(self, body):
        """DATA, the already dot-stuffed body (bytes, ending CRLF or empty),
        '.', and return the end-of-data reply."""
        self.cmd_expect("DATA", 354)
        self.send(body + b".\r\n")
        return self.reply()


def check(r, code, enh=None, text=None, client=None):
    ctx = ("\ntranscript:\n" + client.dump()) if client is not None else ""
    assert r.code == code, "expected %d, got %r%s" % (code, r, ctx)
    if enh is not None:
        assert r.enh == enh, "expected enhanced code %s, got %r%s" % (enh, r, ctx)
    if text is not None:
        assert text in "\n".join(r.lines), "expected %r in %r%s" % (text, r, ctx)


def qid_of(reply_text):
    m = re.search(r"queued as ([0-9A-Za-z]+)", reply_text)
    assert m, "no queue id in %r" % reply_text
    return m.group(1)


# ---------------------------------------------------------------- stored messages


def split_stored(data):
    """Split a delivered message into (return_path_value, received_header_bytes,
    rest). Asserts the layout: first line Return-Path:, then one Received:
    field (with its continuation lines); rest is the message as sent."""
    assert data.startswith(b"Return-Path: "), "first line is not Return-Path: %r" % data[:200]
    first, rest = data.split(b"\r\n", 1)
    rp = first[len(b"Return-Path: "):]
    assert b"\n" not in first and b"\r" not in first
    assert rest.startswith(b"Received: "), "second field is not Received: %r" % rest[:300]
    lines = []
    while True:
        line, rest = rest.split(b"\r\n", 1)
        lines.append(line)
        if not rest[:1] in (b" ", b"\t"):
            break
    received = b"\r\n".join(lines) + b"\r\n"
    return rp.decode("utf-8", errors="replace"), received, rest


def unfold(header):
    text = header.decode("utf-8", errors="replace")
    return re.sub(r"\r\n[ \t]+", " ", text).rstrip("\r\n")


def assert_crlf_only(data):
    assert b"\r\n" in data or data == b""
    stripped = data.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped, "bare CR or LF in stored message"


def assert_stored(data, sender, body, qid=None, helo=None, rcpt=None, with_=None):
    """Check the full layout of a stored message."""
    assert_crlf_only(data)
    rp, received, rest = split_stored(data)
    assert rp == "<%s>" % sender, "Return-Path %r, expected <%s>" % (rp, sender)
    assert rest == body, ("stored body differs from what was sent:\n"
                          "sent   %r\nstored %r" % (body[:400], rest[:400]))
    r = unfold(received)
    assert "by %s" % HOSTNAME in r, r
    if qid is not None:
        assert re.search(r"\bid %s\b" % re.escape(qid), r), "no 'id %s' in %r" % (qid, r)
    if helo is not None:
        assert r.startswith("Received: from %s " % helo), r
    if rcpt is not None:
        assert "for <%s>" % rcpt in r, r
    if with_ is not None:
        assert re.search(r"\bwith %s\b" % with_, r), r
    assert re.search(r";\s*\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", r), \
        "no RFC 5322 date in %r" % r
    # only printable ASCII plus folding in the added header
    assert all(32 <= b < 127 or b in (9, 13, 10) for b in received), received
    return rp, received, rest


def maildir_name_ok(path, data):
    m = re.search(r",S=(\d+)", path.name)
    return m is not None and int(m.group(1)) == len(data)


def token():
    return "tok%d%s" % (time.monotonic_ns(), os.urandom(4).hex())


def wait_for_log(server, pattern, timeout=10.0, start=0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log()[start:]
        if re.search(pattern, text):
            return text
        time.sleep(0.05)
    raise AssertionError("no log line matching %r\n%s" % (pattern, server.log_tail()))


# ---------------------------------------------------------------- TLS, AUTH, submission (issue 3)
#
# Used by test_tls.py, test_auth.py, test_submission.py and test_testssl.py.
# Certificates are made with the openssl command; every connection is to
# loopback.

import base64 as _b64
import hashlib as _hashlib
import hmac as _hmac
import ssl as _ssl

OTHER_NAME = "other.example.org"          # the second certificate's name (SNI)
WILD_NAME = "host.wild.example.org"       # matches the second one's *.wild.example.org

PASSWORDS = {
    "carol@example.test": "carol-Secret-1",
    "dave@example.test": "dave-Pa55:word with space",
}


def _openssl(*args, cwd):
    p = subprocess.run(["openssl"] + list(args), cwd=str(cwd), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, "openssl %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr)
    return p.stdout


def make_pki(d):
    """A test CA and two server certificates signed by it, in directory d:
    mail.pem/mail.key (RSA 2048, CN and SAN mail.example.test, localhost,
    IP 127.0.0.1) and other.pem/other.key (EC P-256, SAN other.example.org
    and *.wild.example.org). Returns a dict of paths. Keys are 0600 and,
    as root, owned by the run-as user (as a deployment's would be)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    make_traversable(d)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "30", "-subj", "/CN=Estafeta Test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    specs = [
        ("mail", ["-newkey", "rsa:2048"], "/CN=" + HOSTNAME,
         "DNS:%s,DNS:localhost,IP:127.0.0.1" % HOSTNAME),
        ("other", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
         "/CN=" + OTHER_NAME, "DNS:%s,DNS:*.wild.example.org" % OTHER_NAME),
    ]
    out = {"dir": d, "ca": d / "ca.pem"}
    for name, keyopts, subj, san in specs:
        (d / (name + ".ext")).write_text(
            "subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n" % san)
        _openssl("req", "-new", *keyopts, "-nodes", "-keyout", name + ".key",
                 "-out", name + ".csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", name + ".pem", "-days", "30",
                 "-extfile", name + ".ext", cwd=d)
        key = d / (name + ".key")
        os.chmod(key, 0o600)
        give_to_server(key)
        out[name + "_cert"] = d / (name + ".pem")
        out[name + "_key"] = key
    return out


def cert_der(path):
    """DER bytes of the first certificate in a PEM file."""
    return _ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def client_context(ca=None, minimum=None, maximum=None):
    """A client TLS context that verifies against ca (or verifies nothing
    when ca is None)."""
    if ca is not None:
        ctx = _ssl.create_default_context(cafile=str(ca))
    else:
        ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def submission_extra(pki=None, extra=""):
    """(config text, submission port, submissions port): two more listeners,
    the users file, and (when pki is given) both test certificates, the
    mail.example.test one first (the default)."""
    sub, subs = free_port(), free_port()
    while subs == sub:
        subs = free_port()
    text = ("listen 127.0.0.1:%d submission\nlisten 127.0.0.1:%d submissions\n"
            "users-file users\n" % (sub, subs))
    if pki is not None:
        text += "tls-certificate %s %s\n" % (pki["mail_cert"], pki["mail_key"])
        text += "tls-certificate %s %s\n" % (pki["other_cert"], pki["other_key"])
    return text + extra, sub, subs


def add_user(server, address, password, cram=False):
    """`estafeta user add ADDRESS -c CONFIG [--cram-md5]`, password on stdin."""
    args = [str(estafeta_bin()), "user", "add", address]
    if cram:
        args.append("--cram-md5")
    args += ["-c", str(server.config_path)]
    p = subprocess.run(args, input=password + "\n", capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, "user add %s failed (%d): %s%s" % (
        address, p.returncode, p.stdout, p.stderr)
    users = server.data_dir / "users"
    if users.exists():
        give_to_server(users)
    return p


def make_submission_server(factory, pki=None, extra="", users=None, cram_users=(),
                           start=True, **kw):
    """A server with mx + submission + submissions listeners and users with
    passwords (default: PASSWORDS). factory(start=False, extra=...) makes the
    Server (make_server, or a lambda around Server). Sets .sub_port and
    .subs_port."""
    text, sub, subs = submission_extra(pki, extra)
    s = factory(start=False, extra=text, **kw)
    s.sub_port, s.subs_port = sub, subs
    s.pki = pki
    for addr, pw in (PASSWORDS if users is None else users).items():
        add_user(s, addr, pw, cram=addr in cram_users)
    if start:
        s.start()
    return s


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return _b64.b64encode(data).decode()


def unb64(text):
    return _b64.b64decode(text.encode(), validate=True)


class SMTPTLS(SMTPRaw):
    """SMTPRaw that can start TLS (STARTTLS or implicit) and authenticate.

    context: the client TLS context; server_hostname: SNI and the name
    checked (None sends no SNI); source: local address to connect from."""

    def __init__(self, port, timeout=10.0, implicit=False, context=None,
                 server_hostname=HOSTNAME, source=None, read_greeting=True):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.transcript = []
        self.greeting = None
        self.context = context if context is not None else client_context()
        self.server_hostname = server_hostname
        if implicit:
            self.wrap()
        if read_greeting:
            self.greeting = self.reply()

    def wrap(self, context=None, server_hostname="default"):
        """Do the TLS handshake on the socket (nothing may be buffered)."""
        assert self.buf == b"", "plaintext bytes left before the handshake: %r\n%s" % (
            self.buf, self.dump())
        ctx = context if context is not None else self.context
        name = self.server_hostname if server_hostname == "default" else server_hostname
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)
        self.transcript.append(b"-- TLS %s %s --" % (
            self.sock.version().encode(), self.sock.cipher()[0].encode()))
        return self.sock

    def starttls(self, context=None, server_hostname="default"):
        self.cmd_expect("STARTTLS", 220, "2.0.0")
        return self.wrap(context, server_hostname)

    def ehlo_keywords(self, name="client.example.net"):
        """EHLO; returns {KEYWORD: [params]} of the 250 lines after the first."""
        r = self.hello(name)
        out = {}
        for line in r.lines[1:]:
            words = line.split()
            if words:
                out[words[0].upper()] = words[1:]
        return out

    # -- AUTH

    def auth_plain(self, user, password, authzid="", initial=True):
        resp = b64(authzid.encode() + b"\0" + user.encode() + b"\0" + password.encode())
        if initial:
            return self.cmd("AUTH PLAIN " + resp)
        r = self.cmd("AUTH PLAIN")
        if r.code != 334:
            return r
        assert r.text == "", "PLAIN without initial response: expected an empty " \
                             "challenge '334 ', got %r\n%s" % (r, self.dump())
        return self.cmd(resp)

    def auth_login(self, user, password, initial=False):
        if initial:
            r = self.cmd("AUTH LOGIN " + b64(user))
        else:
            r = self.cmd("AUTH LOGIN")
            if r.code != 334:
                return r
            r = self.cmd(b64(user))
        if r.code != 334:
            return r
        return self.cmd(b64(password))

    def auth_cram(self, user, password):
        r = self.cmd("AUTH CRAM-MD5")
        if r.code != 334:
            return r, None
        challenge = unb64(r.text)
        digest = _hmac.new(password.encode(), challenge, _hashlib.md5).hexdigest()
        return self.cmd(b64("%s %s" % (user, digest))), challenge

    def auth_scram(self, user, password, initial=True, tamper_proof=False, cnonce=None):
        """SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding.
        Returns (final reply, info) where info holds the server-first
        fields and whether the server signature was received and valid."""
        cnonce = cnonce or _b64.b64encode(os.urandom(18)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        first_bare = "n=%s,r=%s" % (name, cnonce)
        first = "n,," + first_bare
        info = {"server_signature": None}
        if initial:
            r = self.cmd("AUTH SCRAM-SHA-256 " + b64(first))
        else:
            r = self.cmd("AUTH SCRAM-SHA-256")
            if r.code != 334:
                return r, info
            assert r.text == "", "expected an empty challenge, got %r" % r
            r = self.cmd(b64(first))
        if r.code != 334:
            return r, info
        server_first = unb64(r.text).decode()
        fields = dict(kv.split("=", 1) for kv in server_first.split(","))
        info.update(fields)
        info["server_first"] = server_first
        assert fields["r"].startswith(cnonce) and len(fields["r"]) > len(cnonce), \
            "server nonce does not extend ours: %r" % server_first
        salt = _b64.b64decode(fields["s"])
        iters = int(fields["i"])
        salted = _hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iters)
        client_key = _hmac.new(salted, b"Client Key", _hashlib.sha256).digest()
        stored_key = _hashlib.sha256(client_key).digest()
        final_wo_proof = "c=biws,r=" + fields["r"]
        auth_msg = ",".join([first_bare, server_first, final_wo_proof]).encode()
        client_sig = _hmac.new(stored_key, auth_msg, _hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        if tamper_proof:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        server_key = _hmac.new(salted, b"Server Key", _hashlib.sha256).digest()
        expect_sig = _hmac.new(server_key, auth_msg, _hashlib.sha256).digest()
        r = self.cmd(b64(final_wo_proof + ",p=" + _b64.b64encode(proof).decode()))
        final_data = None
        if r.code == 334:
            # RFC 4422 / 4954: additional data with success comes as a
            # challenge, answered with an empty line.
            final_data = unb64(r.text).decode()
            r = self.cmd("")
        elif r.code == 235 and r.text.split()[-1:] and r.text.split()[-1] not in \
                ("successful", "succeeded"):
            try:
                final_data = unb64(r.text.split()[-1]).decode()
            except Exception:
                final_data = None
        if final_data is not None:
            info["server_final"] = final_data
            if final_data.startswith("v="):
                info["server_signature"] = (_b64.b64decode(final_data[2:]) == expect_sig)
        return r, info


def received_of(stored):
    """The unfolded Received: field estafeta added (the second line on)."""
    return unfold(split_stored(stored)[1])


def header_section(data):
    return data.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def header_values(data, name):
    """Values of every field called name in the header section (unfolded)."""
    hs = unfold(header_section(data)).split("\r\n")
    out = []
    for line in hs:
        if line.lower().startswith(name.lower() + ":"):
            out.append(line[len(name) + 1:].strip())
    return out


def run_estafeta(server, *args, stdin=None, timeout=60):
    return subprocess.run([str(estafeta_bin())] + list(args) + ["-c", str(server.config_path)],
                          input=stdin, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- POP3 (issue 4)
#
# Used by test_pop3.py and test_store_index.py: a byte-exact POP3 client,
# a server with pop3/pop3s listeners and users with passwords, and mail
# put in over SMTP.


class POP3Raw:
    """A byte-exact POP3 client (RFC 1939, 2449, 2595, 5034): send what you
    like, read status lines and multi-line bodies in order.

    implicit: TLS from the first byte (pop3s); context: client TLS context
    (default verifies nothing); source: local address to connect from."""

    def __init__(self, port, timeout=10.0, implicit=False, context=None,
                 server_hostname=HOSTNAME, source=None, read_greeting=True):
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.transcript = []
        self.greeting = None
        self.context = context if context is not None else client_context()
        self.server_hostname = server_hostname
        if implicit:
            self.wrap()
        if read_greeting:
            self.greeting = self.line()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def dump(self):
        return b"".join(x if x.endswith(b"\n") else x + b"\n"
                        for x in self.transcript[-200:]).decode("utf-8", errors="replace")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(b"C: " + data[:300] + (b"..." if len(data) > 300 else b""))
        self.sock.sendall(data)

    def raw_line(self):
        """One line as bytes, without its CRLF (asserts the CRLF)."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed("connection closed; partial %r; transcript:\n%s"
                                       % (self.buf, self.dump()))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if len(self.transcript) < 5000:
            self.transcript.append(b"S: " + line[:300] + b"\n")
        assert line.endswith(b"\r"), "line without CRLF: %r\n%s" % (line, self.dump())
        return line[:-1]

    def line(self):
        return self.raw_line().decode("utf-8", errors="replace")

    def cmd(self, line):
        """Send one command line, return the status line (str)."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.line()

    def expect(self, exact):
        r = self.line()
        assert r == exact, "expected %r, got %r\n%s" % (exact, r, self.dump())
        return r

    def cmd_expect(self, line, exact):
        """The status line must be exactly `exact`."""
        r = self.cmd(line)
        assert r == exact, "%r: expected %r, got %r\n%s" % (line, exact, r, self.dump())
        return r

    def cmd_ok(self, line):
        r = self.cmd(line)
        assert r.startswith("+OK"), "%r: expected +OK, got %r\n%s" % (line, r, self.dump())
        return r

    def multi(self):
        """The lines of a multi-line body up to '.', byte-stuffing removed
        (bytes, without CRLF)."""
        out = []
        while True:
            line = self.raw_line()
            if line == b".":
                return out
            if line.startswith(b"."):
                line = line[1:]
            out.append(line)

    def multi_raw(self):
        """The lines of a multi-line body up to '.', as sent (still stuffed)."""
        out = []
        while True:
            line = self.raw_line()
            if line == b".":
                return out
            out.append(line)

    def cmd_multi(self, line, status="+OK"):
        """A command with a multi-line answer: (status line, body lines)."""
        r = self.cmd(line)
        assert r.startswith(status), "%r: expected %r, got %r\n%s" % (
            line, status, r, self.dump())
        return r, self.multi()

    def retr(self, n):
        """RETR n: the message as bytes (CRLF line ends, unstuffed)."""
        r = self.cmd("RETR %d" % n)
        assert r.startswith("+OK "), "RETR %d: %r\n%s" % (n, r, self.dump())
        lines = self.multi()
        return b"".join(x + b"\r\n" for x in lines), r

    def capa(self):
        _, lines = self.cmd_multi("CAPA")
        return [x.decode() for x in lines]

    def uidl(self):
        """[(n, unique id)] from UIDL."""
        _, lines = self.cmd_multi("UIDL")
        out = []
        for x in lines:
            n, u = x.decode().split(" ", 1)
            out.append((int(n), u))
        return out

    def list(self):
        _, lines = self.cmd_multi("LIST")
        return [tuple(int(v) for v in x.decode().split(" ")) for x in lines]

    def stat(self):
        r = self.cmd("STAT")
        m = re.match(r"^\+OK (\d+) (\d+)$", r)
        assert m, "STAT: %r\n%s" % (r, self.dump())
        return int(m.group(1)), int(m.group(2))

    def wrap(self, context=None, server_hostname="default"):
        assert self.buf == b"", "plaintext bytes left before the handshake: %r\n%s" % (
            self.buf, self.dump())
        ctx = context if context is not None else self.context
        name = self.server_hostname if server_hostname == "default" else server_hostname
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)
        self.transcript.append(b"-- TLS %s --" % self.sock.version().encode())
        return self.sock

    def stls(self, context=None):
        self.cmd_expect("STLS", "+OK Begin TLS negotiation")
        return self.wrap(context)

    def login(self, user, password):
        self.cmd_expect("USER " + user, "+OK Send your password")
        return self.cmd("PASS " + password)

    def login_ok(self, user, password):
        r = self.login(user, password)
        assert r == "+OK Logged in", "login %s: %r\n%s" % (user, r, self.dump())

    def quit(self):
        r = self.cmd("QUIT")
        return r

    # -- SASL (RFC 5034): "+ base64" continuations

    def auth_plain(self, user, password, authzid="", initial=True):
        resp = b64(authzid.encode() + b"\0" + user.encode() + b"\0" + password.encode())
        if initial:
            return self.cmd("AUTH PLAIN " + resp)
        r = self.cmd("AUTH PLAIN")
        if not r.startswith("+"):
            return r
        assert r in ("+ ", "+"), "PLAIN without initial response: expected an empty " \
            "continuation, got %r\n%s" % (r, self.dump())
        return self.cmd(resp)

    def auth_login(self, user, password):
        r = self.cmd("AUTH LOGIN")
        if not r.startswith("+ "):
            return r
        assert unb64(r[2:]).lower().startswith(b"user"), r
        r = self.cmd(b64(user))
        if not r.startswith("+ "):
            return r
        assert unb64(r[2:]).lower().startswith(b"pass"), r
        return self.cmd(b64(password))

    def auth_scram(self, user, password, initial=True, tamper_proof=False):
        """SCRAM-SHA-256 (RFC 5802, 7677) without channel binding; the same
        computation as SMTPTLS.auth_scram with POP3 framing. Returns
        (final status line, info)."""
        cnonce = _b64.b64encode(os.urandom(18)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        first_bare = "n=%s,r=%s" % (name, cnonce)
        first = "n,," + first_bare
        info = {"server_signature": None}
        if initial:
            r = self.cmd("AUTH SCRAM-SHA-256 " + b64(first))
        else:
            r = self.cmd("AUTH SCRAM-SHA-256")
            if not r.startswith("+"):
                return r, info
            assert r in ("+ ", "+"), "expected an empty continuation, got %r" % r
            r = self.cmd(b64(first))
        if not r.startswith("+ "):
            return r, info
        server_first = unb64(r[2:]).decode()
        fields = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert fields["r"].startswith(cnonce) and len(fields["r"]) > len(cnonce), \
            "server nonce does not extend ours: %r" % server_first
        salt = _b64.b64decode(fields["s"])
        salted = _hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(fields["i"]))
        client_key = _hmac.new(salted, b"Client Key", _hashlib.sha256).digest()
        stored_key = _hashlib.sha256(client_key).digest()
        final_wo_proof = "c=biws,r=" + fields["r"]
        auth_msg = ",".join([first_bare, server_first, final_wo_proof]).encode()
        client_sig = _hmac.new(stored_key, auth_msg, _hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        if tamper_proof:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        server_key = _hmac.new(salted, b"Server Key", _hashlib.sha256).digest()
        expect_sig = _hmac.new(server_key, auth_msg, _hashlib.sha256).digest()
        r = self.cmd(b64(final_wo_proof + ",p=" + _b64.b64encode(proof).decode()))
        if r.startswith("+ "):
            final = unb64(r[2:]).decode()
            info["server_final"] = final
            if final.startswith("v="):
                info["server_signature"] = _b64.b64decode(final[2:]) == expect_sig
            r = self.cmd("")
        return r, info

    def read_until_close(self, timeout=5.0):
        """Every byte the server still sends until it closes (raises if it
        stays open longer than timeout)."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return data
                data += chunk
        except (ConnectionResetError, _ssl.SSLError):
            return data
        except socket.timeout:
            raise AssertionError("connection still open after %.0fs; got %r\n%s"
                                 % (timeout, data[-500:], self.dump()))


def pop3_extra(pki=None, plaintext=True, auth_delay=0, extra=""):
    """(config text, pop3 port, pop3s port): the two POP3 listeners, the
    users file, the mail.example.test certificate when pki is given (else
    the self-signed default), 127.0.0.0/8 as a plaintext network unless
    plaintext is False, and auth-delay."""
    p, ps = free_port(), free_port()
    while ps == p:
        ps = free_port()
    text = ("listen 127.0.0.1:%d pop3\nlisten 127.0.0.1:%d pop3s\nusers-file users\n"
            % (p, ps))
    if pki is not None:
        text += "tls-certificate %s %s\n" % (pki["mail_cert"], pki["mail_key"])
    if plaintext:
        text += "auth-plaintext-networks 127.0.0.0/8\n"
    if auth_delay is not None:
        text += "limit auth-delay %d\n" % auth_delay
    return text + extra, p, ps


def make_pop3_server(factory, pki=None, plaintext=True, auth_delay=0, extra="",
                     users=None, start=True, **kw):
    """A server with mx + pop3 + pop3s listeners and users with passwords
    (default: PASSWORDS). factory(start=False, extra=..., **kw) makes the
    Server. Sets .pop3_port, .pop3s_port and .pki."""
    text, p, ps = pop3_extra(pki, plaintext, auth_delay, extra)
    s = factory(start=False, extra=text, **kw)
    s.pop3_port, s.pop3s_port, s.pki = p, ps, pki
    for addr, pw in (PASSWORDS if users is None else users).items():
        add_user(s, addr, pw)
    if start:
        s.start()
    return s


def smtp_send(server, rcpt, body, sender="sender@remote.test"):
    """Send one message (body: bytes, already dot-stuffed, ending CRLF) to
    rcpt over the mx listener; asserts 250 and returns the queue id."""
    with SMTPRaw(server.port) as c:
        c.hello()
        c.start_mail(sender, (rcpt,))
        r = c.send_data(body)
        check(r, 250, None, None, c)
        c.cmd("QUIT")
    return qid_of(r.text)


def dot_stuff(body):
    """SMTP transparency (RFC 5321 4.5.2) for a CRLF body."""
    lines = body.split(b"\r\n")
    return b"\r\n".join((b"." + x) if x.startswith(b".") else x for x in lines)


def maildir_uniques(server, address):
    """{unique id: file bytes} of address's INBOX (new/ and cur/): the base
    name before ':2,'."""
    return {p.name.split(":2,", 1)[0]: data for p, data in server.messages(address)}


def deliver_wait(server, rcpt, tok=None, body=None):
    """Send one message holding tok (default: a fresh token in its Subject)
    to rcpt over SMTP and wait until it is in the Maildir; returns (stored
    bytes, unique id). One at a time: the Maildir must get exactly one new
    file meanwhile."""
    tok = tok or token()
    if body is None:
        body = ("Subject: %s\r\nMessage-ID: <%s@test>\r\n\r\nbody of %s\r\n"
                % (tok, tok, tok)).encode()
    before = set(maildir_uniques(server, rcpt))
    smtp_send(server, rcpt, dot_stuff(body))
    server.wait_messages(rcpt, tok)
    new = {u: d for u, d in maildir_uniques(server, rcpt).items() if u not in before}
    assert len(new) == 1, "expected one new message, got %s" % list(new)
    (u, d), = new.items()
    return d, u


def pop3_uidl(unique):
    """The UIDL POP3 sends for a store unique id (doc/pop3.md): the id
    itself when it is 1..70 characters of 0x21..0x7E (RFC 1939 7), else
    "h" and the first 32 hex digits of its SHA-256."""
    if 1 <= len(unique) <= 70 and all(0x21 <= ord(ch) <= 0x7E for ch in unique):
        return unique
    return "h" + _hashlib.sha256(unique.encode("utf-8", "surrogateescape")).hexdigest()[:32]
