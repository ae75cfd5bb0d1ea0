"""Error types. Each carries the process exit code the CLI uses (DESIGN.md, "Exit codes")."""

from __future__ import annotations


class PlannerError(Exception):
    """Base class; `exit_code` 3 means a bug in the planner itself."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(PlannerError):
    """Bad usage or bad input (a file, a field, a flag). Exit code 2.

    `problems` holds every problem found in one file, so that a user fixes them all at once.
    """

    exit_code = 2

    def __init__(
        self, message: str, *, hint: str | None = None, problems: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems


class DoesNotFitError(PlannerError):
    """The answer is no: the configuration does not fit (exit code 1)."""

    exit_code = 1
