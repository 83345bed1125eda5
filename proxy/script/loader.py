"""Loading the operator's routing module: all or nothing, errors with file and line."""
from __future__ import annotations

import importlib
import traceback
import types
from pathlib import Path

DEFAULT_MODULE = "proxy.script.default"


class RoutingScriptError(Exception):
    """A routing module that cannot be used; the message names file and line."""


def load_script(path: str | None) -> types.ModuleType:
    """The default routing module, or the operator's file at ``path``.

    The file is compiled and executed into a fresh module; a syntax error, an
    exception while importing it or a missing ``route(ctx)`` refuses the whole
    module, so a proxy never runs half a script."""
    if not path:
        return importlib.import_module(DEFAULT_MODULE)
    file = Path(path)
    try:
        source = file.read_text()
    except OSError as exc:
        raise RoutingScriptError(f"{file}: cannot read routing module: {exc.strerror}") from None
    try:
        code = compile(source, str(file), "exec")
    except SyntaxError as exc:
        raise RoutingScriptError(f"{file}:{exc.lineno}: {exc.msg}") from None
    module = types.ModuleType(f"sipledger_routing_{abs(hash(str(file)))}")
    module.__file__ = str(file)
    try:
        exec(code, module.__dict__)
    except Exception as exc:
        line = _line_in(exc, str(file))
        raise RoutingScriptError(f"{file}:{line}: {type(exc).__name__}: {exc}") from None
    if not callable(getattr(module, "route", None)):
        raise RoutingScriptError(f"{file}: defines no route(ctx) function")
    return module


def _line_in(exc: BaseException, filename: str) -> int | str | None:
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename:
            return frame.lineno
    return "?"
