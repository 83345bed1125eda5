"""``cdr_id_for`` written out must stay ``uuid.uuid5`` of the call's identity:
every stored CDR id depends on it."""
from __future__ import annotations

import random
import string
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


def test_cdr_id_is_uuid5_over_many_random_identities():
    """20,000 seeded identities of every shape a Call-ID and tag take (ASCII,
    any BMP text, empty, longer than a SHA-1 block): every variant nibble and
    every hex digit position is hit many times over."""
    rng = random.Random(19)
    alphabets = (string.ascii_letters + string.digits + "-.@_~%+",
                 "".join(chr(c) for c in range(0x20, 0x3000) if not 0xD800 <= c <= 0xDFFF))
    variants = set()
    for _ in range(20_000):
        alphabet = rng.choice(alphabets)
        call_id = "".join(rng.choices(alphabet, k=rng.choice((0, 1, 8, 36, 63, 64, 65, 200))))
        from_tag = "".join(rng.choices(alphabet, k=rng.randrange(0, 24)))
        made = cdr_id_for(call_id, from_tag)
        assert made == str(uuid.uuid5(_NAMESPACE, f"{call_id}\x00{from_tag}")), (call_id, from_tag)
        variants.add(made[19])
    assert variants == set("89ab")
