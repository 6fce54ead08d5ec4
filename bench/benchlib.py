"""Shared machinery of the benchmark: bench/run, bench/crashloop, bench/profile.

What is here (doc/performance.md says how it is used):

  build_release()        `make -j2` in the repo root; returns build/release/estafeta
  EstafetaTarget         estafeta (tests/integration/helpers.Server, release
                         binary, log-level info) with domain bench.test and
                         one user bench@bench.test that is also the catch-all
  PostfixTarget          a private Postfix (tests/integration/postfix.Postfix)
                         for the same domain, virtual(8) Maildir delivery,
                         tuned for throughput
  SinkTarget             Postfix's smtp-sink: the protocol without storage
  ProcGroup              CPU seconds (utime+stime of every process of a
                         server, exited children included) and RSS
  run_load()             one cell run: smtp-source against a target, timed,
                         with CPU, RSS and time-to-Maildir
  idle_sessions()        the connection-scale run

Everything listens and connects on 127.0.0.1 only. Every wait has a deadline.
Nothing here is used by scripts/test.sh.
"""

import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTEG = REPO / "tests" / "integration"
RELEASE_BIN = REPO / "build" / "release" / "estafeta"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"

DOMAIN = "bench.test"
RCPT = "bench@bench.test"
SENDER = "load@client.test"
CLIENT_NAME = "client.test"

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


def use_binary(binary):
    """Point the integration helpers at `binary` and make them importable.
    Must run before helpers.Server starts anything."""
    os.environ["ESTAFETA_BIN"] = str(binary)
    if str(INTEG) not in sys.path:
        sys.path.insert(0, str(INTEG))


def build_release(log=print):
    log("building the release binary (make -j2)")
    p = subprocess.run(["make", "-j2"], cwd=str(REPO), capture_output=True, text=True,
                       timeout=1800)
    if p.returncode != 0 or not RELEASE_BIN.exists():
        raise BenchError("make failed (%d):\n%s%s" % (p.returncode, p.stdout[-3000:],
                                                       p.stderr[-3000:]))
    return RELEASE_BIN


def raise_nofile(want=65536):
    """Raise RLIMIT_NOFILE for this process and everything it starts (the
    servers inherit it). As root the hard limit can be raised too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in ((want, max(want, hard)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def check_tools(need_postfix=True):
    missing = [t for t in (SMTP_SOURCE, SMTP_SINK) if not os.path.exists(t)]
    if missing:
        raise BenchError("missing %s (apt-get install postfix)" % ", ".join(missing))
    if need_postfix and os.geteuid() != 0:
        raise BenchError("Postfix side by side needs root (its own master and "
                         "queue owned by the postfix user)")


# ---------------------------------------------------------------- /proc


def _stat(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()


def _status_kib(pid, key):
    with open("/proc/%d/status" % pid, "rb") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


class ProcGroup:
    """The processes of one server: a single pid, or (session=True) every
    process in the session that pid leads (Postfix's master calls setsid,
    so its daemons and their children are all in it).

    cpu(): seconds of utime+stime of every live member plus its cutime+
    cstime (children it has reaped: an smtpd that exited after max_use is
    counted in the master's cutime). Differences of cpu() over a run are the
    server's CPU for that run, whatever processes came and went.
    rss_kib(): sum of VmRSS now; hwm_kib(): sum of VmHWM (peak since the
    last reset_hwm(), which writes 5 to clear_refs)."""

    def __init__(self, pid, session=False):
        self.pid = pid
        self.session = session

    def pids(self):
        if not self.session:
            return [self.pid]
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if int(_stat(int(name))[3]) == self.pid:
                    out.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
        return out

    def cpu_split(self):
        """(user seconds, system seconds), children reaped included."""
        user = system = 0
        for pid in self.pids():
            try:
                f = _stat(pid)
            except OSError:
                continue
            # utime stime cutime cstime: fields 14-17 of stat(5)
            user += int(f[11]) + int(f[13])
            system += int(f[12]) + int(f[14])
        return user / CLK_TCK, system / CLK_TCK

    def cpu(self):
        return sum(self.cpu_split())

    def rss_kib(self, pids=None):
        total = 0
        for pid in pids if pids is not None else self.pids():
            try:
                total += _status_kib(pid, b"VmRSS:")
            except OSError:
                pass
        return total

    def hwm_kib(self):
        total = 0
        for pid in self.pids():
            try:
                total += _status_kib(pid, b"VmHWM:")
            except OSError:
                pass
        return total

    def pss_kib(self):
        """Sum of Pss (shared pages divided among their users); costly
        (walks every mapping), so measured once, not sampled."""
        total = 0
        for pid in self.pids():
            try:
                with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
                    for line in f:
                        if line.startswith(b"Pss:"):
                            total += int(line.split()[1])
                            break
            except OSError:
                pass
        return total

    def reset_hwm(self):
        for pid in self.pids():
            try:
                with open("/proc/%d/clear_refs" % pid, "w") as f:
                    f.write("5")
            except OSError:
                pass

    def count(self):
        return len(self.pids())


class RssSampler(threading.Thread):
    """Peak of the group's summed RSS, sampled every `interval` seconds
    (the pid list of a session is rescanned every `rescan` seconds)."""

    def __init__(self, group, interval=0.1, rescan=0.5):
        super().__init__(daemon=True)
        self.group, self.interval, self.rescan = group, interval, rescan
        self.peak_kib = 0
        self.max_procs = 0
        self._stop_ev = threading.Event()

    def run(self):
        pids, scanned = self.group.pids(), time.monotonic()
        while True:
            if time.monotonic() - scanned > self.rescan:
                pids, scanned = self.group.pids(), time.monotonic()
            self.max_procs = max(self.max_procs, len(pids))
            self.peak_kib = max(self.peak_kib, self.group.rss_kib(pids))
            if self._stop_ev.wait(self.interval):
                return

    def finish(self):
        self._stop_ev.set()
        self.join(5)
        return self.peak_kib


def count_files(d):
    try:
        with os.scandir(d) as it:
            return sum(1 for e in it if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def empty_dir(d):
    """Move the files of d (a Maildir's new/ between runs) into an attic
    beside the Maildir, on the same file system; the work directory's
    removal at the end frees them.

    Not unlink: on ext4 without a journal (this VM's disk) the inode
    allocator skips every inode freed in the last 60 s (360 s while its
    inode-table block is dirty) one by one (ext4 find_inode_bit ->
    recently_deleted), so the next run's deliveries into the same
    directory each scanned the thousands of inodes the previous run's
    cleanup had just freed: a third of the server's CPU in a profile
    (doc/performance.md "The benchmark's own deletes"). A mail server's
    Maildir does not see thousands of fresh deletes before every burst."""
    d = Path(d)
    attic = d.parent.parent / (".bench-attic-" + d.parent.name)
    try:
        attic.mkdir(exist_ok=True)
        with os.scandir(d) as it:
            for e in it:
                try:
                    os.rename(e.path, attic / ("%d.%s" % (time.monotonic_ns(), e.name)))
                except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                    pass
    except FileNotFoundError:
        pass


def wait_until(pred, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


# ---------------------------------------------------------------- targets


ESTAFETA_EXTRA = """\
domain %(domain)s catch-all=bench@%(domain)s
user bench@%(domain)s
limit connections 20000
limit connections-per-client 20000
""" % {"domain": DOMAIN}


class EstafetaTarget:
    """estafeta under the integration helpers' Server: its own data dir and
    port on 127.0.0.1, run-as nobody when root, dns-resolver 127.0.0.1@9
    (nothing leaves loopback). The helpers' config logs at debug level
    (the tests want it); the benchmark runs at info, as in production."""

    name = "estafeta"

    def __init__(self, root, log_level="info", extra=""):
        import helpers
        self.server = helpers.Server(Path(root), extra=ESTAFETA_EXTRA + extra)
        text = self.server.config_path.read_text()
        text = text.replace("log-level debug\n", "log-level %s\n" % log_level)
        self.server.config_path.write_text(text)
        self.port = self.server.port
        self.group = None

    def start(self):
        self.server.start(timeout=30)
        self.group = ProcGroup(self.server.proc.pid)
        return self

    def stop(self):
        if self.server.running():
            self.server.stop()

    def kill(self):
        self.server.kill()

    @property
    def maildir_new(self):
        return self.server.maildir(RCPT) / "new"

    def queue_empty(self):
        return (not self.server.queue_files("msg") and not self.server.queue_files("incoming")
                and not self.server.log_records(images=False))

    def running(self):
        return self.server.running()

    def describe(self):
        return "estafeta %s on 127.0.0.1:%d" % (os.environ.get("ESTAFETA_BIN"), self.port)


class PostfixTarget:
    """Postfix from Debian, its own instance (tests/integration/postfix.py:
    nothing under /etc or /var is touched), virtual Maildir delivery for
    bench.test (catch-all to bench), tuned for an
    inbound benchmark: no client DNS lookups (smtpd_peername_lookup = no),
    in_flow_delay = 0, no per-client connection count/rate limits, enough
    smtpd processes for every session, no STARTTLS, no DNS anywhere
    (smtp_dns_support_level = disabled; nothing is relayed)."""

    name = "postfix"

    def __init__(self, root, process_limit=200):
        import postfix
        self.pf = postfix.Postfix(
            Path(root), addr="127.0.0.1", hostname="mx.bench.test", domains=(DOMAIN,),
            catch_all={DOMAIN: "bench"}, deliver=True, in_flow_delay="0s",
            process_limit=process_limit, connection_limit=0,
            main_extra={
                # no anvil round trips and no throttling of one client
                "smtpd_client_connection_count_limit": "0",
                "smtpd_client_connection_rate_limit": "0",
                "smtpd_client_message_rate_limit": "0",
                "smtpd_client_recipient_rate_limit": "0",
                "smtpd_client_new_tls_session_rate_limit": "0",
                # (postfix.py already sets smtpd_peername_lookup = no,
                # smtp_dns_support_level = disabled and the in_flow_delay)
            })
        self.port = self.pf.port
        self.group = None

    def start(self):
        self.pf.start(timeout=60)
        self.group = ProcGroup(self.pf.master_pid(), session=True)
        return self

    def stop(self):
        self.pf.stop()

    @property
    def maildir_new(self):
        return self.pf.maildir(RCPT) / "new"

    def queue_empty(self):
        return not self.pf.queue_files()

    def running(self):
        return self.pf.running()

    def describe(self):
        return "Postfix (private instance %s) on 127.0.0.1:%d" % (self.pf.root, self.port)


class SinkTarget:
    """smtp-sink: speaks SMTP, stores nothing (the protocol's upper bound on
    this machine with this load generator)."""

    name = "smtp-sink"

    def __init__(self, root, max_conn=20000):
        import helpers
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = helpers.free_port()
        self.max_conn = max_conn
        self.proc = None
        self.group = None

    def start(self):
        args = [SMTP_SINK, "-m", str(self.max_conn)]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        args += ["127.0.0.1:%d" % self.port, "4096"]
        self.log = open(self.root / "smtp-sink.log", "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, cwd=str(self.root))
        ok = wait_until(lambda: _greets(self.port), 10, 0.05)
        if not ok:
            raise BenchError("smtp-sink did not start: %s" % args)
        self.group = ProcGroup(self.proc.pid)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    maildir_new = None

    def queue_empty(self):
        return True

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def describe(self):
        return "smtp-sink on 127.0.0.1:%d" % self.port


def _greets(port, timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            while b"\n" not in data:
                chunk = s.recv(512)
                if not chunk:
                    return False
                data += chunk
            s.sendall(b"QUIT\r\n")
            return data.startswith(b"220")
    except OSError:
        return False


# ---------------------------------------------------------------- load


def smtp_source(port, size, sessions, messages, reuse=True, timeout=600):
    """Run smtp-source against 127.0.0.1:port; returns seconds from start to
    its exit (every message got its 250 by then: smtp-source aborts on any
    other reply). reuse: -d, the next message on the same connection."""
    args = [SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", SENDER, "-t", RCPT, "-M", CLIENT_NAME, "-C", "3"]
    if reuse:
        args.append("-d")
    args.append("127.0.0.1:%d" % port)
    t0 = time.monotonic()
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("smtp-source did not finish in %ds: %s" % (timeout, args))
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise BenchError("smtp-source failed (%d): %s\n%s" % (p.returncode, " ".join(args),
                                                               (p.stdout + p.stderr)[-2000:]))
    return dt


def run_load(target, size, sessions, messages, reuse=True, deliver_timeout=None,
             load_timeout=None):
    """One run of one cell against one target. Returns a dict:
      accept_s       smtp-source wall time (first connect to last 250+QUIT)
      accept_rate    messages / accept_s
      deliver_s      from the start until the last message is in new/ (None
                     for smtp-sink)
      deliver_rate   messages / deliver_s
      cpu_ms_per_msg server CPU (all its processes) from the start until the
                     queue is empty again, per message
      cpu_accept_ms_per_msg  the same, only until smtp-source exits
      peak_rss_kib   peak RSS of the server during the run (see ProcGroup)
      pss_end_kib    its PSS at the end (shared pages counted once)
    """
    if load_timeout is None:
        load_timeout = 60 + messages * size / 2e6 + messages / 50
    if deliver_timeout is None:
        deliver_timeout = 60 + messages / 20
    if target.maildir_new is not None:
        empty_dir(target.maildir_new)
    g = target.group
    g.reset_hwm()
    sampler = RssSampler(g)
    cpu0 = g.cpu_split()
    sampler.start()
    try:
        accept_s = smtp_source(target.port, size, sessions, messages, reuse, load_timeout)
        cpu_acc = g.cpu_split()
        deliver_s = None
        if target.maildir_new is not None:
            t0 = time.monotonic() - accept_s
            d = target.maildir_new
            if not wait_until(lambda: count_files(d) >= messages, deliver_timeout, 0.005):
                raise BenchError("%s: only %d of %d messages in %s after %.0fs"
                                 % (target.name, count_files(d), messages, d,
                                    deliver_timeout))
            deliver_s = time.monotonic() - t0
            if not wait_until(target.queue_empty, 30, 0.02):
                raise BenchError("%s: queue not empty 30 s after delivery" % target.name)
        cpu1 = g.cpu_split()
    finally:
        peak = sampler.finish()
    hwm = g.hwm_kib()
    pss = g.pss_kib()
    got = count_files(target.maildir_new) if target.maildir_new is not None else messages
    if got != messages:
        raise BenchError("%s: %d messages in the Maildir, %d sent" % (target.name, got,
                                                                      messages))
    return {
        "accept_s": accept_s,
        "accept_rate": messages / accept_s,
        "deliver_s": deliver_s,
        "deliver_rate": messages / deliver_s if deliver_s else None,
        "cpu_ms_per_msg": (sum(cpu1) - sum(cpu0)) * 1000.0 / messages,
        "cpu_user_ms_per_msg": (cpu1[0] - cpu0[0]) * 1000.0 / messages,
        "cpu_sys_ms_per_msg": (cpu1[1] - cpu0[1]) * 1000.0 / messages,
        "cpu_accept_ms_per_msg": (sum(cpu_acc) - sum(cpu0)) * 1000.0 / messages,
        "peak_rss_kib": max(peak, hwm),
        "pss_end_kib": pss,
        "procs": sampler.max_procs,
    }


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------- idle sessions


def _greeting_time(port, timeout=10.0):
    """Seconds from connect() to the end of the 220 line for a fresh client."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        data = b""
        while b"\n" not in data:
            chunk = s.recv(512)
            if not chunk:
                raise BenchError("connection closed before the greeting")
            data += chunk
        dt = time.monotonic() - t0
        if not data.startswith(b"220"):
            raise BenchError("fresh client got %r" % data[:100])
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
    return dt


def idle_sessions(target, n, timeout=120.0, in_flight=200, probes=20, log=print):
    """Open n SMTP sessions to target and hold them idle after their 220;
    then measure the server's RSS and how long fresh clients wait for their
    220. Bounded by `timeout` for the whole opening phase. Returns a dict."""
    port = target.port
    g = target.group
    base_probe = statistics.median(_greeting_time(port) for _ in range(5))
    rss0 = g.rss_kib()
    procs0 = g.count()
    sel = selectors.DefaultSelector()
    socks = []          # greeted, held open
    pending = {}        # fd -> [sock, buffer, start]
    refused = []
    opened = 0
    lat = []
    deadline = time.monotonic() + timeout
    try:
        while (len(socks) < n) and time.monotonic() < deadline:
            while opened < n and len(pending) < in_flight:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect_ex(("127.0.0.1", port))
                except OSError as e:
                    s.close()
                    raise BenchError("connect %d: %s" % (opened, e))
                pending[s.fileno()] = [s, b"", time.monotonic()]
                sel.register(s, selectors.EVENT_READ)
                opened += 1
            for key, _ in sel.select(timeout=0.5):
                ent = pending.get(key.fd)
                if ent is None:
                    continue
                s = ent[0]
                try:
                    chunk = s.recv(512)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    chunk = b""
                    refused.append(str(e))
                ent[1] += chunk
                if not chunk or b"\n" in ent[1]:
                    sel.unregister(s)
                    del pending[key.fd]
                    if chunk and ent[1].startswith(b"220"):
                        socks.append(s)
                        lat.append(time.monotonic() - ent[2])
                    else:
                        refused.append(ent[1][:80].decode(errors="replace"))
                        s.close()
                        if len(refused) > 20:
                            raise BenchError("%s refuses sessions: %s"
                                             % (target.name, refused[-3:]))
        open_s = timeout - max(0.0, deadline - time.monotonic())
        held = len(socks)
        time.sleep(1.0)         # let lazily freed buffers settle
        rss1 = g.rss_kib()
        pss1 = g.pss_kib()
        procs1 = g.count()
        probe = [_greeting_time(port) for _ in range(probes)]
        # still alive? every held session must still be open (no reply yet)
        alive = 0
        for s in socks:
            try:
                s.setblocking(False)
                d = s.recv(1)
                if d:
                    alive += 1     # got something (421?) but still open
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
    finally:
        for ent in pending.values():
            ent[0].close()
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        sel.close()
    return {
        "sessions": n,
        "held": held,
        "alive_after": alive,
        "open_seconds": open_s,
        "rss_before_kib": rss0,
        "rss_kib": rss1,
        "pss_kib": pss1,
        "per_session_kib": (rss1 - rss0) / held if held else None,
        "procs_before": procs0,
        "procs": procs1,
        "greeting_ms_idle": base_probe * 1000,
        "greeting_ms_median": statistics.median(probe) * 1000,
        "greeting_ms_max": max(probe) * 1000,
        "open_latency_ms_median": statistics.median(lat) * 1000 if lat else None,
    }


def fsync_rate(where, seconds=3.0):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fsyncrate
    return fsyncrate.measure(where, seconds=seconds)


def stop_all(targets):
    for t in targets:
        try:
            t.stop()
        except Exception as e:      # keep stopping the others
            print("warning: stopping %s: %s" % (t.name, e), file=sys.stderr)


def on_signal_exit(targets):
    """SIGTERM/SIGINT: stop every server we started before exiting."""
    def handler(signum, frame):
        stop_all(targets)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# ext4 without a journal keeps freed inodes out of reuse for 60 s (360 s
# while their inode-table block is dirty), and skips them one by one when
# it allocates (see empty_dir): a run started right after another run's
# work directory was deleted pays for those deletes. The tools note when
# they delete one, and wait out the window before measuring.
RECENTLY_DELETED_S = 360
CLEANUP_MARK = Path(__file__).resolve().parent / "results" / ".last-cleanup"


def ext4_without_journal(path):
    """Whether path is on ext4 mounted without a journal (no data= mode in
    /proc/fs/ext4/<dev>/options: a journaled ext4 always has one)."""
    try:
        st = os.stat(path)
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                major, minor = fields[2].split(":")
                if (int(major), int(minor)) != (os.major(st.st_dev), os.minor(st.st_dev)):
                    continue
                if fields[sep + 1] != "ext4":
                    return False
                # The kernel's name of the device (vda, dm-0), which the
                # mount source (/dev/root, /dev/mapper/x) may not show.
                dev = os.path.basename(os.readlink("/sys/dev/block/%s:%s" % (major, minor)))
                with open("/proc/fs/ext4/%s/options" % dev) as o:
                    return not any(l.startswith("data=") for l in o.read().split())
    except (OSError, ValueError, IndexError):
        pass
    return False


def settle(path, enabled=True):
    """Waits (at most RECENTLY_DELETED_S) until the last cleanup of a tool
    is that old, on ext4 without a journal; prints what it does."""
    if not enabled or not ext4_without_journal(path):
        return
    try:
        age = time.time() - CLEANUP_MARK.stat().st_mtime
    except OSError:
        return
    wait = RECENTLY_DELETED_S - age
    if 0 < wait <= RECENTLY_DELETED_S:
        print("waiting %.0f s: a work directory was deleted %.0f s ago, and ext4 "
              "without a journal skips recently freed inodes one by one "
              "(--no-settle to skip)" % (wait, age), flush=True)
        time.sleep(wait)


def rmtree(p):
    shutil.rmtree(p, ignore_errors=True)
    try:
        CLEANUP_MARK.parent.mkdir(exist_ok=True)
        CLEANUP_MARK.touch()
    except OSError:
        pass
