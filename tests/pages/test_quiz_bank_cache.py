"""app.resources.get_bank: one shared bank per version of the prepared data, reloaded when it is prepared again."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import resources
from tests.pages.auth_harness import app_environment
from tests.pages.quiz_harness import BANK, write_prepared_bank


def test_bank_is_cached_per_manifest_and_reloaded_after_prepare(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    for _engine in app_environment(monkeypatch, tmp_path):
        with pytest.raises(FileNotFoundError, match="python -m core.data prepare"):
            resources.get_bank()
        write_prepared_bank(tmp_path, BANK[:3])
        first = resources.get_bank()
        assert [r.id for r in first.records] == [r.id for r in BANK[:3]]
        assert resources.get_bank() is first  # shared, not re-read per run
        write_prepared_bank(tmp_path, BANK)  # `python -m core.data prepare` writes a new manifest
        second = resources.get_bank()
        assert second is not first and len(second) == len(BANK)
