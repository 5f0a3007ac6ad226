"""One progress bar style for every long job."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second of the tasks added with a ``rate`` field (its unit, e.g. ``files/s``); blank for others."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("rate")
        if not unit:
            return Text("")
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.2f} {unit}", style="progress.data.speed")


def progress_bar(console: Console, unit: str, disable: bool = False, rate: bool = False) -> Progress:
    """A transient bar on ``console`` (stderr): description, bar, done/total ``unit``, elapsed, remaining, and with
    ``rate`` the speed of the tasks that give their unit (``add_task(..., rate="files/s")``)."""
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if rate:
        columns.append(RateColumn())
    return Progress(*columns, console=console, transient=True, disable=disable)
