"""The one error type users see: a single line naming the file, value or option and the fix."""


class AlisError(Exception):
    """A user-facing error. Its message is one line; the CLI prints it without a traceback."""
