"""``capy blob-key generate``: a key on stdout alone, its id on stderr, nothing touched."""

from __future__ import annotations

import json

from pulumi_capy.engine.blob_keys import BlobKey, load_blob_keys
from tests.cli.conftest import Capy


def test_generate_prints_a_key_that_loads(capy: Capy) -> None:
    result = capy("blob-key", "generate")
    key = result.stdout.strip()
    assert result.stdout == key + "\n"  # KEY=$(capy blob-key generate) works
    ring = load_blob_keys({"CAPY_BLOB_KEY": key})
    assert ring is not None
    assert ring.current.key_id_hex in result.stderr
    assert "CAPY_BLOB_KEY" in result.stderr
    assert key not in result.stderr
    assert not capy.engine_dir.exists()  # offline: no engine is opened or made


def test_every_key_is_new(capy: Capy) -> None:
    keys = {capy.raw("blob-key", "generate").stdout.strip() for _ in range(5)}
    assert len(keys) == 5


def test_generate_json(capy: Capy) -> None:
    printed = json.loads(capy.raw("blob-key", "generate", "--json").stdout)
    assert set(printed) == {"key", "key_id"}
    assert BlobKey.from_text(printed["key"]).key_id_hex == printed["key_id"]
