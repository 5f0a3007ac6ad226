"""One home for each default: a command's options and the request dataclass they fill (the Python API's way in)
give the same value, so that `gmdf train` and `TrainRequest(...)` train the same model."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest

from gmdf_cli.cli import cli
from gmdf_cli.data.faces import DetectorOptions
from gmdf_cli.data.media import Sampling
from gmdf_cli.jobs.evaluate import EvalRequest
from gmdf_cli.jobs.prepare import PrepareRequest
from gmdf_cli.jobs.robustness import RobustnessRequest
from gmdf_cli.jobs.scan.request import ScanRequest
from gmdf_cli.train.loop import TrainRequest

REQUESTS: dict[str, type] = {
    "scan": ScanRequest,
    "train": TrainRequest,
    "eval": EvalRequest,
    "robustness": RobustnessRequest,
    "prepare": PrepareRequest,
}
GATHERED: dict[str, tuple[type, dict[str, str]]] = {
    # options that the CLI gathers into one dataclass argument: option name -> field of that dataclass
    "detector": (DetectorOptions, {"detector": "name", "detector_weights": "weights", "det_size": "det_size"}),
    "sampling": (Sampling, {"frames": "frames", "every": "every", "all_frames": "all", "start": "start", "end": "end"}),
}
RESOLVED_BY_THE_CLI = {"device"}
"""``--device auto`` becomes a real device before the request is made: the request holds the resolved name."""


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _option_default(param: click.Parameter) -> Any:
    if param.default is None or str(param.default) == "Sentinel.UNSET":  # click 8.2+ marks "no default" UNSET
        return False if getattr(param, "is_flag", False) else None
    return param.default


def _pairs(command: str) -> list[tuple[str, Any, Any]]:
    """(option, its default, the request's default) for every option that fills a request field."""
    request = REQUESTS[command]
    fields = {f.name: f for f in dataclasses.fields(request)}
    out = []
    for param in cli.commands[command].params:
        name = param.name or ""
        gathered = next(((cls, m[name]) for cls, m in GATHERED.values() if name in m), None)
        if gathered is not None:
            cls, field_name = gathered
            target = next(f for f in dataclasses.fields(cls) if f.name == field_name)
        elif name in fields and name not in RESOLVED_BY_THE_CLI:
            target = fields[name]
        else:
            continue
        wanted = _default(target)
        if wanted is dataclasses.MISSING:  # a required field: the option must be required (or an argument)
            continue
        if wanted == []:  # a comma-separated list option: absent means the empty list
            wanted = None
        out.append((name, _option_default(param), wanted))
    return out


@pytest.mark.parametrize("command", list(REQUESTS))
def test_every_option_default_is_its_requests_default(command: str) -> None:
    pairs = _pairs(command)
    assert len(pairs) >= 3, pairs  # the walk found the options
    differ = [(name, cli_value, field_value) for name, cli_value, field_value in pairs if cli_value != field_value]
    assert not differ, f"gmdf {command}: option default != request default: {differ}"
