"""The test processes' units (tests/harness/xdist.py): a folder sharing one `up`
goes whole to one process; any other test file is its own unit."""
from __future__ import annotations

from tests.harness.xdist import scope_of


def test_a_shared_up_folder_is_one_unit():
    assert scope_of("tests/e2e/test_calls.py::test_busy") == "tests/e2e"
    assert scope_of("tests/panel/test_pages.py::test_x[chromium]") == "tests/panel"


def test_other_files_are_their_own_unit():
    assert scope_of("tests/unit/test_digest.py::test_rfc2069") == "tests/unit/test_digest.py"
    assert scope_of("tests/integration/test_cdr_processor.py::T::test_y") == "tests/integration/test_cdr_processor.py"
