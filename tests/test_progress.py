"""Progress displays (coolchic/progress.py): in a log, one line per task at its start and\nat each tenth."""

import io

from rich.console import Console

from coolchic.progress import LogProgress, progress_display


def _log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, soft_wrap=True), out


def test_a_log_gets_a_line_at_each_tenth_of_a_task_and_none_in_between():
    console, out = _log_console()
    with progress_display(console, "{task.description}") as bar:
        assert isinstance(bar, LogProgress)
        task = bar.add_task("[bold]encoding[/]", total=None, stats="")
        bar.update(task, completed=0)  # no total yet: nothing to say
        for step in range(1, 1001):
            bar.update(task, total=1000, completed=step, stats=f"loss {1 / step:.3g}")
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # the start, then each tenth
    assert lines[0].startswith("encoding: 1/1000 loss 1 (")
    assert lines[1].startswith("encoding: 100/1000 loss 0.01 (")
    assert lines[-1].startswith("encoding: 1000/1000")


def test_a_fixed_label_names_the_lines_instead_of_the_task():
    console, out = _log_console()
    with progress_display(console, "[bold]fitting[/]") as bar:
        task = bar.add_task("fit", total=4, stats="")
        for step in range(1, 5):
            bar.update(task, completed=step, stats="")
    assert [line.split(":")[0] for line in out.getvalue().splitlines()] == ["fitting"] * 4
