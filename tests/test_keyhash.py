"""``provmint-keyhash/1``: every implementation (the core's, ingest's numpy and C column
versions, the audit's own) gives the known answers in ``tests/vectors/keyhash.json``,
and agrees with the others on generated pairs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from conftest import LOCAL_VECTORS
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import audit, ingest
from provmint.keyhash import key_block, key_hash

VECTORS = json.loads((LOCAL_VECTORS / "keyhash.json").read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['gtin14']}/{v['serial']}")
def test_core_known_answers(vector: dict[str, object]) -> None:
    gtin, serial = str(vector["gtin14"]), str(vector["serial"])
    assert key_block(gtin, serial).hex() == vector["block"]
    assert key_hash(gtin, serial) == vector["key"]
    assert key_hash(gtin, serial).to_bytes(8, "little").hex() == vector["key_le_hex"]


def _columns(pairs: list[tuple[str, str]]) -> tuple[pa.Array, pa.Array]:
    return pa.array([g for g, _ in pairs], pa.string()), pa.array(
        [s for _, s in pairs], pa.string()
    )


def test_column_implementations_known_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = [(str(v["gtin14"]), str(v["serial"])) for v in VECTORS]
    expected = [int(v["key"]) for v in VECTORS]  # type: ignore[call-overload]
    gtin, serial = _columns(pairs)
    assert ingest.key_hashes(gtin, serial).tolist() == expected  # C when built
    assert audit.key_hashes(gtin, serial).tolist() == expected
    monkeypatch.setattr(ingest, "_native_key_hashes", None)  # the numpy fallback
    assert ingest.key_hashes(gtin, serial).tolist() == expected


_SERIAL = st.text(
    alphabet=st.sampled_from("ABCXYZ0189!\"%&'()*+,-./:;<=>?_az"), min_size=0, max_size=20
)
_GTIN = st.text(alphabet="0123456789", min_size=14, max_size=14)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_GTIN, _SERIAL), min_size=1, max_size=40))
def test_implementations_agree(pairs: list[tuple[str, str]]) -> None:
    gtin, serial = _columns(pairs)
    core = np.array([key_hash(g, s) for g, s in pairs], dtype=np.uint64)
    assert ingest.key_hashes(gtin, serial).tolist() == core.tolist()
    assert audit.key_hashes(gtin, serial).tolist() == core.tolist()


@pytest.mark.parametrize(("gtin", "serial"), [("0952012345022", "X"), ("09520123450229", "X" * 21)])
def test_bad_shapes_are_refused(gtin: str, serial: str) -> None:
    with pytest.raises(ValueError):
        key_hash(gtin, serial)
