"""How a metric says it is undefined: an error with the reason, never a silent division by zero."""
from __future__ import annotations


class UndefinedMetric(ValueError):
    """Raised by a metric whose value does not exist for the given input (e.g. nothing was exposed).

    Summaries catch it and record ``NaN`` together with the message, so a report shows why a
    number is missing instead of a misleading 0.
    """
