"""Progress displays of the commands: rich's bar on a terminal, and on a log (where rich
draws nothing) a line per task at each tenth of its work, so that a long encode run under
`make`, `nohup` or CI still shows that it advances."""

from __future__ import annotations

import time

from rich.console import Console


class LogProgress:
    """The part of rich's Progress that the commands use, for a log rather than a terminal
    (rich draws nothing there): one line per task each time it passes a tenth of its total."""

    def __init__(self, console: Console, label: str | None = None):
        self.console = console
        self.label = label  # the name of every line (None: each task's description)
        self.tasks: list[dict] = []
        self.start = time.perf_counter()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, *, total: float | None = None, **fields) -> int:
        self.tasks.append({"description": description, "total": total, "completed": 0,
                           "fields": fields, "shown": -1})
        return len(self.tasks) - 1

    def update(self, task: int, *, total: float | None = None, completed: float | None = None,
               **fields) -> None:
        from rich.text import Text

        t = self.tasks[task]
        t["total"] = t["total"] if total is None else total
        t["completed"] = t["completed"] if completed is None else completed
        t["fields"].update(fields)
        if not t["total"]:
            return
        tenth = int(10 * t["completed"] // t["total"])
        if tenth > t["shown"]:
            t["shown"] = tenth
            name = Text.from_markup(self.label or t["description"]).plain
            self.console.print(f"{name}: {t['completed']}/{t['total']} {t['fields'].get('stats', '')} "
                               f"({time.perf_counter() - self.start:.0f} s)", highlight=False)


def progress_display(console: Console, *first_columns: str):
    """Rich's progress bar on a terminal (text columns `first_columns`, then bar, count,
    the task's ``stats`` field, elapsed and remaining time), else a `LogProgress`."""
    if not console.is_terminal:
        fixed = [c for c in first_columns if "{" not in c]
        return LogProgress(console, " ".join(fixed) if fixed else None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(*(TextColumn(c) for c in first_columns), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[stats]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)
