"""Every `gmdf ...` command written in the README and docs/ still parses: its subcommands and options exist (each
is run with --help appended, which click answers only after it has matched every option name)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from gmdf_cli.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_STOP = re.compile(r"\s(?:\||>|2>|&&|;|#)")


def _commands(text: str) -> list[str]:
    """`gmdf ...` in inline code and at the start of lines (or after `&&`) in fenced blocks, continuations joined."""
    found = [m.group(1) for m in re.finditer(r"`(gmdf [^`]+)`", text)]
    in_block = False
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            found += [m.group(1) for m in re.finditer(r"(?:^|&&\s*)(gmdf\s.*)", line.strip())]
    return found


def _args(command: str) -> list[str]:
    """The argument list of a written command: shell operators and what follows cut off, [optional] brackets and
    ... placeholders dropped."""
    command = SHELL_STOP.split(command + " ")[0]
    tokens = shlex.split(command.replace("[", " ").replace("]", " "))
    args = [t for t in tokens[1:] if t not in ("...", "|") and not t.endswith("...")]
    # an option named alone (`gmdf scan --weights`): a stand-in value, so --help is not taken as its value
    return [*args, "VALUE"] if args and args[-1].startswith("-") else args


CASES = [(page.relative_to(ROOT).as_posix(), cmd) for page in PAGES for cmd in _commands(page.read_text())]


def test_the_pages_hold_commands_to_check() -> None:
    assert len(CASES) > 20 and {p for p, _ in CASES} >= {"README.md", "docs/scan.md", "docs/training.md"}


@pytest.mark.parametrize(("page", "command"), CASES, ids=[f"{p}:{c[:60]}" for p, c in CASES])
def test_a_documented_command_parses(page: str, command: str) -> None:
    result = CliRunner().invoke(cli, [*_args(command), "--help"])
    assert result.exit_code == 0, f"{page}: `{command}`: {result.output.strip().splitlines()[-1:]}"
