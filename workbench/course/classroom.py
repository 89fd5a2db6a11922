"""Running a lab for a class: one shared, prepared data folder.

python -m workbench class prepare                 # phantom data + the dashboard's baseline, once
python -m workbench class prepare --epochs 2      # lesson 05's barely trained model, section 5

Student versions, collecting and grading are nbgrader's (``workbench.course.grading``).
"""

from __future__ import annotations

from pathlib import Path


def prepare_classroom(model: str = "seed_cnn", epochs: int = 12, seed: int = 0) -> Path:
    """Generate the phantom data and train the dashboard's baseline into the data folder, once.

    Notebooks 01, 05 and 07 with their defaults (phantom, seed_cnn, 12 epochs, seed 0) then load
    the baseline from the cache instead of training it in every student's kernel.
    """
    from workbench.core.paths import data_dir
    from workbench.data.sources import load_dataset
    from workbench.model.train import Recipe, baseline

    baseline(load_dataset("phantom", seed=seed), model, Recipe(epochs=epochs, seed=seed))
    return data_dir()
