"""``results.parquet``: the rows of ``results.jsonl`` as a Parquet table, for archives of millions of files (query it
with DuckDB, pandas, Spark or Ray Data). The Arrow schema is derived from ``FileResult`` itself (like
``schema.json``), so the two formats never drift apart. Needs pyarrow (the ``ray`` extra)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..errors import UsageError
from ..fileio import atomic_path
from .results import INTERNAL, FileResult

ROWS_PER_GROUP = 10_000
"""Rows written at a time (memory stays bounded whatever the archive's size)."""


def arrow_type(hint: Any) -> Any:
    """The Arrow type of a results field's annotation (dataclasses become structs, lists lists; all nullable)."""
    import pyarrow as pa

    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return arrow_type(inner)
    if origin is list:
        return pa.list_(arrow_type(get_args(hint)[0]))
    if origin is Literal or hint in (str, Path):
        return pa.string()
    if dataclasses.is_dataclass(hint):
        return pa.struct(_fields(typing.cast(type, hint)))
    simple = {float: pa.float64(), int: pa.int64(), bool: pa.bool_()}
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no Arrow type for {hint!r}")


def _fields(cls: type) -> list[Any]:
    import pyarrow as pa

    hints = get_type_hints(cls)
    return [
        pa.field(f.name, arrow_type(hints[f.name]))
        for f in dataclasses.fields(cls)
        if f.metadata.get("internal") != INTERNAL["internal"]
    ]


def file_schema() -> Any:
    import pyarrow as pa

    return pa.schema(_fields(FileResult))


def write_parquet(journal: Path, target: Path) -> int:
    """Write every row of ``journal`` (one JSON object per line) to ``target`` atomically; returns the rows written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--parquet needs pyarrow: pip install 'gmdf-cli[ray]'") from None
    schema = file_schema()
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        batch: list[dict[str, Any]] = []
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                batch.append(json.loads(line))
                if len(batch) >= ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    rows, batch = rows + len(batch), []
        if batch or not rows:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            rows += len(batch)
    return rows
