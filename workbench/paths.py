"""Where the workbench keeps generated data, downloads and cached models.

Notebooks run with their own folder as working directory, so paths are anchored at the project
root rather than the current directory. Set ``WORKBENCH_DATA`` to keep data elsewhere.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Real chest X-rays that sit beside a development checkout; users' clones don't have them.
SHARED_PNEUMONIA = PROJECT_ROOT.parent / "shared" / "data" / "pneumoniamnist.npz"


def data_dir() -> Path:
    """Return the data folder: ``$WORKBENCH_DATA`` if set, else ``<project>/data``."""
    return Path(os.environ.get("WORKBENCH_DATA", PROJECT_ROOT / "data"))


def cache_dir() -> Path:
    """Return the folder of cached trained baselines."""
    return data_dir() / "cache"
