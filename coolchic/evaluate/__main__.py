"""``python -m coolchic.evaluate evaluate|reproduce-paper ...``: the evaluation commands
without the main ``coolchic`` entry point."""

import typer

from coolchic.evaluate.cli import evaluate_command, reproduce_command


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      no_args_is_help=True, help="coolchic evaluation toolkit.")
    app.command("evaluate")(evaluate_command)
    app.command("reproduce-paper")(reproduce_command)
    app()


if __name__ == "__main__":
    main()
