"""Local JSON files that provmint reads back (key file, store marker's neighbours, anchor
records, print records, the store lock's note, labels manifests) may be damaged in any
way. Deep nesting is the class the C decoder turns into a RecursionError (or, under a
raised recursion limit, a crash): every reader refuses it as damage, in its own words,
through the bounded loader (:func:`provmint.store.files.load_json`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import one_error
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint.chain import keystore_address
from provmint.errors import EXIT_KEY, AnchorError, StoreCorruptError
from provmint.labelformats import manifest as labels_manifest
from provmint.store import anchors, lock, prints
from provmint.store.files import load_json

DEEP = [
    b"[" * 100_000,
    b'{"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b'{"format": ' + b"{" * 20_000,
]
"""Nested far past any limit: unclosed, closed, and inside an object."""


@settings(max_examples=200, deadline=None)
@given(depth=st.integers(0, 3_000), closed=st.booleans(), text=st.text(max_size=30))
def test_load_json_refuses_depth_as_value_error(depth: int, closed: bool, text: str) -> None:
    """Within the limit it is json.loads; past it, a ValueError, never RecursionError;
    brackets inside strings do not count."""
    import json

    quoted = json.dumps("[" * depth + text)
    doc = "[" * depth + quoted + ("]" * depth if closed else "")
    try:
        value = load_json(doc, max_depth=16)
    except ValueError:
        assert depth > 16 or not closed  # too deep, or not JSON
        return
    assert depth <= 16 and (closed or depth == 0)
    assert value == json.loads(doc)


@pytest.mark.parametrize("data", DEEP)
def test_a_deeply_nested_key_file_is_a_key_problem(cli, isolated: Path, data: bytes) -> None:
    path = isolated / "keys" / "keys.json"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(data)
    path.chmod(0o600)
    one_error(cli("keys", "list"), EXIT_KEY, "not a readable provmint key file")


READERS: list[tuple[str, Callable[[Path], object], Callable[[object], bool]]] = [
    (
        "anchor record",
        anchors.read_anchor_file,
        lambda exc: isinstance(exc, StoreCorruptError) and "anchor record" in str(exc),
    ),
    (
        "chain keystore",
        keystore_address,
        lambda exc: isinstance(exc, AnchorError) and "not a readable keystore" in str(exc),
    ),
    ("lock note", lock._holder, lambda result: result == "another provmint process"),
    (
        "labels manifest",
        labels_manifest._read,
        lambda exc: isinstance(exc, labels_manifest.ManifestMismatch),
    ),
]


@pytest.mark.parametrize("data", DEEP)
@pytest.mark.parametrize(("name", "read", "expected"), READERS, ids=[r[0] for r in READERS])
def test_deeply_nested_local_files_are_damage(
    tmp_path: Path,
    data: bytes,
    name: str,
    read: Callable[[Path], object],
    expected: Callable[[object], bool],
) -> None:
    path = tmp_path / "file.json"
    path.write_bytes(data)
    try:
        result: object = read(path)
    except Exception as exc:  # the reader's own refusal, never RecursionError
        assert not isinstance(exc, RecursionError)
        assert expected(exc), exc
    else:
        assert expected(result), result


@pytest.mark.parametrize("data", DEEP)
def test_a_deeply_nested_print_record_line_is_skipped(data: bytes) -> None:
    assert prints._parse(data[:1000]) is None
