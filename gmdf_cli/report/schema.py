"""The typed results as JSON: serialisation (``to_jsonable``) and the published JSON Schema generated from the
dataclasses themselves (``schema.json`` in this folder).

    python -m gmdf_cli.report.schema > gmdf_cli/report/schema.json      # after changing results.py
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .results import OUTPUTS

SCHEMA_FILE = Path(__file__).with_name("schema.json")
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def is_internal(f: dataclasses.Field[Any]) -> bool:
    return bool(f.metadata.get("internal"))


def to_jsonable(value: Any) -> Any:
    """Typed results -> plain JSON values: dataclasses as objects (internal fields left out), paths as strings,
    NaN and infinities as null, so every output is standard JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if not is_internal(f)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item())
    return value


def from_jsonable(tp: Any, data: Any) -> Any:
    """The reverse of ``to_jsonable`` for the typed results: plain JSON values -> dataclasses (internal fields left
    at their defaults). Used to take finished files over from an earlier run's results."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = get_type_hints(tp)
        fields = [f for f in dataclasses.fields(tp) if not is_internal(f)]
        return tp(**{f.name: from_jsonable(hints[f.name], data[f.name]) for f in fields if f.name in data})
    if origin in (Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        return from_jsonable(options[0], data) if len(options) == 1 else data
    if origin is list:
        return [from_jsonable(get_args(tp)[0], v) for v in data]
    if origin is dict:
        return {k: from_jsonable(get_args(tp)[1], v) for k, v in data.items()}
    if tp is Path:
        return Path(data)
    if tp is float and isinstance(data, int):
        return float(data)
    return data


def dumps(value: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False)


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def of(self, tp: Any) -> dict[str, Any]:
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return self._dataclass(tp)
        if origin in (Union, types.UnionType):
            options = [self.of(a) for a in get_args(tp)]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if origin is Literal:
            return {"enum": list(get_args(tp))}
        if origin is list:
            return {"type": "array", "items": self.of(get_args(tp)[0])}
        if origin is dict:
            return {"type": "object", "additionalProperties": self.of(get_args(tp)[1])}
        simple = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null", Path: "string"}
        if tp in simple:
            return {"type": simple[tp]}
        if tp is Any:
            return {}
        raise TypeError(f"no JSON schema for {tp!r}")

    def _dataclass(self, cls: type) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: recursion stops here
            hints = get_type_hints(cls)
            fields = [f for f in dataclasses.fields(cls) if not is_internal(f)]
            definition: dict[str, Any] = {
                "type": "object",
                "properties": {f.name: self.of(hints[f.name]) for f in fields},
                "required": [f.name for f in fields],
                "additionalProperties": False,
            }
            if cls.__doc__ and not cls.__doc__.startswith(f"{name}("):
                definition["description"] = " ".join(cls.__doc__.split())
            self.defs[name] = definition
        return {"$ref": f"#/$defs/{name}"}


def build_schema() -> dict[str, Any]:
    """One schema for every ``--json`` output: ``$defs`` holds each result type; ``outputs`` names the top-level
    definition of each output (``ScanReport`` for `gmdf scan --json` and ``report.json``, ...)."""
    builder = _Builder()
    outputs = {name: builder.of(tp) for name, tp in OUTPUTS.items()}
    for name, ref in outputs.items():
        if "$ref" not in ref:  # a list/dict/union at the top: give it a definition of its own
            builder.defs[name] = ref
    return {
        "$schema": DIALECT,
        "$id": "https://github.com/gmdf/gmdf-cli/schema.json",
        "title": "gmdf JSON outputs",
        "anyOf": [{"$ref": f"#/$defs/{name}"} for name in outputs],
        "$defs": dict(sorted(builder.defs.items())),
    }


def load_schema() -> dict[str, Any]:
    """The published schema file (package data)."""
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def schema_for(output: str) -> dict[str, Any]:
    """A schema validating one output (a key of ``OUTPUTS``) against the published definitions."""
    schema = load_schema()
    if output not in schema["$defs"]:
        raise KeyError(f"unknown output {output!r}; known: {', '.join(OUTPUTS)}")
    return {"$schema": DIALECT, "$ref": f"#/$defs/{output}", "$defs": schema["$defs"]}


if __name__ == "__main__":
    print(json.dumps(build_schema(), indent=2))
