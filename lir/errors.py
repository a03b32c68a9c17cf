"""The one error type users see: a one-line message, no traceback on the command line."""


class LirError(Exception):
    """A user-facing error whose message is one clear line."""
