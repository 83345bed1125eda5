"""Logs hostile traffic cannot flood: repeated lines rate-limited, files rotated by size."""
from __future__ import annotations

import logging
import sys

from proxy.infra.logs import RepeatFilter, RotatingLog
from proxy.infra.supervise import Child
from tests.harness.poll import eventually


def _record(msg="bad input from %s", args=("x",), exc=None):
    return logging.LogRecord("sipledger.proxy", logging.ERROR, __file__, 1, msg, args, exc)


def test_repeated_lines_are_suppressed_then_counted():
    now = [0.0]
    f = RepeatFilter(burst=3, interval=60, clock=lambda: now[0])
    passed = [f.filter(_record(args=(i,))) for i in range(1000)]
    assert passed.count(True) == 3                   # the template is the key, not the arguments
    assert f.filter(_record("another message")) is True
    now[0] = 61
    record = _record()
    assert f.filter(record) is True and "997 similar lines suppressed" in record.getMessage()


def test_tracebacks_of_different_exceptions_are_different_keys():
    f = RepeatFilter(burst=1, interval=60, clock=lambda: 0.0)
    try:
        raise ValueError("x")
    except ValueError:
        value_error = sys.exc_info()
    try:
        raise KeyError("x")
    except KeyError:
        key_error = sys.exc_info()
    assert f.filter(_record(exc=value_error)) and f.filter(_record(exc=key_error))
    assert not f.filter(_record(exc=value_error))


def test_rotating_log_keeps_size_and_count(tmp_path):
    log = RotatingLog(tmp_path / "proxy.log", max_bytes=1000, backups=2)
    for i in range(100):
        log.write(f"line {i:04d} {'x' * 40}\n".encode())
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["proxy.log", "proxy.log.1", "proxy.log.2"]
    assert all((tmp_path / n).stat().st_size <= 1000 for n in files)
    assert "line 0099" in (tmp_path / "proxy.log").read_text()


def test_supervised_child_output_is_rotated(tmp_path):
    chatty = "import sys\nprint('CHATTY READY', flush=True)\nfor i in range(5000): print('x' * 100, file=sys.stderr)\n"
    c = Child("chatty", [sys.executable, "-c", chatty], "CHATTY READY", log=tmp_path / "chatty.log",
              log_max_bytes=64 * 1024, log_backups=2)
    c.start()
    try:
        eventually(lambda: not c.running, timeout=30)
    finally:
        c.signal(15)
        c.wait(10)
        c.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert sum((tmp_path / n).stat().st_size for n in names) <= 3 * 64 * 1024


def test_throttled_call_site_lines_are_limited_per_template():
    """A flood line is held back per interval and counted; another template (the
    rare "overload over") is not swallowed by it."""
    from proxy.runtime.throttle import ThrottledLog

    now = [0.0]
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("test.throttle")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(Capture())
    throttled = ThrottledLog(logger, every=10.0, clock=lambda: now[0])
    for n in range(5):
        throttled(logging.WARNING, "refused %d", n)
    throttled(logging.INFO, "overload over")
    now[0] = 11.0
    throttled(logging.WARNING, "refused %d", 5)
    assert lines == ["refused 0", "overload over", "refused 5 (and 4 more like it since the last line)"]
