"""Crash safety: a writer process using the app's engine setup is killed with SIGKILL mid-burst.

After a restart every row whose commit had returned is present and intact, and SQLite's
``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from storage import accounts, history
from storage.engine import integrity_check, open_database
from storage.models import AttemptItem, CaseRun

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIN_ACKED_ROWS = 150


@pytest.mark.slow
def test_kill_9_during_a_burst_of_history_writes_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "medstudy.db"
    url = f"sqlite:///{db}"
    ack = tmp_path / "acks.txt"
    writer = subprocess.Popen([sys.executable, "-m", "tests.storage.crash_writer", url, str(ack)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and writer.poll() is None:
            text = ack.read_text() if ack.exists() else ""
            # Kill only once both writer threads have committed rows (under load one can start late).
            if text.count("\n") > MIN_ACKED_ROWS and "\ncase " in text and "\nanswer " in text:
                break
            time.sleep(0.05)
        assert writer.poll() is None, f"the writer died early: {writer.stdout.read().decode() if writer.stdout else ''}"
        os.kill(writer.pid, signal.SIGKILL)  # mid-burst: both threads are inside write transactions or close to one
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert Path(f"{db}-wal").exists(), "the kill should leave a WAL for recovery to replay"

    lines = [line.split() for line in ack.read_text().splitlines() if line and line != "ready"]
    acked_cases = {int(f[1]): int(f[2]) for f in lines if f[0] == "case"}
    acked_answers = {(int(f[1]), int(f[2])) for f in lines if f[0] == "answer"}
    assert acked_cases and acked_answers, "both kinds of write were under way"

    engine = open_database(url)  # the restart
    try:
        assert integrity_check(engine) == "ok"
        with Session(engine) as session:
            cases = {run.id: run for run in session.exec(select(CaseRun))}
            answers = {(item.attempt_id, item.position): item for item in session.exec(select(AttemptItem))}
            for run_id, i in acked_cases.items():
                assert cases[run_id].case_text == f"crash case {i}" and cases[run_id].timings == {"tokens": i}
                assert cases[run_id].reasoning == "r" * 2000
            for key in acked_answers:
                assert answers[key].chosen == "ABCD"[key[1] % 4] and answers[key].answered_at is not None
            # The database keeps working after the crash.
            user = accounts.get_user_by_username(session=session, username="crash-writer")
            history.save_case_run(session=session, user_id=user.id, case_text="after restart", reasoning="",
                                  answer="", base_model="embedded", adapter="")
            assert history.list_case_runs(session=session, user_id=user.id, limit=1)[0].case_text == "after restart"
    finally:
        engine.dispose()
