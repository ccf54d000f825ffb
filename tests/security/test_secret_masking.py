"""A database URL's password never appears in settings errors, database errors, the migrate CLI or logs."""

from __future__ import annotations

import logging

import pytest

from core.settings import SettingsError, load_settings
from storage import migrate
from storage.engine import MigrationError, open_database
from tests.e2e.server import free_port

SECRET = "s3cr3t-Db-pw"


@pytest.mark.parametrize("url", [f"postgres:admin:{SECRET}@db.example/medstudy", f"admin:{SECRET}@db/medstudy"])
def test_settings_error_hides_a_malformed_url(tmp_path, url: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env={"MEDSTUDY_WORK_DIR": str(tmp_path), "MEDSTUDY_DATABASE_URL": url})
    assert "database_url: not a SQLAlchemy URL" in str(error.value)
    assert SECRET not in str(error.value)


def test_unreachable_database_error_and_logs_hide_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql+psycopg://medstudy:{SECRET}@127.0.0.1:{free_port()}/medstudy?connect_timeout=3"
    with pytest.raises(MigrationError) as error:
        open_database(url)
    assert "could not open or upgrade the database" in str(error.value)  # it did fail for the expected reason
    assert SECRET not in str(error.value) and SECRET not in repr(error.value.__cause__)
    assert SECRET not in caplog.text


def test_migrate_command_line_masks_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://medstudy:{SECRET}@127.0.0.1:{free_port()}/medstudy?connect_timeout=3"
    assert migrate.main(["--url", url, "current"]) == 1
    out = capsys.readouterr()
    assert "medstudy:***@127.0.0.1" in out.err
    assert SECRET not in out.out + out.err
