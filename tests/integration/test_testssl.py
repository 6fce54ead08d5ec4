"""testssl.sh against the implicit TLS (submissions) and the STARTTLS
(submission) listeners: protocol versions, cipher categories, compression
and renegotiation (io/tls.h policy). Loopback only: the target is
127.0.0.1:PORT with --ip 127.0.0.1 and --nodns none, so testssl makes no DNS
query and connects nowhere else. Each run is bounded by a subprocess
timeout; both run in parallel to keep the module under ~1 minute."""

import json
import shutil
import subprocess
import threading

import pytest

from helpers import make_submission_server

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
TIMEOUT = 120


def run_testssl(port, tmp_path, name, starttls):
    out_json = tmp_path / ("%s.json" % name)
    cmd = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off",
           "--openssl", "/usr/bin/openssl", "--ip", "127.0.0.1", "--nodns", "none",
           "--connect-timeout", "10", "--openssl-timeout", "10",
           "--jsonfile", str(out_json),
           "-p", "-s", "-f", "-C", "-R"]
    if starttls:
        cmd += ["-t", "smtp"]
    cmd.append("127.0.0.1:%d" % port)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    try:
        findings = {f["id"]: f for f in json.loads(out_json.read_text())}
    except (OSError, ValueError) as e:
        raise AssertionError("testssl wrote no usable JSON (%s); rc=%d\n%s\n%s"
                             % (e, p.returncode, p.stdout[-4000:], p.stderr[-2000:]))
    return findings, p.stdout


def check_findings(findings, text):
    def f(key):
        assert key in findings, "testssl has no %r finding\n%s" % (key, text)
        return findings[key]

    problems = []

    def want(key, pred, what):
        finding = f(key)
        if not pred(finding["finding"], finding["severity"]):
            problems.append("%s: %r (%s), want %s" % (key, finding["finding"],
                                                      finding["severity"], what))

    offered = lambda s, _: s.startswith("offered")           # noqa: E731
    not_offered = lambda s, _: s.startswith("not offered")   # noqa: E731
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        want(proto, not_offered, "not offered")
    want("TLS1_2", offered, "offered")
    want("TLS1_3", offered, "offered")
    for cat in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT",
                "cipherlist_LOW", "cipherlist_3DES_IDEA",
                # io/tls.h: TLS 1.2 suites are AEAD only, so no CBC
                "cipherlist_AVERAGE"):
        want(cat, not_offered, "not offered")
    want("cipherlist_STRONG", offered, "offered")
    want("PFS", lambda s, sev: s.startswith("offered") and sev == "OK", "offered")
    want("CRIME_TLS", lambda s, _: "not vulnerable" in s, "not vulnerable (no compression)")
    want("secure_renego", lambda s, sev: "VULNERABLE" not in s.upper() or
         "NOT VULNERABLE" in s.upper(), "not vulnerable")
    want("secure_client_renego", lambda s, _: "not vulnerable" in s, "not vulnerable")
    # nothing rated worse than LOW in what was tested
    for key, finding in findings.items():
        if finding["severity"] in ("MEDIUM", "HIGH", "CRITICAL"):
            problems.append("%s: %r rated %s" % (key, finding["finding"], finding["severity"]))
    assert not problems, "\n".join(problems) + "\n\n" + text


@pytest.mark.skipif(TESTSSL is None, reason="testssl.sh not installed")
def test_testssl_submissions_and_submission(make_server, pki, tmp_path):
    s = make_submission_server(make_server, pki, extra="limit connections-per-client 1000\n")
    results = {}

    def run(name, port, starttls):
        try:
            results[name] = run_testssl(port, tmp_path, name, starttls)
        except BaseException as e:     # reported below
            results[name] = e

    threads = [threading.Thread(target=run, args=("implicit-465", s.subs_port, False)),
               threading.Thread(target=run, args=("starttls-587", s.sub_port, True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 10)
    errors = []
    for name in ("implicit-465", "starttls-587"):
        res = results.get(name)
        if isinstance(res, BaseException) or res is None:
            errors.append("%s: %r" % (name, res))
            continue
        try:
            check_findings(*res)
        except AssertionError as e:
            errors.append("%s:\n%s" % (name, e))
    assert not errors, "\n\n".join(errors)
    assert s.running()
