"""Fault injection: a failed write, fsync or rename while a message is being
made durable must give the client 451/452, never 250, and leave nothing
delivered; a failed delivery is retried and nothing is removed before it is
delivered. Faults come from tests/fault/fault.c (LD_PRELOAD), switched on and
off through a control file while the server runs."""

import os
import shutil
import smtplib
import time

import pytest

from helpers import REPO, give_to_server, token

LIBFAULT = REPO / "build" / "release" / "libfault.so"


# Small messages are committed to the accept log (one append + fdatasync per
# batch), larger ones to a file of their own (write, rename, syncfs): both
# paths are tested, the file path by turning the log off.
@pytest.fixture(params=["log", "files"])
def faulty(request, make_server, tmp_path):
    if not LIBFAULT.exists():
        pytest.fail("%s missing: run `make fault` (scripts/test.sh does)" % LIBFAULT)
    control = tmp_path / "fault"
    control.write_text("")
    os.chmod(tmp_path, 0o755)
    os.chmod(control, 0o644)
    env = {
        "LD_PRELOAD": str(LIBFAULT),
        "ESTAFETA_FAULT_FILE": str(control),
        # libfault is preloaded ahead of the ASan runtime on purpose.
        "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""),
    }
    extra = "limit retry-min 1\nlimit retry-max 2\n"
    if request.param == "files":
        extra += "limit queue-log-message 0\n"
    srv = make_server(env=env, extra=extra)
    srv.spool = request.param
    return srv, control


def send(srv, tok):
    s = smtplib.SMTP("127.0.0.1", srv.port, timeout=15)
    try:
        s.ehlo("client.test")
        s.mail("sender@remote.test")
        code, _ = s.rcpt("demo@example.test")
        assert code == 250
        code, resp = s.docmd("DATA")
        assert code == 354
        s.send(("Subject: %s\r\n\r\nbody %s\r\n.\r\n" % (tok, tok)).encode())
        code, resp = s.getreply()
        s.quit()
    finally:
        s.close()
    return code, resp.decode()


@pytest.mark.parametrize("fault,code,enh", [
    ("fsync=EIO", 451, "4.3.0"),
    ("write=ENOSPC", 452, "4.3.1"),
    ("write=EIO", 451, "4.3.0"),
    ("rename=EIO", 451, "4.3.0"),
])
def test_commit_failure_is_never_250(faulty, fault, code, enh):
    srv, control = faulty
    control.write_text(fault + "\n")
    tok = token()
    got_code, resp = send(srv, tok)
    if srv.spool == "log" and fault == "rename=EIO":
        # Nothing is renamed to commit to the log, so the message is safe
        # and acknowledged; its delivery (a rename into new/) fails until
        # the fault is gone, and then it arrives exactly once.
        assert got_code == 250, resp
        time.sleep(0.5)
        assert not [p for _, p, m in srv.all_messages() if tok.encode() in m]
        assert "deliver.tempfail" in srv.log()
        control.write_text("")
        srv.wait_messages("demo@example.test", tok, timeout=15)
        srv.wait_queue_empty(timeout=10)
        assert len([m for _, m in srv.messages("demo@example.test")
                    if tok.encode() in m]) == 1
        return
    assert (got_code, resp.split(" ", 1)[0]) == (code, enh), resp
    control.write_text("")
    # Nothing of the refused message is delivered or left in the queue.
    time.sleep(0.5)
    srv.assert_not_delivered(tok)
    assert srv.queue_files("msg") == [] and srv.queue_files("incoming") == []
    # The server recovers as soon as the disk does.
    tok2 = token()
    got_code, resp = send(srv, tok2)
    assert got_code == 250 and resp.startswith("2.0.0 Ok: queued as "), resp
    srv.wait_messages("demo@example.test", tok2)


def test_failed_delivery_is_retried_not_lost(faulty):
    srv, control = faulty
    # Make the mailbox unusable: a file where demo's Maildir directory goes.
    box = srv.data_dir / "mail" / "example.test" / "demo"
    if box.exists():
        shutil.rmtree(box)
    box.parent.mkdir(parents=True, exist_ok=True)
    give_to_server(box.parent)
    box.write_text("not a directory")
    tok = token()
    code, resp = send(srv, tok)
    assert code == 250, resp
    # Delivery fails and is retried; the message stays in the queue.
    deadline = time.monotonic() + 10
    while "deliver.tempfail" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "deliver.tempfail" in srv.log()
    # A message that stays after its first pass is a queue file of its own
    # (moved out of the accept log right after the pass).
    # (The file comes first, then the record's done line: poll for both.)
    deadline = time.monotonic() + 5
    while ((not srv.queue_files("msg") or srv.log_records(images=False))
           and time.monotonic() < deadline):
        time.sleep(0.05)
    assert len(srv.queue_files("msg")) >= 1
    assert not srv.log_records()
    # Once the mailbox can be created, the retry delivers it, exactly once.
    box.unlink()
    srv.wait_messages("demo@example.test", tok, timeout=15)
    srv.wait_queue_empty(timeout=10)
    assert len([m for _, m in srv.messages("demo@example.test") if tok.encode() in m]) == 1
