"""RADIUS accounting (RFC 2866) of sipledger calls: a stream processor from
``sip.events`` to FreeRADIUS / any RADIUS accounting server, with a durable
retry queue.  Run it with ``python -m radius``."""

from pathlib import Path as _Path

DICTIONARY = _Path(__file__).resolve().parent / "dictionary"   # the project's own pyrad dictionary


def dictionary_path(dictionary: str) -> _Path:
    """``[radius] dictionary`` or the project's own."""
    return _Path(dictionary) if dictionary else DICTIONARY
