"""The one error family every front end understands.

Two kinds of user-facing failure, kept apart as NetworkX keeps "malformed
input" apart from "no feasible solution":

* :class:`InputError` -- a file, field or config value is wrong.
* :class:`InfeasibleError` -- the input is well formed but no plan can
  satisfy it.

Both carry ``source`` (file or object name), ``field`` (dotted path),
``expected`` and ``received`` so the CLI, the API and the app print the same
one-line message. Anything that is not a :class:`QflowError` is a bug.
"""

from __future__ import annotations

__all__ = [
    "QflowError",
    "InputError",
    "InfeasibleError",
    "QuantumUnavailableError",
]


def _short(value: object, limit: int = 80) -> str:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar: show 3, not np.int64(3)
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class QflowError(Exception):
    """Base class: a problem the user can fix, with a one-line message.

    Parameters
    ----------
    source : str
        The file name or input name the problem was found in.
    field : str
        Dotted path of the offending field (``"tokens.complexity"``,
        ``"config.capacity_factor"``); ``"(file)"`` for the whole file.
    problem : str
        What is wrong, in a few words.
    expected : str, optional
        What would have been accepted.
    received : object, optional
        What was found (shortened for the message).
    """

    def __init__(
        self,
        source: str,
        field: str,
        problem: str,
        expected: str | None = None,
        received: object = None,
    ) -> None:
        self.source = str(source)
        self.field = str(field)
        self.problem = problem
        self.expected = expected
        self.received = None if received is None else _short(received)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """``source: field: problem; expected X, got Y`` on one line."""
        text = f"{self.source}: {self.field}: {self.problem}"
        if self.expected is not None:
            text += f"; expected {self.expected}"
        if self.received is not None:
            text += f", got {self.received}"
        return " ".join(text.split())

    def to_dict(self) -> dict[str, str | None]:
        """Plain fields for JSON (HTTP 422 bodies, the app's error box)."""
        return {
            "kind": type(self).__name__,
            "source": self.source,
            "field": self.field,
            "problem": self.problem,
            "expected": self.expected,
            "received": self.received,
            "message": self.message,
        }


class InputError(QflowError, ValueError):
    """A file, field or config value is malformed or out of range.

    Subclasses :class:`ValueError` too, so existing ``except ValueError``
    clauses keep working (the scikit-learn habit).
    """


class InfeasibleError(QflowError):
    """The input is well formed, but no plan can satisfy it."""


class QuantumUnavailableError(Exception):
    """The quantum path cannot run (library missing, budget, time out).

    Never shown to a user as an error: the caller catches it, falls back to
    the classical path and records ``str(exc)`` as the fallback reason.
    """
