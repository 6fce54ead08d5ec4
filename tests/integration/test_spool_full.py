"""Issue 6, durability: a spool on a small tmpfs that fills up gives 452,
never a 250 for a message that is not stored, and estafeta recovers when
space returns. Needs root (mount); skipped otherwise."""
import os
import smtplib
import subprocess
import time

import pytest

from helpers import Server, finish_server, token

SIZE_KIB = 200


def mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + p.stderr.strip())


def send_one(port, tok):
    """(code, text) of the reply to the end of DATA, or of the first refusal."""
    body = (f"Subject: {tok}\r\n\r\n" + ("x" * 998 + "\r\n") * SIZE_KIB).encode()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.ehlo("client.remote.test")
            c.sendmail("sender@remote.test", ["demo@example.test"], body)
            return 250, ""
    except smtplib.SMTPResponseException as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return code, text.decode(errors="replace")


def test_full_spool_gives_452_and_recovers(tmp_path):
    s = Server(tmp_path / "srv")
    mount_tmpfs(s.data_dir, "3m")
    filler = s.data_dir / "filler"
    try:
        s.start()
        # Most of the space taken by something else.
        filler.write_bytes(b"\0" * (1800 * 1024))
        acked, refused = [], []
        for _ in range(40):                         # bounded: 40 x 200 KiB > 3 MiB
            tok = token()
            code, text = send_one(s.port, tok)
            if code == 250:
                acked.append(tok)
            else:
                refused.append((code, text))
                if len(refused) >= 3:
                    break
        assert refused, "the spool never filled up"
        for code, text in refused:
            assert code in (452, 451), (code, text)
        assert any(code == 452 and "4.3.1" in text for code, text in refused), refused
        assert s.running()
        print("acked before full:", len(acked), "refused:", refused)
        # Space returns: everything acknowledged reaches the Maildir, and
        # new mail is accepted again.
        filler.unlink()
        tok = token()
        end = time.time() + 30
        while True:
            code, text = send_one(s.port, tok)
            if code == 250 or time.time() > end:
                break
            time.sleep(0.5)
        assert code == 250, (code, text)
        acked.append(tok)
        s.signal(10)  # SIGUSR1: retry deliveries deferred for lack of space now
        for t in acked:
            s.wait_messages("demo@example.test", t, timeout=60)
        # nothing refused was stored
        assert len([m for _, m in s.messages("demo@example.test")]) == len(acked)
    finally:
        problems = finish_server(s)
        subprocess.run(["umount", "-l", str(s.data_dir)], capture_output=True)
    assert not problems, problems
