"""Results written by notebooks read back as plain JSON and CSV."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from workbench.runs import json_safe, write_results


def test_write_results_RoundTripsNumpyValues(tmp_path):
    metrics = {
        "accuracy": np.float32(0.5),
        "confusion": np.array([[1, 2], [3, 4]]),
        "auc": float("nan"),
        "n": np.int64(3),
    }
    write_results(tmp_path / "run", metrics, pd.DataFrame({"layer": ["a"], "sparsity": [0.5]}))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {
        "accuracy": 0.5,
        "confusion": [[1, 2], [3, 4]],
        "auc": None,
        "n": 3,
    }
    assert (tmp_path / "run" / "layers.csv").read_text().splitlines() == ["layer,sparsity", "a,0.5"]
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")] == []


def test_json_safe_HandlesNestedContainers():
    assert json_safe({"a": (np.float64(1.5), [np.inf])}) == {"a": [1.5, [None]]}
