"""Session-wide test settings: no CAPY*/CAPYDB_* variable of the caller leaks into a test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_capy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CAPY_", "CAPYDB_")):
            monkeypatch.delenv(name)
