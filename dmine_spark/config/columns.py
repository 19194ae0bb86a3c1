"""Users' column names, as written in their files, and the names dmine_spark stores them under.

A source column may be called anything its file calls it: ``ticket text``,
``ticket.text``, ``评论``. Spark reads such a name fine when it is quoted, but
a dot means a struct field in a column reference, and Delta (without column
mapping) and Hive refuse spaces and ``,;{}()=`` in stored column names. So
every declared column gets a storage name (:func:`storage_name`): the name
itself when it is already safe, else the name with each run of those
characters turned into ``_``. Ingest renames the columns as it reads them and
keeps the original name in the column's metadata (its comment); the config's
column keys (``text_col``, ``label_col``, ``required``, ``id_col``, the
regression and feature columns) may use either name.

Pure Python, so the names are checked when the config loads, before Spark
starts.
"""

from __future__ import annotations

import re

__all__ = ["ddl_column_names", "storage_name", "storage_names"]

# characters a stored column name may not hold (Delta without column mapping, Hive), and the dot and backtick
_UNSAFE = re.compile(r"[\s,;{}()=.`]+")


def ddl_column_names(ddl: str) -> list[str]:
    """The top-level column names of a DDL schema string (``"`ticket text` STRING, stars INT"``).

    Backticked names may hold anything, with a doubled backtick for a
    backtick; nested types (``STRUCT<a: INT, b: INT>``) are skipped over.

    Raises
    ------
    ValueError
        When a backtick is not closed or a column has no name.
    """
    parts, buf, depth, quoted = [], [], 0, False
    for ch in ddl:
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch in "<(":
            depth += 1
        elif not quoted and ch in ">)":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted:
        raise ValueError(f"a backtick is not closed in {ddl!r}")
    parts.append("".join(buf))
    names = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if part.startswith("`"):
            m = re.match(r"`((?:[^`]|``)*)`", part)
            if m is None or not m.group(1):
                raise ValueError(f"a column of {ddl!r} has no name")
            names.append(m.group(1).replace("``", "`"))
        else:
            names.append(re.split(r"[\s:]", part, maxsplit=1)[0])
    return names


def storage_name(name: str) -> str:
    """The name column ``name`` is stored under: itself when safe, else each unsafe run as ``_``.

    >>> storage_name("ticket text"), storage_name("ticket.text"), storage_name("评论")
    ('ticket_text', 'ticket_text', '评论')

    Raises
    ------
    ValueError
        When nothing of the name is left (``"..."``).
    """
    out = _UNSAFE.sub("_", name).strip("_") if _UNSAFE.search(name) else name
    if not out:
        raise ValueError(f"column {name!r} has no character dmine_spark can store; rename it with derive")
    return out


def storage_names(names: list[str]) -> dict[str, str]:
    """Each name's storage name.

    Raises
    ------
    ValueError
        When two names would be stored under the same name (case-insensitive, as Spark compares).
    """
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        stored = storage_name(name)
        other = seen.get(stored.lower())
        if other is not None and other != name:
            raise ValueError(
                f"columns {other!r} and {name!r} would both be stored as {stored!r}; rename one in the schema"
            )
        seen[stored.lower()] = name
        out[name] = stored
    return out
