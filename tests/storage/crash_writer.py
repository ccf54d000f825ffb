"""A history writer for the crash test: ``python -m tests.storage.crash_writer DB_URL ACK_FILE``.

Opens the database exactly as the app does (:func:`storage.engine.open_database`), then two threads
write case runs and quiz answers as fast as they can, appending one line per *committed* row to
ACK_FILE, until the process is killed.
"""

from __future__ import annotations

import sys
import threading

from sqlmodel import Session

from storage import accounts, attempts, history
from storage.engine import open_database

ANSWERS = 5_000


def main(url: str, ack_path: str) -> None:
    engine = open_database(url)
    with Session(engine) as session:
        user = accounts.create_user(session=session, username="crash-writer", password="correct horse")
        attempt = attempts.start_attempt(session=session, user_id=user.id,
                                         item_ids=[f"item:{i}" for i in range(ANSWERS)])
        user_id, attempt_id = user.id, attempt.id
    ack = open(ack_path, "a", buffering=1, encoding="utf-8")  # line-buffered: each ack is one write()
    lock = threading.Lock()

    def write_cases() -> None:
        i = 0
        while True:
            with Session(engine) as session:
                run = history.save_case_run(
                    session=session, user_id=user_id, case_text=f"crash case {i}", reasoning="r" * 2000,
                    answer=f"answer {i}", base_model="embedded", adapter="", timings={"tokens": i},
                )
                run_id = run.id
            with lock:
                ack.write(f"case {run_id} {i}\n")
            i += 1

    def write_answers() -> None:
        for position in range(ANSWERS):
            with Session(engine) as session:
                attempts.record_answer(session=session, attempt_id=attempt_id, user_id=user_id, position=position,
                                       chosen="ABCD"[position % 4], correct=position % 2 == 0)
            with lock:
                ack.write(f"answer {attempt_id} {position}\n")

    threads = [threading.Thread(target=write_cases, daemon=True), threading.Thread(target=write_answers, daemon=True)]
    for thread in threads:
        thread.start()
    with lock:
        ack.write("ready\n")
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
