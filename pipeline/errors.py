"""Errors the user can act on. The CLI prints them as one clear message (no traceback)."""


class MigaError(Exception):
    """Base for errors caused by input or state the user controls."""


class DataError(MigaError):
    """A data file is missing, unreadable or fails validation.

    Attributes name the file, the table/column/expectation and a few bad rows, so the
    message alone tells what to fix.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 expectation: str | None = None, count: int | None = None,
                 examples: list | None = None, report: str | None = None):
        super().__init__(message)
        self.file, self.column, self.expectation = file, column, expectation
        self.count, self.examples, self.report = count, examples or [], report


class ConfigError(MigaError):
    """A config file or a command-line value is invalid: the message names the file, the key
    and what is allowed."""


def interrupted(e: BaseException) -> bool:
    """Whether `e` is Ctrl-C, however it surfaced: KeyboardInterrupt in Python code,
    duckdb.InterruptException (a connection's interrupt()), or RuntimeError('Query interrupted')
    (what this DuckDB client raises when SIGINT arrives during a query)."""
    return isinstance(e, KeyboardInterrupt) or type(e).__name__ == "InterruptException" or (
        type(e) is RuntimeError and "interrupted" in str(e).lower())
