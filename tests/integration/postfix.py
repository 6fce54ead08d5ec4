"""A private Postfix instance (Debian's postfix package) as a real SMTP peer.

Used by test_postfix_peer.py (issue 5: estafeta relays to Postfix) and meant
for the benchmark (issue 6). Nothing under /etc or /var is touched: the
instance has its own config_directory (main.cf, master.cf, certificate),
queue_directory, data_directory, Maildir tree and log file, all under one
directory the caller gives (a pytest tmp dir).

    pf = Postfix(tmp_path / "postfix", mailboxes=["someone@example.net"],
                 tls=(cert, key))
    pf.start()                      # postfix -c DIR start; waits for 220
    ...                             # SMTP on pf.addr:pf.port
    pf.wait_messages("someone@example.net", 1)   # [bytes] from the Maildir
    pf.log()                        # Postfix's own log (maillog_file)
    pf.stop()                       # postfix -c DIR stop; kill -9 fallback

or `with Postfix(...) as pf:` (starts, and always stops on exit). Instances
still running when the interpreter exits are stopped by an atexit hook.

How it runs (what was found to work with Postfix 3.7 on Debian, as root):

 - `postfix -c DIR start` with a non-default config directory needs no
   entry in /etc/postfix/main.cf (alternate_config_directories is only
   checked for the set-gid commands postdrop/postqueue, which are not used
   here). meta_directory stays /etc/postfix and is only read
   (postfix-files, dynamicmaps.cf).
 - The queue directory is created (root-owned, 0755) by this module;
   `postfix start` runs `postfix-script check-fatal`, whose `post-install
   create-missing` makes the queue subdirectories (owned by postfix, public/
   and maildrop/ group postdrop) and the data_directory. No explicit
   `postfix set-permissions` is needed (it would also re-chmod the shared
   files under /usr, so it is not run). None of check-warn's complaints
   appear with this layout; they would only be logged, never stop the start.
 - The root directory is made traversable (o+x, as helpers.make_traversable
   does for estafeta) so that the virtual(8) delivery agent, running as the
   postfix user, reaches the Maildir base, which is owned by postfix.
 - Every service runs unchrooted (chroot column n), so nothing has to be
   copied into the queue directory.
 - Logging: maillog_file under the root directory, written by postlogd (the
   `postlog unix-dgram` service in master.cf); maillog_file_prefixes is set
   to the root directory, since Postfix refuses other prefixes than /var
   and /dev/stdout by default. The very first lines of `postfix start` go
   to syslog (absent here) before postlogd runs.
 - No DNS: smtpd_peername_lookup = no (clients show as unknown[ADDR]),
   myhostname/mydomain given, smtp_/lmtp_dns_support_level = disabled with
   native host lookups, and no mail ever leaves: every non-virtual transport
   is error:, so the smtp client is never run (no smtp/relay/lmtp services
   in master.cf); a recipient in any other domain is refused at RCPT with
   550 5.7.1. inet_protocols = ipv4.
 - Listening address: only the smtpd line of master.cf names ADDR:PORT.
   inet_interfaces stays 127.0.0.1 even when ADDR is another 127.0.0.x:
   Postfix refuses (fatal, exit 1) an inet_interfaces address that is not
   configured on an interface, and 127.0.0.2 is only routed to lo.
 - Errors of the postfix command itself go to syslog, and there is no
   /dev/log here; it writes them to stderr only when stderr is a terminal,
   so postfix() runs it with stderr on a pty and returns that text.
 - Byte-exactness: local_header_rewrite_clients is empty, so cleanup does
   not rewrite headers of mail from loopback (by default clients on
   inet_interfaces get "local" rewriting, which adds missing headers).
   Postfix stores Maildir files with LF line ends; see normalize().

Accept-only mode (deliver=False) routes the virtual domains to discard:, so
Postfix accepts and queues each message, then drops it (benchmarks of the
sending side). maildir_messages() is then always empty; log() shows
"status=sent (accept-only)" per recipient.
"""

import atexit
import grp
import os
import pty
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from helpers import _openssl, free_port, make_traversable

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
DAEMON_DIR = "/usr/lib/postfix/sbin"


# Started instances, stopped at interpreter exit if their owner did not
# (a benchmark interrupted with ^C, a test run killed between fixtures).
_live = set()


@atexit.register
def _stop_all():
    for pf in list(_live):
        try:
            pf.stop(timeout=10)
        except Exception:
            pass


def available():
    """True if Postfix is installed and we can run it (as root)."""
    return (os.path.exists(POSTFIX) and os.path.exists(DAEMON_DIR + "/master")
            and os.geteuid() == 0)


def make_host_cert(pki, name, dest, extra_names=()):
    """A server certificate for `name` (and extra_names) signed by the test
    CA of helpers.make_pki (pki["dir"]/ca.key), RSA 2048, written as
    dest/NAME.pem and dest/NAME.key (0600, owned by root). Returns
    (cert path, key path)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ca_dir = Path(pki["dir"])
    san = ",".join("DNS:" + n for n in (name,) + tuple(extra_names))
    ext = dest / (name + ".ext")
    ext.write_text("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n" % san)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key",
             "-out", name + ".csr", "-subj", "/CN=" + name, cwd=dest)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", str(ca_dir / "ca.pem"),
             "-CAkey", str(ca_dir / "ca.key"), "-CAcreateserial",
             "-CAserial", str(dest / (name + ".srl")), "-out", name + ".pem",
             "-days", "30", "-extfile", name + ".ext", cwd=dest)
    key = dest / (name + ".key")
    os.chmod(key, 0o600)
    return dest / (name + ".pem"), key


def normalize(data):
    """CRLF -> LF, as Postfix stores a message (for comparing what was sent
    with a Maildir file)."""
    return data.replace(b"\r\n", b"\n")


def split_headers(stored):
    """(header block, body) of a stored (LF) message; the header block ends
    with its last LF, the body starts after the empty line."""
    head, sep, body = stored.partition(b"\n\n")
    return head + b"\n", body


class Postfix:
    """One Postfix instance: master and its daemons, on addr:port.

    root        directory for everything (created; must be empty or ours)
    addr, port  where smtpd listens (port: a free one by default)
    hostname    myhostname (banner, EHLO, Received)
    domains     virtual mailbox domains
    mailboxes   addresses that exist (Maildir base/DOMAIN/LOCAL/); others
                get 550 5.1.1 at RCPT
    catch_all   a dict domain -> local part that gets every other address
                of that domain (benchmarks with many recipients)
    tls         (cert, key) to offer STARTTLS with (copied into the config
                dir); None: no STARTTLS
    deliver     True: virtual(8) Maildir delivery; False: accept-only
                (queued, then discard:)
    in_flow_delay, process_limit (smtpd processes and the default limit),
    connection_limit (smtpd_client_connection_count_limit, per client
    address; 0 = none), message_size_limit: benchmark knobs
    main_extra  {param: value} appended to main.cf last (override anything)
    """

    def __init__(self, root, addr="127.0.0.1", port=None, hostname="mx.example.net",
                 domains=("example.net",), mailboxes=(), catch_all=None, tls=None,
                 deliver=True, in_flow_delay="0s", process_limit=100,
                 connection_limit=50, message_size_limit=64 * 1024 * 1024,
                 main_extra=None):
        self.root = Path(root).resolve()
        self.addr = addr
        self.port = port or free_port()
        self.hostname = hostname
        self.domains = tuple(domains)
        self.mailboxes = tuple(mailboxes)
        self.catch_all = dict(catch_all or {})
        self.tls = tls
        self.deliver = deliver
        self.in_flow_delay = in_flow_delay
        self.process_limit = int(process_limit)
        self.connection_limit = int(connection_limit)
        self.message_size_limit = int(message_size_limit)
        self.main_extra = dict(main_extra or {})

        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "lib"
        self.mail_dir = self.root / "mail"
        self.log_path = self.root / "maillog"
        self.pid_file = self.queue_dir / "pid" / "master.pid"
        self._started = False
        self._setup()

    # ------------------------------------------------------------ config

    def _setup(self):
        pw = pwd.getpwnam("postfix")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        grp.getgrnam("postdrop")        # must exist (setgid_group)
        for d in (self.root, self.config_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        make_traversable(self.root)
        self.mail_dir.mkdir(exist_ok=True)
        os.chown(self.mail_dir, self.uid, self.gid)
        os.chmod(self.mail_dir, 0o700)
        if self.tls is not None:
            cert, key = self.tls
            shutil.copyfile(cert, self.config_dir / "cert.pem")
            shutil.copyfile(key, self.config_dir / "key.pem")
            os.chmod(self.config_dir / "cert.pem", 0o644)
            os.chmod(self.config_dir / "key.pem", 0o600)
        self.log_path.touch()
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(self._master_cf())

    def _mailbox_map(self):
        entries = []
        for a in self.mailboxes:
            local, domain = a.split("@")
            entries.append("%s=%s/%s/" % (a, domain, local))
        for domain, local in self.catch_all.items():
            entries.append("@%s=%s/%s/" % (domain, domain, local))
        if not entries:
            # an empty inline: table is a syntax error; nobody exists
            entries.append("postfix-test-nobody@invalid=invalid/nobody/")
        return "inline:{ " + ", ".join(entries) + " }"

    def _main_cf(self):
        p = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": "postfix-test",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.root),
            "myhostname": self.hostname,
            "mydomain": self.hostname.split(".", 1)[-1],
            "myorigin": "$myhostname",
            "mydestination": "",
            "relay_domains": "",
            # Postfix insists that inet_interfaces be configured interface
            # addresses (127.0.0.2 is routed to lo but not one): smtpd's
            # master.cf line names its address itself.
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_banner": "$myhostname ESMTP Postfix (test)",
            "biff": "no",
            "append_dot_mydomain": "no",
            "local_header_rewrite_clients": "",
            # nothing leaves this instance, and nothing looks at DNS
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "local_transport": "error:5.1.1 local delivery disabled",
            "default_transport": "error:5.7.1 no outbound mail from the test instance",
            "relay_transport": "error:5.7.1 no outbound mail from the test instance",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            # the test domains
            "virtual_mailbox_domains": ", ".join(self.domains),
            "virtual_mailbox_base": str(self.mail_dir),
            "virtual_mailbox_maps": self._mailbox_map(),
            "virtual_uid_maps": "static:%d" % self.uid,
            "virtual_gid_maps": "static:%d" % self.gid,
            "virtual_minimum_uid": "1",
            "virtual_mailbox_limit": "0",
            "virtual_transport": "virtual" if self.deliver else "discard:accept-only",
            # permissive for loopback: only unknown recipients are refused
            "smtpd_client_restrictions": "",
            "smtpd_helo_restrictions": "",
            "smtpd_sender_restrictions": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtputf8_enable": "yes",
            "message_size_limit": str(self.message_size_limit),
            "in_flow_delay": self.in_flow_delay,
            "default_process_limit": str(self.process_limit),
            "smtpd_client_connection_count_limit": str(self.connection_limit),
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "notify_classes": "",
        }
        if self.tls is not None:
            p.update({
                "smtpd_tls_security_level": "may",
                "smtpd_tls_cert_file": str(self.config_dir / "cert.pem"),
                "smtpd_tls_key_file": str(self.config_dir / "key.pem"),
                "smtpd_tls_loglevel": "1",
                "smtpd_tls_received_header": "yes",
            })
        else:
            p["smtpd_tls_security_level"] = "none"
        p.update(self.main_extra)
        return "".join("%s = %s\n" % (k, v) for k, v in p.items())

    def _master_cf(self):
        # service type private unpriv chroot wakeup maxproc command
        return (
            "%s:%d inet n - n - %d smtpd\n" % (self.addr, self.port, self.process_limit)
            + "pickup    unix  n - n 60 1 pickup\n"
            "cleanup   unix  n - n - 0 cleanup\n"
            "qmgr      unix  n - n 300 1 qmgr\n"
            "tlsmgr    unix  - - n 1000? 1 tlsmgr\n"
            "rewrite   unix  - - n - - trivial-rewrite\n"
            "bounce    unix  - - n - 0 bounce\n"
            "defer     unix  - - n - 0 bounce\n"
            "trace     unix  - - n - 0 bounce\n"
            "verify    unix  - - n - 1 verify\n"
            "flush     unix  n - n 1000? 0 flush\n"
            "proxymap  unix  - - n - - proxymap\n"
            "proxywrite unix - - n - 1 proxymap\n"
            "showq     unix  n - n - - showq\n"
            "error     unix  - - n - - error\n"
            "retry     unix  - - n - - error\n"
            "discard   unix  - - n - - discard\n"
            "virtual   unix  - n n - - virtual\n"
            "anvil     unix  - - n - 1 anvil\n"
            "scache    unix  - - n - 1 scache\n"
            "postlog   unix-dgram n - n - 1 postlogd\n")

    # ------------------------------------------------------------ commands

    def _env(self):
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "LANG", "TZ")}
        env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        env["MAIL_CONFIG"] = str(self.config_dir)
        return env

    def postfix(self, *args, timeout=60):
        """Run `postfix -c DIR ARGS`; returns the CompletedProcess (stdout;
        stderr is what it wrote to its terminal: see the module notes)."""
        master_fd, slave_fd = pty.openpty()
        chunks = []

        def reader():
            while True:
                try:
                    data = os.read(master_fd, 4096)
                except OSError:        # EIO: every holder of the slave closed it
                    return
                if not data:
                    return
                chunks.append(data)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            p = subprocess.Popen([POSTFIX, "-c", str(self.config_dir)] + list(args),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=slave_fd, env=self._env(), text=True)
        finally:
            os.close(slave_fd)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise
        finally:
            t.join(5)
            os.close(master_fd)
        err = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def postconf(self, *args, timeout=30):
        """`postconf -c DIR ARGS` (stdout, stderr)."""
        p = subprocess.run([POSTCONF, "-c", str(self.config_dir)] + list(args),
                           capture_output=True, text=True, timeout=timeout,
                           env=self._env(), stdin=subprocess.DEVNULL)
        return p.stdout, p.stderr

    def master_pid(self):
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def running(self):
        """The master process of this instance is alive."""
        pid = self.master_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a stale pid file may name some unrelated process by now
        try:
            exe = os.readlink("/proc/%d/exe" % pid)
        except OSError:
            return False
        return exe.endswith("/master")

    # ------------------------------------------------------------ start/stop

    def start(self, timeout=30.0):
        """Start the master (postfix start waits for its initialisation),
        then wait until smtpd answers 220 on addr:port."""
        p = self.postfix("start", timeout=timeout + 30)
        if p.returncode != 0:
            raise AssertionError("postfix start failed (%d):\n%s%s\n%s"
                                 % (p.returncode, p.stdout, p.stderr, self.log_tail()))
        self._started = True
        _live.add(self)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.addr, self.port), timeout=5) as s:
                    s.settimeout(max(0.5, deadline - time.monotonic()))
                    data = b""
                    while b"\n" not in data:
                        chunk = s.recv(1024)
                        if not chunk:
                            break
                        data += chunk
                    if data.startswith(b"220 "):
                        s.sendall(b"QUIT\r\n")
                        try:
                            s.recv(1024)
                        except OSError:
                            pass
                        return
                    last = "greeting %r" % data
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise AssertionError("postfix not ready on %s:%d after %.0fs (last: %s)\n%s"
                             % (self.addr, self.port, timeout, last, self.log_tail()))

    def stop(self, timeout=20.0):
        """`postfix stop` (which itself escalates to kill -9 after 5 s), then
        kill -9 of the master's process group if anything is still alive;
        finally waits until nothing accepts on addr:port. Safe to call
        twice or on an instance that never started."""
        if not self._started and not self.running():
            return
        pid = self.master_pid()
        if self.running():
            try:
                self.postfix("stop", timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and self.running():
            self.kill()
        self._started = False
        _live.discard(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._accepts():
            time.sleep(0.1)

    def kill(self):
        """kill -9 of the master and its children (its process group: the
        master is a session leader), as `postfix stop` does after 5 s."""
        pid = self.master_pid()
        if pid is None or not self.running():
            return
        for target in (-pid, pid):
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _accepts(self):
        try:
            with socket.create_connection((self.addr, self.port), timeout=1):
                return True
        except OSError:
            return False

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ mail

    def maildir(self, address):
        local, domain = address.split("@")
        return self.mail_dir / domain / local

    def maildir_files(self, address):
        """[Path] of address's messages in new/ and cur/, oldest name first."""
        out = []
        for sub in ("new", "cur"):
            d = self.maildir(address) / sub
            if d.is_dir():
                out += sorted(p for p in d.iterdir() if p.is_file())
        return out

    def maildir_messages(self, address):
        """[bytes] of address's messages (as stored: LF line ends)."""
        out = []
        for p in self.maildir_files(address):
            try:
                out.append(p.read_bytes())
            except FileNotFoundError:
                pass
        return out

    def wait_messages(self, address, n, timeout=20.0, token=None):
        """Wait until address has at least n messages (holding token, if
        given) and return them; raises with the log tail on timeout."""
        if isinstance(token, str):
            token = token.encode()
        deadline = time.monotonic() + timeout
        found = []
        while time.monotonic() < deadline:
            found = [m for m in self.maildir_messages(address)
                     if token is None or token in m]
            if len(found) >= n:
                return found
            time.sleep(0.05)
        raise AssertionError("postfix: expected %d message(s) for %s%s, found %d\n%s"
                             % (n, address, "" if token is None else " with %r" % token,
                                len(found), self.log_tail()))

    def queue_files(self):
        """Queue files still in Postfix's queue (incoming/active/deferred/hold)."""
        out = []
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            d = self.queue_dir / sub
            if d.is_dir():
                out += [p for p in d.rglob("*") if p.is_file()]
        return out

    # ------------------------------------------------------------ log

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines=60):
        text = self.log().splitlines()
        return "---- postfix log (%s, last %d lines) ----\n%s" % (
            self.log_path, min(lines, len(text)), "\n".join(text[-lines:]))

    def sent_count(self):
        """Recipients Postfix has finished with status=sent (Maildir
        deliveries, or accept-only discards)."""
        return len(re.findall(r"\bstatus=sent \(", self.log()))

    def wait_log(self, pattern, timeout=20.0, start=0):
        """Wait for a log line matching pattern (regex) after offset start;
        returns the match."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log()[start:])
            if m:
                return m
            time.sleep(0.05)
        raise AssertionError("postfix: no log line matching %r\n%s"
                             % (pattern, self.log_tail()))
