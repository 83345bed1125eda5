"""The SIP proxy.  Its hot modules run compiled when a current build exists (proxy/native.py)."""
from . import native as _native

_native.install()
