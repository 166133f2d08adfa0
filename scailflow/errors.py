"""The one error type users see as a single line (bad input, missing weights, impossible settings)."""


class InputError(ValueError):
    """Input the user must fix; retrying cannot heal it. The CLI prints it as one line and exits non-zero."""
