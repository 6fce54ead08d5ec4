"""A scripted SMTP server for the relay tests: it answers each stage as the
test says (421/451/452/550/552/554, a drop after the final dot, hostile
replies) and records what it received, byte for byte.

    sink = Sink(script={...}).start()          # binds 127.0.0.1, free port
    ... estafeta relays to sink.port ...
    sink.wait_messages(1); sink.messages[0].data

Script keys (all optional):
    greeting     "220 sink ESMTP" (raw bytes allowed: sent as is)
    greeting_delay
                 seconds to wait before the greeting (a stalled server)
    extensions   list of EHLO keywords, default PIPELINING SIZE 8BITMIME
                 SMTPUTF8 DSN ENHANCEDSTATUSCODES (+ STARTTLS with a cert)
    ehlo         reply to EHLO instead of the extensions ("502 ..." etc.)
    mail, data, dot, rset
                 reply at that stage (default the 250/354 ones)
    rcpt         a reply for every RCPT, or a dict address -> reply
    drop_after_dot
                 close the connection without a reply after the final dot
    raw_after_greeting
                 bytes sent right after the greeting (hostile tests)
    tls          (certfile, keyfile): offer STARTTLS
    auth         {user: password}: offer AUTH PLAIN LOGIN (after TLS when
                 tls is given) and record successful logins in sink.logins
    starttls_inject
                 bytes sent right after "220 go ahead" (STARTTLS response
                 injection: a client must discard them)
"""
import base64
import socket
import socketserver
import ssl
import threading
import time


class Message:
    def __init__(self):
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []          # (address, params)
        self.data = b""
        self.tls = False
        self.helo = None
        self.bdat = False


class _Handler(socketserver.StreamRequestHandler):
    timeout = 30

    def setup(self):
        super().setup()
        self.sink = self.server.sink
        self.sock = self.request
        self.buf = b""

    def send(self, line):
        if isinstance(line, str):
            line = line.encode()
        if not line.endswith(b"\n"):
            line += b"\r\n"
        self.sock.sendall(line)

    def readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def readexact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handle(self):
        sc = self.sink.script
        self.sink.connections += 1
        tls = False
        helo = None
        try:
            if sc.get("greeting_delay"):
                time.sleep(sc["greeting_delay"])
            self.send(sc.get("greeting", "220 sink.test ESMTP"))
            if sc.get("raw_after_greeting"):
                self.sock.sendall(sc["raw_after_greeting"])
            msg = None
            while True:
                line = self.readline()
                sc = self.sink.script   # the test may change it meanwhile
                self.sink.commands.append(line)
                cmd = line.decode("utf-8", "replace").rstrip("\r\n")
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    helo = cmd[5:]
                    if verb == "EHLO" and sc.get("ehlo"):
                        self.send(sc["ehlo"])
                        continue
                    if verb == "HELO":
                        self.send("250 sink.test")
                        continue
                    ext = list(sc.get("extensions", ["PIPELINING", "SIZE 100000000", "8BITMIME",
                                                     "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"]))
                    if sc.get("tls") and not tls:
                        ext.append("STARTTLS")
                    if sc.get("auth") and (tls or not sc.get("tls")):
                        ext.append("AUTH PLAIN LOGIN")
                    lines = ["sink.test"] + ext
                    for i, e in enumerate(lines):
                        self.send(("250 " if i == len(lines) - 1 else "250-") + e)
                elif verb == "STARTTLS" and sc.get("tls") and not tls:
                    self.send("220 2.0.0 go ahead")
                    if sc.get("starttls_inject"):
                        self.sock.sendall(sc["starttls_inject"])
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ctx.load_cert_chain(*sc["tls"])
                    self.sock = ctx.wrap_socket(self.sock, server_side=True)
                    self.buf = b""
                    tls = True
                elif verb == "AUTH" and sc.get("auth"):
                    parts = cmd.split()
                    user = pw = None
                    if len(parts) >= 2 and parts[1].upper() == "PLAIN":
                        if len(parts) == 3:
                            raw = parts[2]
                        else:
                            self.send("334 ")
                            raw = self.readline().decode().strip()
                        _, user, pw = base64.b64decode(raw).decode().split("\0")
                    elif len(parts) >= 2 and parts[1].upper() == "LOGIN":
                        self.send("334 VXNlcm5hbWU6")
                        user = base64.b64decode(self.readline().strip()).decode()
                        self.send("334 UGFzc3dvcmQ6")
                        pw = base64.b64decode(self.readline().strip()).decode()
                    if user is not None and sc["auth"].get(user) == pw:
                        self.sink.logins.append((user, tls))
                        self.send("235 2.7.0 ok")
                    else:
                        self.send("535 5.7.8 bad credentials")
                elif verb == "MAIL":
                    msg = Message()
                    msg.tls = tls
                    msg.helo = helo
                    rest = cmd[10:]
                    addr, _, params = rest.partition(">")
                    msg.mail_from = addr.lstrip("<")
                    msg.mail_params = params.strip()
                    reply = sc.get("mail", "250 2.1.0 ok")
                    if not reply.startswith("2"):
                        msg = None
                    self.send(reply)
                elif verb == "RCPT":
                    rest = cmd[8:]
                    addr, _, params = rest.partition(">")
                    addr = addr.lstrip("<")
                    r = sc.get("rcpt", "250 2.1.5 ok")
                    if isinstance(r, dict):
                        r = r.get(addr, "250 2.1.5 ok")
                    if msg is not None and r.startswith("2"):
                        msg.rcpts.append((addr, params.strip()))
                    self.send(r if msg is not None else "503 5.5.1 need MAIL")
                elif verb == "DATA":
                    if msg is None or not msg.rcpts:
                        self.send("554 5.5.1 no valid recipients")
                        continue
                    reply = sc.get("data", "354 go ahead")
                    self.send(reply)
                    if not reply.startswith("354"):
                        msg = None
                        continue
                    data = b""
                    while True:
                        ln = self.readline()
                        if ln == b".\r\n":
                            break
                        if ln.startswith(b"."):
                            ln = ln[1:]
                        data += ln
                    msg.data = data
                    if sc.get("drop_after_dot"):
                        self.sink.dropped.append(msg)
                        return
                    reply = sc.get("dot", "250 2.0.0 queued as SINK")
                    if reply.startswith("2"):
                        self.sink.messages.append(msg)
                    self.send(reply)
                    msg = None
                elif verb == "BDAT":
                    parts = cmd.split()
                    n = int(parts[1])
                    chunk = self.readexact(n)
                    last = len(parts) > 2 and parts[2].upper() == "LAST"
                    if msg is None:
                        self.send("503 5.5.1 no transaction")
                        continue
                    msg.bdat = True
                    msg.data += chunk
                    if last:
                        reply = sc.get("dot", "250 2.0.0 queued as SINK")
                        if reply.startswith("2"):
                            self.sink.messages.append(msg)
                        self.send(reply)
                        msg = None
                    else:
                        self.send("250 2.0.0 chunk ok")
                elif verb == "RSET":
                    msg = None
                    self.send(sc.get("rset", "250 2.0.0 ok"))
                elif verb == "NOOP":
                    self.send("250 2.0.0 ok")
                elif verb == "QUIT":
                    self.send("221 2.0.0 bye")
                    return
                else:
                    self.send("502 5.5.2 unknown command")
        except (EOFError, ConnectionError, ssl.SSLError, OSError):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Sink:
    def __init__(self, script=None, host="127.0.0.1", port=0):
        self.script = script or {}
        self.messages = []
        self.dropped = []
        self.commands = []
        self.logins = []
        self.connections = 0
        cls = _Server6 if ":" in host else _Server
        self.server = cls((host, port), _Handler)
        self.server.sink = self
        self.host = host
        self.port = self.server.server_address[1]

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def wait_messages(self, n, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if len(self.messages) >= n:
                return self.messages
            time.sleep(0.05)
        raise AssertionError(f"sink got {len(self.messages)} messages, expected {n}")


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p
