"""Control callbacks that report their errors in the message line instead of killing the widget."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


def reports_errors(callback):
    """Show an exception from a control callback in its owner's ``show_message`` line.

    The owner (the dashboard or one of its panels) has a ``show_message(text, error=False)``.
    """

    @functools.wraps(callback)
    def guarded(self, *args, **kwargs):
        try:
            result = callback(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - anything a user does must leave a live dashboard
            log.info("dashboard callback %s failed", callback.__name__, exc_info=True)
            self.show_message(f"{type(err).__name__}: {err}", error=True)
            return None
        return result

    return guarded
