"""Errors that say what to do.

Every error a user can cause is a :class:`DigihumanError` subclass whose message is one line
saying what is wrong and what to do. The CLI prints it without a traceback; the API maps it
to a JSON 4xx via ``http_status``.
"""

from __future__ import annotations


class DigihumanError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""

    http_status = 400


class InputError(DigihumanError):
    """The user's input is unusable (bad format, empty audio, no face, ...)."""

    http_status = 422


class NotFoundError(DigihumanError):
    """A file or record the user named does not exist."""

    http_status = 404


class TooLarge(DigihumanError):
    """An input over a configured size limit (text length, body, audio duration)."""

    http_status = 413


class QueueFull(DigihumanError):
    """A job kind's queue holds its configured maximum; the client should retry later.

    The API answers 503 with ``Retry-After: retry_after_s``; nothing already accepted is touched.
    """

    http_status = 503

    def __init__(self, message: str, *, kind: str, limit: int, retry_after_s: float) -> None:
        super().__init__(message)
        self.kind = kind
        self.limit = limit
        self.retry_after_s = retry_after_s


class PathOutsideDataRoot(DigihumanError):
    """A user-supplied path tried to leave the data root."""

    http_status = 400


class MissingWeightsError(DigihumanError):
    """A weight file is missing; the message names the file and the command that fetches it."""

    http_status = 503


class MissingDependencyError(DigihumanError):
    """An optional dependency is not installed; the message names the extra to install."""

    http_status = 503


class NoFaceError(InputError):
    """No face was found where one is required."""


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """The standard error for an optional import that failed."""
    return MissingDependencyError(
        f"{package} is not installed; install the '{extra}' extra: "
        f".venv/bin/pip install -e '.[{extra}]' in a checkout, or pip install 'digihuman[{extra}]'"
    )
