"""Persistence: SQLModel tables, the engine and migrations, and repository functions (no Streamlit).

- ``models``      every table
- ``engine``      ``open_database(url)`` (create + migrate), SQLite safety settings; CLI in ``migrate``
- ``accounts``    users, sign-in, roles, OpenID Connect mapping (``passwords`` does the hashing)
- ``history``     case-study runs, who sees what, deletion, CSV/JSON export
- ``rate_limit``  the per-user hourly generation limit
- ``quizzes``     quiz sets, item overrides, imported items
- ``attempts``    quiz attempts and answers
- ``reviews``     spaced-repetition cards
- ``classes``     classes, enrolment, assignments, peer first answers, FSRS review settings
- ``training``    training runs and the adapter registry
- ``rows``        save one row / delete one row by id (the unit of work most functions end with)

Repository functions take a keyword-only ``session`` and commit their own unit of work::

    with Session(engine) as session:
        run = history.save_case_run(session=session, user_id=..., ...)
"""
