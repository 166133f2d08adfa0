"""The one error type users see as a single line (bad input, missing weights, impossible settings)."""


class InputError(ValueError):
    """Input the user must fix; retrying cannot heal it. The CLI prints it as one line and exits non-zero."""


class OutputError(InputError):
    """The output place cannot take the files (disk full, read-only, no permission): the operator must fix it;
    retrying cannot heal it. One line naming the path, exit 2, like bad input."""
