"""The disk's fsync rate, the ceiling under any durable mail server here.

Two loops, each bounded by a count and a time (whichever ends first), in a
scratch directory on the same filesystem as the servers' data:

  newfile  what a file-per-message queue does: create tmp/N, write SIZE
           bytes, fsync it, rename into new/, and every BATCH files one
           fsync of new/ (BATCH=1: per file, as qmail/Maildir; larger:
           group commit)
  parallel newfile in 8 threads at once (several fsyncs in flight)
  append   what a log-structured spool does: append SIZE bytes to one open
           file and fdatasync it

Run alone: /usr/bin/python3 bench/fsyncrate.py [DIR]  (prints JSON)
"""

import json
import os
import shutil
import sys
import tempfile
import time


def _newfile(base, size, count, seconds, batch):
    tmp, new = os.path.join(base, "tmp"), os.path.join(base, "new")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(new, exist_ok=True)
    dfd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    data = b"x" * size
    n = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    try:
        while n < count and time.monotonic() < deadline:
            name = "m%d" % n
            fd = os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(os.path.join(tmp, name), os.path.join(new, name))
            n += 1
            if n % batch == 0:
                os.fsync(dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return n, time.monotonic() - t0


def _parallel(base, size, count, seconds, threads, batch):
    """_newfile in `threads` threads at once (each its own tmp/ and new/):
    what a committer that keeps several fsyncs in flight could reach."""
    import threading
    results = [None] * threads

    def work(i):
        d = os.path.join(base, "t%d" % i)
        os.makedirs(d)
        results[i] = _newfile(d, size, count // threads, seconds, batch)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(r[0] for r in results if r), time.monotonic() - t0


def _append(base, size, count, seconds):
    path = os.path.join(base, "log")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fsync(fd)
    data = b"x" * size
    n = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    try:
        while n < count and time.monotonic() < deadline:
            os.write(fd, data)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
    return n, time.monotonic() - t0


def measure(where, size=1024, count=20000, seconds=3.0):
    """{test: {"ops": n, "seconds": s, "per_s": rate}} for the loops above."""
    base = tempfile.mkdtemp(prefix="fsyncrate.", dir=where)
    out = {}
    try:
        for name, fn in (("newfile+fsync+rename, dir fsync each", lambda d: _newfile(d, size, count, seconds, 1)),
                         ("newfile+fsync+rename, dir fsync per 32", lambda d: _newfile(d, size, count, seconds, 32)),
                         ("newfile+fsync+rename, 8 threads, dir fsync per 32",
                          lambda d: _parallel(d, size, 3 * count, seconds, 8, 32)),
                         ("append+fdatasync", lambda d: _append(d, size, count, seconds))):
            d = os.path.join(base, str(len(out)))
            os.makedirs(d)
            n, s = fn(d)
            out[name] = {"ops": n, "seconds": round(s, 3), "per_s": round(n / s, 1) if s > 0 else 0}
            shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


if __name__ == "__main__":
    where = sys.argv[1] if len(sys.argv) > 1 else "."
    print(json.dumps(measure(where), indent=2))
