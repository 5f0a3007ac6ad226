"""The CLI surface of the foundation: help, version, info, weights listing, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from gmdf_cli import __version__

from .conftest import assert_schema, invoke_gmdf


def test_help_and_version() -> None:
    helped = invoke_gmdf("--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout
    for command in ("info", "weights"):
        assert command in helped.stdout
    version = invoke_gmdf("--version")
    assert version.returncode == 0 and __version__ in version.stdout


def test_info_json_reports_the_parameter_budget() -> None:
    out = invoke_gmdf("info", "--model", "vit-b-16", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    params = report["model"]["parameters"]
    assert params["total"] == params["backbone"] + params["added"]
    assert report["model"]["added_fraction_of_backbone"] <= 0.05
    assert report["dependencies"]["torch"] and report["device"]["threads"] >= 1
    assert "hub_cache" in report["weights"]


def test_info_human_table_is_data_on_stdout() -> None:
    out = invoke_gmdf("info", "--model", "vit-tiny")
    assert out.returncode == 0 and out.stderr == ""
    assert "GM-DF adds" in out.stdout


def test_weights_list_with_a_user_zoo(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo.json"
    zoo.write_text(
        json.dumps(
            {"lab-model": {"repo_id": "lab/m", "sha256": "ab" * 32, "config": "vit-b-16", "description": "our lab's"}}
        )
    )
    out = invoke_gmdf("weights", "list", "--json", env={"GMDF_ZOO": str(zoo), "HF_HOME": str(tmp_path / "hf")})
    assert out.returncode == 0, out.stderr
    assert_schema("WeightsList", json.loads(out.stdout))
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["lab-model"]["path"] is None and rows["lab-model"]["config"] == "vit-b-16"
    assert rows["gmdf-mnv2-dev"]["path"]  # the shipped default is always on the machine


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    out = invoke_gmdf("weights", "path", "no-such-model")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    broken_zoo = tmp_path / "zoo.json"
    broken_zoo.write_text("{not json")
    out = invoke_gmdf("weights", "list", env={"GMDF_ZOO": str(broken_zoo)})
    assert out.returncode == 2 and "cannot read the zoo file" in out.stderr
    out = invoke_gmdf("info", "--model", "nonexistent")
    assert out.returncode == 2 and "Traceback" not in out.stderr
