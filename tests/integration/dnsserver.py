#!/usr/bin/python3
"""A small DNS server for the tests: answers from a Python dict, on loopback.

It plays the recursive resolver that estafeta forwards to (libunbound sends
RD=1 and expects RA=1, full answers with CNAME chains followed).

    srv = DNSServer({
        "example.net": {"MX": [(10, "mx1.example.net"), (20, "mx2.example.net")]},
        "mx1.example.net": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "alias.example.net": {"CNAME": "mx1.example.net"},
        "nullmx.test": {"MX": [(0, ".")]},
        "broken.test": "SERVFAIL",      # every type
        "slow.test": "TIMEOUT",         # never answers
        "refused.test": "REFUSED",
        "half.test": {"A": ["127.0.0.3"], "AAAA": "SERVFAIL"},   # per type
    })
    port = srv.start()        # UDP and TCP on 127.0.0.1, same port
    srv.set_zone({...})       # change answers live
    srv.queries               # [(name, type), ...] as received
    srv.stop()

Zone: name -> "SERVFAIL" | "REFUSED" | "TIMEOUT" | "NXDOMAIN" | dict of
type -> list of records or one of those words. Types: A, AAAA, MX
((pref, target); "." is the null MX), CNAME (a target name), TXT (strings),
NS (names). A name absent from the zone gets NXDOMAIN; a present name
without the asked type gets NOERROR with no answer. Negative answers carry
an SOA in the authority section, as real servers do. Names are matched
case-insensitively, trailing dot optional. TTLs are 0 by default so that
set_zone() takes effect at once in the resolver under test.

UDP answers larger than 512 octets (or the client's EDNS size, at most
1232) are truncated (TC=1), so large answers go over TCP like in real life.

As a script:
    dnsserver.py --zone zone.json [--port 0] [--port-file F]
The JSON has the same shape (MX records as [pref, "target"]). The port is
written to F (atomically) once both sockets listen; SIGTERM or SIGINT stops
the server, SIGHUP reloads the zone file.
"""

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import traceback

from dnslib import (AAAA, CNAME, MX, NS, QTYPE, RCODE, RR, SOA, TXT, A,
                    DNSLabel, DNSRecord, EDNS0)
from dnslib.dns import DNSError

STATUS_WORDS = ("SERVFAIL", "REFUSED", "TIMEOUT", "NXDOMAIN")
MAX_CHAIN = 8


def _norm(name):
    name = str(name).lower()
    return name[:-1] if name.endswith(".") and name != "." else name


def _normalize_zone(zone):
    out = {}
    for name, val in zone.items():
        if isinstance(val, str):
            if val not in STATUS_WORDS:
                raise ValueError("%s: unknown status %r" % (name, val))
        elif isinstance(val, dict):
            v2 = {}
            for t, recs in val.items():
                t = t.upper()
                if isinstance(recs, str) and recs in STATUS_WORDS:
                    v2[t] = recs
                elif t == "CNAME":
                    v2[t] = recs if isinstance(recs, str) else recs[0]
                else:
                    v2[t] = [tuple(r) if isinstance(r, list) else r for r in recs]
            val = v2
        else:
            raise ValueError("%s: bad value %r" % (name, val))
        out[_norm(name)] = val
    return out


class DNSServer:
    def __init__(self, zone=None, host="127.0.0.1", port=0, ttl=0):
        self.host = host
        self.port = port
        self.ttl = ttl
        self._lock = threading.Lock()
        self._zone = _normalize_zone(zone or {})
        self.queries = []
        self._stop = threading.Event()
        self._threads = []
        self._udp = self._tcp = None
        self._conns = set()

    # ---- public ----
    def set_zone(self, zone):
        z = _normalize_zone(zone)
        with self._lock:
            self._zone = z

    def clear_queries(self):
        with self._lock:
            self.queries = []

    def queries_for(self, name):
        """Types asked for name, in order."""
        n = _norm(name)
        with self._lock:
            return [t for (q, t) in self.queries if q == n]

    def start(self):
        """Binds UDP and TCP on the same port; returns the port."""
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, self.port))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
                continue
            tcp.listen(64)
            break
        else:
            raise OSError("no free port for UDP and TCP")
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        self._udp, self._tcp, self.port = udp, tcp, port
        for fn in (self._udp_loop, self._tcp_loop):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return port

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass
        self._udp = self._tcp = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- answering ----
    def _soa_for(self, qname):
        name = _norm(qname)
        if name == ".":
            apex, owner = "invalid", "."
        else:
            labels = name.split(".")
            apex = ".".join(labels[-2:])
            owner = apex + "."
        return RR(owner, QTYPE.SOA, ttl=self.ttl,
                  rdata=SOA("ns." + apex + ".", "hostmaster." + apex + ".",
                            (1, 3600, 600, 86400, self.ttl)))

    def _rdata(self, qtype, rec):
        if qtype == "A":
            return A(rec)
        if qtype == "AAAA":
            return AAAA(rec)
        if qtype == "MX":
            pref, target = rec
            return MX(target if target != "." else DNSLabel([]), int(pref))
        if qtype == "CNAME":
            return CNAME(rec)
        if qtype == "TXT":
            return TXT(rec)
        if qtype == "NS":
            return NS(rec)
        raise ValueError("unsupported type %s" % qtype)

    def answer(self, request):
        """The reply for a parsed request, or None to stay silent."""
        q = request.q
        qname = _norm(q.qname)
        qtype = QTYPE.get(q.qtype)
        with self._lock:
            self.queries.append((qname, qtype))
            zone = self._zone
        reply = request.reply(ra=1, aa=1)
        if any(r.rtype == QTYPE.OPT for r in request.ar):
            reply.add_ar(EDNS0(udp_len=1232))
        name, seen = qname, set()
        while True:
            if name in seen or len(seen) > MAX_CHAIN:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            seen.add(name)
            entry = zone.get(name)
            if entry is None or entry == "NXDOMAIN":
                reply.header.rcode = RCODE.NXDOMAIN
                reply.add_auth(self._soa_for(name))
                return reply
            if entry == "TIMEOUT":
                return None
            if isinstance(entry, str):
                reply.header.rcode = getattr(RCODE, entry)
                return reply
            recs = entry.get(qtype)
            if recs is None and "CNAME" in entry and qtype != "CNAME":
                target = entry["CNAME"]
                if target in STATUS_WORDS:
                    recs = target
                else:
                    reply.add_answer(RR(name + ".", QTYPE.CNAME, ttl=self.ttl,
                                        rdata=CNAME(target)))
                    name = _norm(target)
                    continue
            if recs == "TIMEOUT":
                return None
            if isinstance(recs, str):
                if recs == "NXDOMAIN":
                    reply.header.rcode = RCODE.NXDOMAIN
                    reply.add_auth(self._soa_for(name))
                else:
                    reply.header.rcode = getattr(RCODE, recs)
                return reply
            if not recs:
                reply.add_auth(self._soa_for(name))
                return reply
            if qtype == "CNAME":
                recs = [recs]
            for rec in recs:
                reply.add_answer(RR(name + ".", getattr(QTYPE, qtype),
                                    ttl=self.ttl, rdata=self._rdata(qtype, rec)))
            return reply

    def _handle(self, data, udp_limit=None):
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None
        if request.header.qr or not request.questions:
            return None
        try:
            reply = self.answer(request)
        except Exception:   # a bug here must not kill the socket's thread
            traceback.print_exc()
            reply = request.reply(ra=1, aa=1)
            reply.header.rcode = RCODE.SERVFAIL
        if reply is None:
            return None
        out = reply.pack()
        if udp_limit is not None:
            limit = 512
            for r in request.ar:
                if r.rtype == QTYPE.OPT:
                    limit = max(512, min(int(r.rclass), 1232))
            if len(out) > limit:
                short = request.reply(ra=1, aa=1)
                short.header.tc = 1
                short.header.rcode = reply.header.rcode
                out = short.pack()
        return out

    # ---- sockets ----
    def _udp_loop(self):
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            out = self._handle(data, udp_limit=True)
            if out is not None:
                try:
                    self._udp.sendto(out, peer)
                except OSError:
                    pass

    def _tcp_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True)
            t.start()

    def _recv_exact(self, conn, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = conn.recv(n - len(buf))
            except socket.timeout:
                if self._stop.is_set():
                    return None
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _tcp_conn(self, conn):
        conn.settimeout(0.5)
        try:
            while not self._stop.is_set():
                hdr = self._recv_exact(conn, 2)
                if hdr is None:
                    return
                data = self._recv_exact(conn, struct.unpack("!H", hdr)[0])
                if data is None:
                    return
                out = self._handle(data)
                if out is not None:
                    conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()


def _load(path):
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--zone", required=True, help="zone as JSON")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--ttl", type=int, default=0)
    args = ap.parse_args(argv)

    srv = DNSServer(_load(args.zone), host=args.host, port=args.port, ttl=args.ttl)
    port = srv.start()
    done = threading.Event()

    def on_stop(signum, frame):
        done.set()

    def on_hup(signum, frame):
        try:
            srv.set_zone(_load(args.zone))
        except (OSError, ValueError) as e:
            print("dnsserver: reload failed: %s" % e, file=sys.stderr)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    else:
        print(port, flush=True)
    while not done.wait(0.5):
        pass
    srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
