"""``cdr_id_for`` written out must stay ``uuid.uuid5`` of the call's identity:
every stored CDR id depends on it."""
from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.contract.cdr import _NAMESPACE, cdr_id_for


@settings(max_examples=500, deadline=None)
@given(call_id=st.text(st.characters(blacklist_categories=("Cs",))), from_tag=st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))
def test_cdr_id_is_uuid5(call_id, from_tag):
    assert cdr_id_for(call_id, from_tag) == str(uuid.uuid5(_NAMESPACE, f"{call_id}\x00{from_tag}"))


def test_cdr_id_known_value_and_unencodable_text():
    assert cdr_id_for("c1@test", "ft1") == str(uuid.uuid5(_NAMESPACE, "c1@test\x00ft1"))
    with pytest.raises(UnicodeEncodeError):        # as uuid5: a lone surrogate is refused
        cdr_id_for("\udce9@x", "ft")
