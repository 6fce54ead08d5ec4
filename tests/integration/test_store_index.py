"""The mailbox store seen through POP3 (src/store/mailbox.h, doc/store.md,
doc/pop3.md): UIDs in delivery order (UIDL order), unique ids equal to the
Maildir base names and stable across sessions, flag renames and index
rebuilds, an index that is deleted or damaged between sessions, messages
added or removed by another tool, and the standard folders made for a new
user on the first login."""

import os
import poplib
import re

import pytest

from helpers import (POP3Raw, Server, deliver_wait, finish_server, give_to_server,
                     make_pop3_server, maildir_uniques, pop3_uidl, require_binary,
                     token)

LOCALS = ("order", "order2", "stable", "flags", "lost0", "lost1", "lost2", "lost3",
          "lost4", "other", "gone", "fresh", "fresh2", "down", "lf", "race", "race2",
          "lfsize", "kwnames")
USERS = {"%s@example.test" % n: "pw-%s" % n for n in LOCALS}


def addr(local):
    return "%s@example.test" % local


@pytest.fixture(scope="module")
def ss(tmp_path_factory):
    require_binary()
    root = tmp_path_factory.mktemp("storesrv")
    s = make_pop3_server(lambda start, extra: Server(root, extra=extra), users=USERS)
    yield s
    problems = finish_server(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))


def deliver(server, rcpt, **kw):
    """(stored bytes, UIDL, unique id = file name in new/)."""
    d, uq = deliver_wait(server, rcpt, **kw)
    return d, pop3_uidl(uq), uq


def listing(server, local, retr=True):
    """One POP3 session: [(unique id, message bytes or None)] in UIDL order;
    also checks that UIDL numbers are 1..n and LIST sizes are the sizes."""
    with POP3Raw(server.pop3_port) as c:
        c.login_ok(addr(local), USERS[addr(local)])
        n, total = c.stat()
        ids = c.uidl()
        sizes = c.list()
        assert [i for i, _ in ids] == list(range(1, n + 1)), ids
        assert [i for i, _ in sizes] == list(range(1, n + 1)), sizes
        out = []
        for (i, uq), (_, size) in zip(ids, sizes):
            data = c.retr(i)[0] if retr else None
            if data is not None:
                assert len(data) == size, (i, uq, len(data), size)
            out.append((uq, data))
        assert sum(s for _, s in sizes) == total
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    return out


def maildir_dir(server, local):
    return server.maildir(addr(local))


def index_files(server, local):
    return sorted(p for p in maildir_dir(server, local).iterdir()
                  if p.name.startswith("estafeta.index"))


# ---------------------------------------------------------------- UID order and unique ids


def test_uids_in_delivery_order(ss):
    u = addr("order")
    # before the first login (no index yet) ...
    first = [deliver(ss, u) for _ in range(3)]
    got = listing(ss, "order")
    assert [uq for uq, _ in got] == [uq for _, uq, _ in first]
    assert [d for _, d in got] == [d for d, _, _ in first]
    # ... and after it (the index exists and assigns UIDs at delivery)
    second = [deliver(ss, u) for _ in range(3)]
    got = listing(ss, "order")
    assert [uq for uq, _ in got] == [uq for _, uq, _ in first + second]
    assert [d for _, d in got] == [d for d, _, _ in first + second]


def test_delete_in_the_middle_keeps_order(ss):
    u = addr("order2")
    msgs = [deliver(ss, u) for _ in range(4)]
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        c.cmd_expect("DELE 2", "+OK Message 2 deleted")
        c.cmd_expect("QUIT", "+OK Logging out, 1 message deleted")
    more = deliver(ss, u)
    got = [uq for uq, _ in listing(ss, "order2", retr=False)]
    assert got == [msgs[0][1], msgs[2][1], msgs[3][1], more[1]]


def test_uidl_is_maildir_base_name_and_stable(ss):
    u = addr("stable")
    msgs = [deliver(ss, u) for _ in range(3)]
    names = sorted(p.name for p, _ in ss.messages(u))
    a = listing(ss, "stable")
    b = listing(ss, "stable")
    assert a == b
    assert sorted(uq for uq, _ in a) == sorted(pop3_uidl(n.split(":2,", 1)[0]) for n in names)
    for uq, data in a:
        assert "/" not in uq and ":" not in uq, uq
        assert all(0x21 <= ord(ch) <= 0x7E for ch in uq), uq   # RFC 1939 7
    assert {uq: d for uq, d in a} == {uq: d for d, uq, _ in msgs}


def test_long_unique_id_uidl_hashed_and_stable(make_server):
    """RFC 1939 7: a unique-id is 1 to 70 characters in 0x21..0x7E. With a
    long (valid) host name the Maildir base name is longer: doc/pop3.md
    sends "h" + 32 hex digits of its SHA-256 instead, the same in every
    session and after an index rebuild. Short names are sent as they are."""
    users = {"long@example.test": "pw-long"}
    long_host = "pop3-frontend-01.mailcluster.example.test"

    def factory(start, extra, **kw):
        srv = make_server(start=False, extra=extra, **kw)
        text = srv.config_path.read_text()
        assert "hostname mail.example.test\n" in text
        srv.config_path.write_text(text.replace("hostname mail.example.test\n",
                                                "hostname %s\n" % long_host))
        return srv
    s = make_pop3_server(factory, users=users)
    u = "long@example.test"
    _, uq = deliver_wait(s, u)
    assert len(uq) > 70 and long_host in uq, uq

    def uidls():
        with POP3Raw(s.pop3_port) as c:
            c.login_ok(u, "pw-long")
            ids = c.uidl()
            c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
        return [x for _, x in ids]
    assert uidls() == [pop3_uidl(uq)]
    # another tool's file: short but with a byte outside 0x21..0x7E
    d = s.maildir(u)
    odd = "1000000000.M1P1.other host,S=20"
    (d / "new" / odd).write_bytes(b"Subject: odd\r\n\r\nx\r\n")
    give_to_server(d / "new" / odd)
    short = "1000000001.M1P1.other,S=20"
    (d / "new" / short).write_bytes(b"Subject: odd\r\n\r\ny\r\n")
    give_to_server(d / "new" / short)
    first = uidls()
    for x in first:
        assert 1 <= len(x) <= 70 and all(0x21 <= ord(ch) <= 0x7E for ch in x), x
    assert first == [pop3_uidl(uq), pop3_uidl(odd), short], first
    assert re.fullmatch(r"h[0-9a-f]{32}", first[0]), first
    assert re.fullmatch(r"h[0-9a-f]{32}", pop3_uidl(odd))
    assert uidls() == first
    for p in d.iterdir():
        if p.name.startswith("estafeta.index"):
            p.unlink()
    assert sorted(uidls()) == sorted(first)


def test_flag_rename_keeps_uidl(ss):
    """Another Maildir client marks a message seen (new/X -> cur/X:2,S) and
    another one flagged: the unique ids and the order stay the same."""
    u = addr("flags")
    msgs = [deliver(ss, u) for _ in range(3)]
    before = listing(ss, "flags")
    d = maildir_dir(ss, "flags")
    os.rename(d / "new" / msgs[0][2], d / "cur" / (msgs[0][2] + ":2,S"))
    os.rename(d / "new" / msgs[2][2], d / "cur" / (msgs[2][2] + ":2,FS"))
    after = listing(ss, "flags")
    assert after == before


# ---------------------------------------------------------------- index loss


def _damage(server, local, how):
    files = index_files(server, local)
    main = maildir_dir(server, local) / "estafeta.index"
    assert main in files, "no index file after a login: %s" % files
    if how == "deleted":
        for p in files:
            p.unlink()
    elif how == "garbage":
        size = max(main.stat().st_size, 8192)
        main.write_bytes(os.urandom(size))
    elif how == "garbage-after-header":
        data = main.read_bytes()
        main.write_bytes(data[:100] + os.urandom(max(len(data), 8192) - 100))
        for p in files:
            if p.name.endswith(("-wal", "-shm")):
                p.unlink()
    elif how == "empty":
        main.write_bytes(b"")
    elif how == "truncated":
        data = main.read_bytes()
        main.write_bytes(data[:len(data) // 2 or 1])
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how,local", [
    ("deleted", "lost0"), ("garbage", "lost1"), ("garbage-after-header", "lost2"),
    ("empty", "lost3"), ("truncated", "lost4")])
def test_index_lost_or_damaged_between_sessions(ss, how, local):
    u = addr(local)
    msgs = [deliver(ss, u) for _ in range(4)]
    # a session with a delete, so the index holds more than the first sync
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("QUIT", "+OK Logging out, 1 message deleted")
    before = listing(ss, local)
    assert [uq for uq, _ in before] == [uq for _, uq, _ in msgs[1:]]
    _damage(ss, local, how)
    after = listing(ss, local)
    assert after == before, "after the index was %s: %s != %s" % (
        how, [x for x, _ in after], [x for x, _ in before])
    # deliveries into the damaged or missing index work and come last
    _damage(ss, local, how)
    late = deliver(ss, u)
    after = listing(ss, local)
    assert after == before + [(late[1], late[0])], (how, [x for x, _ in after])
    # and the rebuilt index is used again normally
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        c.cmd_expect("DELE 4", "+OK Message 4 deleted")
        c.cmd_expect("QUIT", "+OK Logging out, 1 message deleted")
    assert listing(ss, local) == before
    assert {pop3_uidl(x) for x in maildir_uniques(ss, u)} == {uq for uq, _ in before}


def test_index_deleted_while_server_down(make_server):
    users = {"down@example.test": "pw-down"}
    s = make_pop3_server(make_server, users=users)
    u = "down@example.test"
    msgs = [deliver(s, u) for _ in range(3)]
    with POP3Raw(s.pop3_port) as c:
        c.login_ok(u, "pw-down")
        before = c.uidl()
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    assert [uq for _, uq in before] == [uq for _, uq, _ in msgs]
    assert s.stop() == 0
    for p in s.maildir(u).iterdir():
        if p.name.startswith("estafeta.index"):
            p.unlink()
    s.start()
    with POP3Raw(s.pop3_port) as c:
        c.login_ok(u, "pw-down")
        assert c.uidl() == before
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


# ---------------------------------------------------------------- other tools


def test_message_added_by_another_tool_comes_last(ss):
    """A file without an index row gets the next UID when the mailbox is
    opened: listed after the known ones even though its name sorts first."""
    u = addr("other")
    msgs = [deliver(ss, u) for _ in range(2)]
    listing(ss, "other")        # the index now knows both
    tok = token()
    data = ("Return-Path: <x@remote.test>\r\nSubject: %s\r\n\r\nfrom procmail\r\n"
            % tok).encode()
    name = "1000000000.M1P1.othertool,S=%d" % len(data)
    d = maildir_dir(ss, "other")
    tmp = d / "tmp" / name
    tmp.write_bytes(data)
    give_to_server(tmp)
    os.rename(tmp, d / "new" / name)
    got = listing(ss, "other")
    assert got == [(msgs[0][1], msgs[0][0]), (msgs[1][1], msgs[1][0]), (name, data)], \
        [uq for uq, _ in got]
    # it is a message like the others: DELE removes it
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        c.cmd_expect("UIDL 3", "+OK 3 " + name)
        c.cmd_expect("DELE 3", "+OK Message 3 deleted")
        c.cmd_expect("QUIT", "+OK Logging out, 1 message deleted")
    assert not (d / "new" / name).exists()
    assert [uq for uq, _ in listing(ss, "other")] == [msgs[0][1], msgs[1][1]]


def test_message_removed_by_another_tool(ss):
    u = addr("gone")
    msgs = [deliver(ss, u) for _ in range(3)]
    listing(ss, "gone")
    (maildir_dir(ss, "gone") / "new" / msgs[1][2]).unlink()
    got = listing(ss, "gone")
    assert got == [(msgs[0][1], msgs[0][0]), (msgs[2][1], msgs[2][0])]
    later = deliver(ss, u)
    assert [uq for uq, _ in listing(ss, "gone")] == [msgs[0][1], msgs[2][1], later[1]]


# ---------------------------------------------------------------- new user


FOLDERS = (".Sent", ".Drafts", ".Trash", ".Junk", ".Archive")


def _check_folders(d):
    for sub in ("tmp", "new", "cur"):
        assert (d / sub).is_dir(), "INBOX %s/ missing" % sub
    for f in FOLDERS:
        assert (d / f).is_dir(), "folder %s missing: %s" % (f, sorted(os.listdir(d)))
        assert (d / f / "maildirfolder").is_file(), "%s/maildirfolder missing" % f
        assert (d / f / "maildirfolder").stat().st_size == 0
        for sub in ("tmp", "new", "cur"):
            assert (d / f / sub).is_dir(), "%s/%s missing" % (f, sub)
        assert (d / f).stat().st_mode & 0o077 == 0, "%s is not private" % f


def test_new_user_gets_folders_on_first_login(ss):
    u = addr("fresh")
    d = maildir_dir(ss, "fresh")
    assert not d.exists()
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        c.cmd_expect("STAT", "+OK 0 0")
        c.cmd_expect("LIST", "+OK")
        assert c.multi() == []
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")
    _check_folders(d)
    # a second login leaves them alone, and mail arrives in the INBOX
    marker = d / ".Sent" / "cur" / "1.M1P1.kept:2,S"
    marker.write_bytes(b"Subject: kept\r\n\r\nx\r\n")
    give_to_server(marker)
    msg = deliver(ss, u)
    assert listing(ss, "fresh") == [(msg[1], msg[0])]
    assert marker.exists()
    _check_folders(d)


def test_folders_not_listed_in_inbox(ss):
    """Mail in a folder (here .Sent, put there by another client) is not
    part of the POP3 INBOX."""
    u = addr("fresh2")
    msg = deliver(ss, u)
    d = maildir_dir(ss, "fresh2")
    (d / ".Sent" / "new").mkdir(parents=True, exist_ok=True)
    for p in (d / ".Sent", d / ".Sent" / "new"):
        give_to_server(p)
    f = d / ".Sent" / "new" / "2000000000.M1P1.client,S=20"
    f.write_bytes(b"Subject: sent\r\n\r\nx\r\n")
    give_to_server(f)
    assert listing(ss, "fresh2") == [(msg[1], msg[0])]


# ---------------------------------------------------------------- files written by other tools


def _lines_crlf(content):
    """What RETR must send for a file with any line ends: each line (ended
    by CRLF, a bare LF or a bare CR; the last one maybe unended) + CRLF."""
    import re as _re
    parts = _re.split(rb"\r\n|\n|\r", content)
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def _drop_file(server, local, name, content):
    d = maildir_dir(server, local)
    tmp = d / "tmp" / name
    tmp.write_bytes(content)
    give_to_server(tmp)
    os.rename(tmp, d / "new" / name)


def test_lf_bare_cr_and_unended_last_line_from_another_tool(ss):
    """Another delivery agent may write LF line ends, a bare CR, and no
    line end at the end. RETR and TOP send CRLF lines only, stuff every
    line starting with "." (also after a bare CR: Dovecot CVE-2026-33604),
    and end the last line before the terminating ".", so the client can
    never see an early end of the message or a bare CR or LF."""
    u = addr("lf")
    deliver(ss, u)          # makes the Maildir and index
    listing(ss, "lf")
    files = {
        "1900000001.M1P1.lf,S=1": b"Subject: lf\n\nline one\n.dot\n..two\n.\nend\n",
        "1900000002.M1P1.cr,S=1": b"Subject: cr\r\n\r\nA\r.\r\nQUIT\r\n.\rB\r\n",
        "1900000003.M1P1.noend,S=1": b"Subject: noend\r\n\r\nbody\r\n.",
        "1900000004.M1P1.noend2,S=1": b"Subject: noend2\r\n\r\nlast line",
        "1900000005.M1P1.crlast,S=1": b"Subject: crlast\r\n\r\nx\r",
    }
    for name, content in files.items():
        _drop_file(ss, "lf", name, content)
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        ids = c.uidl()
        assert [x for _, x in ids[1:]] == list(files), ids
        for (n, name), content in zip(ids[1:], files.values()):
            r = c.cmd("RETR %d" % n)
            assert re.fullmatch(r"\+OK \d+ octets", r), r
            wire = c.multi_raw()    # raw_line asserts every line ends CRLF
            want = [(b"." + x) if x.startswith(b".") else x for x in _lines_crlf(content)]
            assert wire == want, "RETR of %s:\n got %r\nwant %r" % (name, wire, want)
            c.send(b"TOP %d 1\r\n" % n)
            c.expect("+OK Top of message follows")
            top = c.multi_raw()
            assert top == want[:len(top)] and len(top) >= 2, (name, top, want)
        c.cmd_expect("NOOP", "+OK")
        c.cmd_expect("QUIT", "+OK Logging out, 0 messages deleted")


def test_list_size_of_lf_file_is_what_retr_sends(ss):
    """RFC 1939: LIST, STAT and "+OK n octets" give the size RETR sends
    (before byte-stuffing). A file dropped into the Maildir by hand with LF
    line ends (or a bare CR, or no final line end) is sent as CRLF lines, so
    its size is larger than the file's: the index learns it once and LIST
    gives exactly what poplib counts for RETR."""
    u = addr("lfsize")
    deliver(ss, u)          # the Maildir and its index
    listing(ss, "lfsize")
    files = {
        "1900000011.M1P1.lfonly": b"Subject: lf only\n\nline one\n.dot\n\nlast\n",
        "1900000012.M1P1.mixed": b"Subject: mixed\r\n\nA\r.\rB\r\n.\nend",
        "1900000013.M1P1.crlf,S=20": b"Subject: ok\r\n\r\nx\r\n",
    }
    for name, content in files.items():
        _drop_file(ss, "lfsize", name, content)
    p = poplib.POP3("127.0.0.1", ss.pop3_port, timeout=10)
    try:
        p.user(u)
        p.pass_(USERS[u])
        resp, lines, _ = p.list()
        sizes = {int(n): int(sz) for n, sz in (l.split() for l in lines)}
        count, total = p.stat()
        assert count == len(sizes) == 4 and total == sum(sizes.values())
        ids = {int(n): uq.decode() for n, uq in (l.split() for l in p.uidl()[1])}
        for n, size in sizes.items():
            resp, body, octets = p.retr(n)
            got = b"".join(x + b"\r\n" for x in body)
            assert octets == len(got) == size, (ids[n], octets, len(got), size, resp)
            assert resp == b"+OK %d octets" % size, resp
            assert p.list(n) == b"+OK %d %d" % (n, size)
            name = ids[n]
            if name in files:
                want = b"".join(x + b"\r\n" for x in _lines_crlf(files[name]))
                assert got == want, (name, got, want)
                assert size > len(files[name]) or name.endswith(",S=20"), name
        p.quit()
    finally:
        p.close()
    # Known now: the index holds the CRLF size; a second session says the same.
    p = poplib.POP3("127.0.0.1", ss.pop3_port, timeout=10)
    try:
        p.user(u)
        p.pass_(USERS[u])
        again = {int(n): int(sz) for n, sz in (l.split() for l in p.list()[1])}
        assert again == sizes
        p.quit()
    finally:
        p.close()


def test_keyword_letters_of_another_tool_kept(ss):
    """A Maildir used by Dovecot: keyword letters (a..z, named in
    dovecot-keywords) and unknown letters stay in the names through POP3
    sessions, deletions and an index rebuild; dovecot-keywords is left as
    it was; our own names carry Dovecot's ,S= and ,W= fields."""
    u = addr("kwnames")
    _, _, mine = deliver(ss, u)
    assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+R[0-9a-f]{16}\.[^,]+,S=(\d+),W=\1", mine), mine
    d = maildir_dir(ss, "kwnames")
    (d / "dovecot-keywords").write_bytes(b"0 $Forwarded\n1 Junk\n")
    give_to_server(d / "dovecot-keywords")
    names = ["1800000001.M1P1.dc,S=14,W=14:2,RSab", "1800000002.M1P1.dc,S=14,W=14:2,Sbz",
             "1800000003.M1P1.dc,S=14,W=14:2,ac"]
    for n in names:
        f = d / "cur" / n
        f.write_bytes(b"Subject: k\r\n\r\n")
        give_to_server(f)
    for _ in range(2):
        listing(ss, "kwnames")
    for f in index_files(ss, "kwnames"):
        f.unlink()
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        ids = dict((uq, i) for i, uq in c.uidl())
        c.cmd_expect("DELE %d" % ids[pop3_uidl(names[2].split(":")[0])],
                     "+OK Message %d deleted" % ids[pop3_uidl(names[2].split(":")[0])])
        c.cmd_expect("QUIT", "+OK Logging out, 1 message deleted")
    left = sorted(p.name for p in (d / "cur").iterdir())
    assert left == names[:2], left
    assert (d / "dovecot-keywords").read_bytes() == b"0 $Forwarded\n1 Junk\n"


def test_file_renamed_by_another_tool_during_session(ss):
    """A Maildir client moves a message new/ -> cur/ (flag change) while a
    POP3 session holds it: RETR still finds it, and DELE + QUIT removes
    the renamed file."""
    u = addr("race")
    msgs = [deliver(ss, u) for _ in range(3)]
    listing(ss, "race")
    d = maildir_dir(ss, "race")
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        os.rename(d / "new" / msgs[0][2], d / "cur" / (msgs[0][2] + ":2,S"))
        os.rename(d / "new" / msgs[1][2], d / "cur" / (msgs[1][2] + ":2,RS"))
        assert c.retr(1)[0] == msgs[0][0]
        assert c.retr(2)[0] == msgs[1][0]
        c.cmd_expect("UIDL 1", "+OK 1 %s" % msgs[0][1])
        c.cmd_expect("DELE 1", "+OK Message 1 deleted")
        c.cmd_expect("DELE 3", "+OK Message 3 deleted")
        c.cmd_expect("QUIT", "+OK Logging out, 2 messages deleted")
    left = sorted(p.name for p, _ in ss.messages(u))
    assert left == [msgs[1][2] + ":2,RS"], left


def test_file_removed_by_another_tool_during_session(ss):
    """A message unlinked by another tool after the snapshot: RETR answers
    -ERR (not a crash, not an empty +OK), and QUIT still succeeds or says
    the removal was incomplete; the other messages are intact."""
    u = addr("race2")
    msgs = [deliver(ss, u) for _ in range(3)]
    listing(ss, "race2")
    d = maildir_dir(ss, "race2")
    with POP3Raw(ss.pop3_port) as c:
        c.login_ok(u, USERS[u])
        (d / "new" / msgs[1][2]).unlink()
        r = c.cmd("RETR 2")
        assert r.startswith("-ERR "), (r, c.dump())
        assert c.retr(1)[0] == msgs[0][0]
        c.cmd_expect("DELE 2", "+OK Message 2 deleted")
        r = c.cmd("QUIT")
        assert r in ("+OK Logging out, 1 message deleted",
                     "-ERR [SYS/TEMP] Some deleted messages were not removed"), r
    assert [uq for uq, _ in listing(ss, "race2")] == [msgs[0][1], msgs[2][1]]
