"""Fixtures for the integration tests: a real estafeta process per module.

ESTAFETA_BIN selects the binary (default build/asan/estafeta). Each module
gets its own server (scope="module"); destructive tests build their own with
make_server(). On a failing test the tail of every involved server's log is
attached to the report; at teardown a server whose log holds a sanitizer
report fails the test that used it.

Run as root, the server is configured with `run-as nobody` (estafeta refuses
to parse network input as root) and the temp directories are made
traversable (o+x) so that user can reach its data dir and re-read the
config on SIGHUP.

    /usr/bin/python3 -m pytest -q tests/integration
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Server, finish_server as _finish, require_binary as _require_binary  # noqa: E402

_servers_by_item = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_binary()
    s = Server(tmp_path_factory.mktemp("srv")).start()
    yield s
    problems = _finish(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))


@pytest.fixture
def make_server(tmp_path, request):
    """Factory for function-scoped servers: make_server(start=True, **kw)."""
    _require_binary()
    made = []

    def factory(start=True, **kw):
        s = Server(tmp_path / ("srv%d" % len(made)), **kw)
        made.append(s)
        _servers_by_item.setdefault(request.node.nodeid, []).append(s)
        if start:
            s.start()
        return s

    yield factory
    problems = []
    for s in made:
        problems += _finish(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(s.log_tail(200) for s in made))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    servers = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Server)]
    servers += _servers_by_item.get(item.nodeid, [])
    seen = set()
    for s in servers:
        if id(s) in seen:
            continue
        seen.add(id(s))
        rep.sections.append(("estafeta log %s" % s.root.name, s.log_tail(120)))


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Test CA and two server certificates (helpers.make_pki), made once."""
    from helpers import make_pki
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sub_server(tmp_path_factory, pki):
    """One server per module with mx, submission and submissions listeners,
    both test certificates, users carol and dave (helpers.PASSWORDS) and an
    alias crew@ holding both; auth-delay 0 so failures are fast, and
    auth-failures high so the failed logins of many tests never lock
    127.0.0.1 out (the lockout has its own server)."""
    from helpers import Server, make_submission_server
    _require_binary()
    root = tmp_path_factory.mktemp("subsrv")
    extra = ("alias crew@example.test carol@example.test, dave@example.test\n"
             "alias solo@example.test bob@example.test\n"
             "limit auth-delay 0\nlimit auth-failures 1000\n")
    s = make_submission_server(lambda start, extra: Server(root, extra=extra), pki,
                               extra=extra)
    yield s
    problems = _finish(s)
    if problems:
        pytest.fail("; ".join(problems) + "\n" + s.log_tail(200))
