"""Schema migrations from the command line (the app itself upgrades on start).

    python -m storage.migrate upgrade            # bring the configured database to the newest schema
    python -m storage.migrate current            # show the database's revision and the newest one
    python -m storage.migrate revision -m "add x to y" [--autogenerate]

The database is the one in the settings (``MEDSTUDY_DATABASE_URL``, default SQLite in the work
dir) unless ``--url`` is given. ``revision --autogenerate`` compares ``storage/models.py`` with a
scratch in-memory database built from the existing revisions, so it never needs the real database.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alembic import command
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError

from storage import engine as engine_lib


def _url(arg: str | None) -> str:
    if arg:
        return arg
    from core.settings import load_settings  # only the CLI needs settings

    return load_settings().resolved_database_url


def _next_revision_id() -> str:
    names = [p.name.split("_", 1)[0] for p in (engine_lib.MIGRATIONS_DIR / "versions").glob("*.py")]
    return f"{max((int(n) for n in names if n.isdigit()), default=0) + 1:04d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy database URL (default: from the settings)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("upgrade", help="apply every pending migration")
    sub.add_parser("current", help="print the current and the newest revision")
    rev = sub.add_parser("revision", help="create a new migration file")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--autogenerate", action="store_true")
    args = parser.parse_args(argv)

    if args.action == "revision":
        scratch = engine_lib.open_database("sqlite://")
        cfg = engine_lib.alembic_config()
        try:
            with scratch.begin() as connection:
                cfg.attributes["connection"] = connection
                script = command.revision(cfg, message=args.message, autogenerate=args.autogenerate,
                                          rev_id=_next_revision_id())
        finally:
            scratch.dispose()
        path = Path(script.path) if script is not None and not isinstance(script, list) else None
        print(f"Created {path}. Review it, then run: python -m storage.migrate upgrade")
        return 0

    url = _url(args.url)
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        probe = engine_lib.create_db_engine(url)
        try:
            before = engine_lib.current_revision(probe)
        finally:
            probe.dispose()
        if args.action == "current":
            print(f"{shown}: at {before or 'nothing (empty)'}, newest is {engine_lib.head_revision()}")
            return 0
        engine = engine_lib.open_database(url)
    except (engine_lib.MigrationError, SQLAlchemyError) as exc:
        detail = str(exc) if isinstance(exc, engine_lib.MigrationError) else f"{type(exc).__name__}: {exc}"
        print(f"error: could not open or upgrade the database {shown}: {detail}", file=sys.stderr)
        return 1
    print(f"{shown}: {before or 'empty'} -> {engine_lib.current_revision(engine)}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
