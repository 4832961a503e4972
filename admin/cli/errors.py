"""Exit codes of ``swapmeter admin`` and the one error type its commands raise.

Every failure ends as one line on stderr and one of these codes (docs/cli.md lists them).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # the service refused: expired login, an HTTP error, verify not ok
EXIT_USAGE = 2  # bad options or an input file that cannot be used (wrong header, ...)
EXIT_UNREACHABLE = 3  # no answer from the service's URL
EXIT_INCOMPLETE = 4  # finished, but some rows failed or wait for approval
EXIT_INTERRUPTED = 130  # Ctrl-C: run the same command again to resume

LOGIN_EXPIRED = "login expired: run swapmeter admin login"


class CliError(Exception):
    """A failure shown as one line (``message``), ending the command with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
