"""The one shape of every TOML file the daemon reads (accounts, users, webhook targets): an array of named tables.

Each file is read once at start (the users file also on change), and a mistake must stop the daemon with one line
naming the table and the field, so the three readers share the reading, the per-table label and the checks that
are the same for all of them: a file that exists, parses and has only the expected top-level key, tables with no
unknown fields, and unique names.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_tables(path: str, key: str, *, missing_ok: bool = False, required: bool = False) -> list[Any]:
    """The ``[[key]]`` tables of the file at ``path``; ValueError with one line saying what to fix.
    ``missing_ok``: a missing file is no tables. ``required``: at least one table."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return []
        raise ValueError(f"no such file; give the path of a TOML file with [[{key}]] tables") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"is not valid TOML ({exc})") from None
    unknown = set(raw) - {key}
    if unknown:
        raise ValueError(f"unknown top-level key {sorted(unknown)[0]!r}; write [[{key}]] tables")
    items = raw.get(key, [])
    if not isinstance(items, list):
        raise ValueError(f"{key} must be an array of tables: write [[{key}]]")
    if required and not items:
        raise ValueError(f"no {key} tables: add at least one [[{key}]] table")
    return items


def parse_tables(items: list[Any], key: str, parse: Callable[[Any], T], name: Callable[[T], str]) -> list[T]:
    """``parse`` each table; an error names the table (``account #2 ('live'): …``); names must be unique."""
    out: list[T] = []
    for i, item in enumerate(items, 1):
        label = f"{key} #{i}" + (f" ({item.get('name')!r})" if isinstance(item, dict) and item.get("name") else "")
        try:
            out.append(parse(item))
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
    names = [name(x) for x in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ValueError(f"{key} name {dup!r} is used twice; names must be unique")
    return out


def check_table(item: Any, fields: Collection[str]) -> dict[str, Any]:
    """``item`` as a table with no field outside ``fields``."""
    if not isinstance(item, dict):
        raise ValueError("must be a table")
    extra = set(item) - set(fields)
    if extra:
        raise ValueError(f"unknown field {sorted(extra)[0]!r}; fields are {', '.join(sorted(fields))}")
    return item


def secret_of(item: dict[str, Any], environ: Mapping[str, str]) -> str:
    """A table's ``secret``, or the environment variable its ``secret_env`` names (so the file need not hold
    it); ``""`` when neither is given."""
    if "secret" in item and "secret_env" in item:
        raise ValueError("give secret or secret_env, not both")
    if "secret_env" not in item:
        secret = item.get("secret", "")
        if not isinstance(secret, str):
            raise ValueError("secret must be a string")
        return secret
    var = item["secret_env"]
    if not isinstance(var, str) or not var:
        raise ValueError("secret_env must name an environment variable")
    secret = environ.get(var, "")
    if not secret:
        raise ValueError(f"secret_env: environment variable {var} is not set or empty")
    return secret
