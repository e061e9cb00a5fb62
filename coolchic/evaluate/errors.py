"""The one exception type of the evaluation toolkit."""


class EvaluationError(ValueError):
    """Bad input to an evaluation (missing folder, unknown codec, lambda <= 0, ...).

    The command-line layer prints its message as one line and exits with status 2.
    """
