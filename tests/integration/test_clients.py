"""Real third-party clients (swaks) and the check-config command."""

import subprocess

import pytest

from helpers import estafeta_bin, make_config, split_stored, token


def swaks(server, *extra):
    tok = token()
    cmd = ["swaks", "--server", "127.0.0.1:%d" % server.port,
           "--to", "demo@example.test", "--from", "a@b.test",
           "--helo", "swaks.client.test",
           "--header", "Subject: swaks " + tok,
           "--body", "swaks body " + tok, "--timeout", "15"] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, "swaks failed (%d):\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
    return tok, p.stdout


def test_swaks(server):
    tok, out = swaks(server)
    assert "<-  250 2.0.0 Ok: queued as" in out, out
    [stored] = server.wait_messages("demo@example.test", tok)
    rp, received, rest = split_stored(stored)
    assert rp == "<a@b.test>"
    assert b"Subject: swaks " + tok.encode() + b"\r\n" in rest
    assert b"\r\n\r\nswaks body " + tok.encode() + b"\r\n" in rest, rest[-200:]
    assert rest.endswith(b"\r\n")


def test_swaks_pipeline(server):
    tok, out = swaks(server, "--pipeline")
    assert "PIPELINING" in out
    [stored] = server.wait_messages("demo@example.test", tok)
    assert split_stored(stored)[0] == "<a@b.test>"


def test_swaks_multi_rcpt(server):
    tok, out = swaks(server, "--to", "alice@example.test,bob@example.test")
    for box in ("alice@example.test", "bob@example.test"):
        server.wait_messages(box, tok)


def run_check(path):
    b = estafeta_bin()
    if not b.exists():
        pytest.skip("no binary at %s" % b)
    return subprocess.run([str(b), "check-config", "-c", str(path)],
                          capture_output=True, text=True, timeout=30)


def test_check_config_good(tmp_path):
    cfg = tmp_path / "good.conf"
    (tmp_path / "data").mkdir()
    cfg.write_text(make_config(tmp_path / "data", 2525))
    p = run_check(cfg)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize("bad,desc", [
    ("no-such-directive 1", "unknown directive"),
    ("limit message-size 1K", "limit below its minimum"),
    ("limit no-such-limit 5", "unknown limit"),
    ("user demo@nowhere.test", "user outside local domains"),
    ("vrfy maybe", "bad boolean"),
    ("listen 127.0.0.1:99999 mx", "bad port"),
])
def test_check_config_bad_line(tmp_path, bad, desc):
    cfg = tmp_path / "bad.conf"
    (tmp_path / "data").mkdir()
    text = make_config(tmp_path / "data", 2525)
    lines = text.splitlines()
    lines.insert(5, bad)     # becomes line 6
    cfg.write_text("\n".join(lines) + "\n")
    p = run_check(cfg)
    assert p.returncode == 1, (desc, p.returncode, p.stdout, p.stderr)
    assert "%s:6:" % cfg in p.stderr, (desc, p.stderr)


def test_check_config_alias_loop(tmp_path):
    cfg = tmp_path / "loop.conf"
    (tmp_path / "data").mkdir()
    cfg.write_text(make_config(tmp_path / "data", 2525)
                   + "alias loop1@example.test loop2@example.test\n"
                   + "alias loop2@example.test loop1@example.test\n")
    p = run_check(cfg)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "%s:" % cfg in p.stderr, p.stderr


def test_check_config_missing_file(tmp_path):
    p = run_check(tmp_path / "nope.conf")
    assert p.returncode != 0, p
    assert "nope.conf" in p.stderr, p.stderr
