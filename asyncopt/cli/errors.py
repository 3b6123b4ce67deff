"""The command line's own error: a usage mistake (exit status 2)."""


class UsageError(Exception):
    """A wrong combination of options or values (printed as one line; exit status 2)."""
