"""Keep native libraries' start-up chatter off a notebook page (imports nothing heavy).

TensorFlow's C++ runtime writes banners straight to file descriptor 2 before its own log level
applies ("All log messages before absl::InitializeLog() ..."). Jupyter forwards that descriptor
to the page, where Voilà shows each line as a red box above the dashboard.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Send writes to file descriptor 2 to the null device while the block runs (Python's own
    ``sys.stderr`` in a kernel is unaffected, so exceptions and warnings still show).

    Example:
        >>> with native_stderr_silenced():
        ...     pass
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
