"""The export package's one error type: the CLI prints its message and exits 2."""

from adapters.errors import DiffplexError


class ExportError(DiffplexError):
    """Something about the model, the options or an export directory a user can fix; the message says what."""
