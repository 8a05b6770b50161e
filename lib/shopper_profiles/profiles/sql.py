"""`make sql`: an interactive SQL prompt (DuckDB over the Delta tables via delta-rs, offline) with
every analyst table and view registered.

    make sql                                   # interactive; end a statement with ';'
    python -m shopper_profiles.profiles.sql -c "SELECT * FROM interest_summary"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from shopper_profiles.config import add_config_arguments, config_from_args
from shopper_profiles.profiles.views import describe, register_duckdb

HELP = """Tables and views (end each statement with ';'; \\d lists them again, \\q quits):"""


def open_connection(argv: Sequence[str] | None = None) -> tuple[Any, int]:
    """Connect without Spark: the store's delta-rs reads need no session for arrow datasets."""
    from shopper_profiles.storage import DeltaRsStore

    parser = add_config_arguments(argparse.ArgumentParser())
    parser.add_argument("-c", "--command")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    store = DeltaRsStore(None, config)  # type: ignore[arg-type]  # arrow datasets only: no Spark needed
    k = config.analyst.min_group_size
    return register_duckdb(store, k), k


def listing(con: Any, k: int) -> str:
    names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_name NOT LIKE "
                                       "'%\\_delta' ESCAPE '\\' ORDER BY 1").fetchall()]
    notes = describe(k)
    return "\n".join(f"  {n:<24} {notes.get(n, 'Delta table')}" for n in names) or "  (none yet: run `make run` first)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--command", help="run one statement and exit")
    known, _ = parser.parse_known_args(argv)
    con, k = open_connection(argv)
    if known.command:
        print(con.sql(known.command))
        return 0
    print(HELP)
    print(listing(con, k))
    print(f"Aggregate views suppress groups with fewer than {k} shoppers.")
    buffer: list[str] = []
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            print()
            return 0
        if line.strip() in ("\\q", "quit", "exit"):
            return 0
        if line.strip() == "\\d":
            print(listing(con, k))
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(buffer)
            buffer = []
            try:
                result = con.sql(statement)
                print(result if result is not None else "ok")
            except Exception as error:  # noqa: BLE001 - report and keep the prompt
                print(f"error: {error}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
