"""Connection limits (doc/smtp.md: over connections-per-client => 421 4.7.0)."""

from helpers import HOSTNAME, SMTPRaw, check


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
        import time
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
