"""HRank's evidence: the average rank of every structured unit's feature maps over calibration images.

Lin et al. (2020) found that the rank of a filter's feature map barely depends on the image, so its
mean over a few batches ranks the filters: a low-rank map carries little information, and its
filter is pruned first. The feature map of a unit is the output of its layer after the BatchNorm
and activation layers that follow it alone (conv → BN → ReLU: the ReLU's output, as HRank's own
code hooks the ReLUs); a fused activation is part of the layer. Its matrix is (H, W) for 2-D maps,
(D·H, W) for volumes, (L, 1) for sequences and (1, 1) for a Dense unit, whose "rank" is then 1
where it is non-zero: HRank of a neuron is the fraction of images on which it fires (1 − APoZ).

The pass runs the model eagerly, as Keras calls it, and records the chosen layers' outputs batch
by batch, so it follows any graph the model itself can run, nested models too.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np

from workbench.core.cache import NON_NEGATIVE, check_array, read_cached
from workbench.core.errors import WorkbenchError
from workbench.core.fs import atomic_path
from workbench.core.masks import Scores
from workbench.core.progress import Progress, reporter
from workbench.model.compat import keras
from workbench.model.graph import Graph
from workbench.model.registry import LayerInfo

# Layers that only rescale or gate each channel: HRank reads the map after them.
_FOLLOWED = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
)


def feature_map_ranks(
    model: keras.Model,
    images: np.ndarray,
    infos: list[LayerInfo],
    batch_size: int = 64,
    progress: Progress | bool | None = None,
) -> Scores:
    """Return {layer: mean rank of each unit's feature map over ``images``}, shaped as its units.

    ``progress`` (``core.progress.Progress``) is called with (batches done, batches); raising
    ``Cancelled`` from it stops the pass between batches. None or True: a tqdm bar after 1 s.
    """
    taps = feature_map_layers(model, infos)
    sums = {info.name: np.zeros(int(np.prod(info.units_shape))) for info in infos}
    starts = range(0, len(images), batch_size)
    with reporter(progress, len(starts), "feature-map ranks", "batch") as report:
        report(0, len(starts))
        for done, start in enumerate(starts, 1):
            maps = _record(model, list(taps.values()), images[start : start + batch_size])
            for name, layer in taps.items():
                sums[name] += map_ranks(maps[layer.name]).sum(axis=0)
            report(done, len(starts))
    return {info.name: (sums[info.name] / len(images)).reshape(info.units_shape) for info in infos}


def map_ranks(maps: np.ndarray) -> np.ndarray:
    """(N, *spatial, C) outputs → (N, C) ranks of each image's and channel's map (numpy's tolerance)."""
    n, channels, spatial = len(maps), maps.shape[-1], maps.shape[1:-1]
    rows = int(np.prod(spatial[:-1])) if spatial else 1
    columns = spatial[-1] if spatial else 1
    matrices = np.moveaxis(maps.reshape(n, rows, columns, channels), -1, 1)
    return np.linalg.matrix_rank(matrices)


def feature_map_layers(model: keras.Model, infos: list[LayerInfo]) -> dict[str, keras.layers.Layer]:
    """{prunable layer: the layer whose output is its feature map}: itself, or the last of the
    BatchNorm and activation layers that it alone feeds, one after another."""
    graph = Graph.of(model)
    taps = {}
    for info in infos:
        name = info.name
        while len(graph.consumers[name]) == 1:
            follower = graph.nodes[graph.consumers[name][0]]
            if not isinstance(follower.layer, _FOLLOWED) or len(follower.inbound) != 1:
                break
            name = follower.name
        taps[info.name] = graph.nodes[name].layer
    return taps


def _record(model: keras.Model, layers: list, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model`` eagerly on ``images``; return {layer name: its output} for ``layers``.

    Each layer's ``call`` is wrapped for the duration; only this thread's calls are recorded, so
    a background evaluation of the same model meanwhile is neither recorded nor disturbed.
    """
    found: dict[str, np.ndarray] = {}
    thread = threading.get_ident()
    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(_wrapped_call(layer, found, thread))
        model(np.asarray(images, np.float32), training=False)
    missing = [layer.name for layer in layers if layer.name not in found]
    if missing:
        raise WorkbenchError(
            f"layers {missing} were not called when the model ran; HRank needs their outputs"
        )
    return found


@contextlib.contextmanager
def _wrapped_call(layer, found: dict, thread: int):
    original, own = layer.call, "call" in vars(layer)

    def call(*args, **kwargs):
        outputs = original(*args, **kwargs)
        if threading.get_ident() == thread:
            found[layer.name] = np.asarray(outputs)
        return outputs

    object.__setattr__(layer, "call", call)  # not Keras's tracked setattr: a function, not state
    try:
        yield
    finally:
        if own:
            object.__setattr__(layer, "call", original)
        else:
            object.__delattr__(layer, "call")


# --- the ranks on disk -----------------------------------------------------------------------


def write_ranks(path: str | Path, ranks: Scores) -> Path:
    """Write ``ranks`` to ``path`` as an .npz, atomically (layer order kept); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"ranks_{i}": values for i, values in enumerate(ranks.values())}
    with atomic_path(path) as temporary:
        np.savez(temporary, names=np.array(list(ranks)), **arrays)
    return path


def read_ranks(path: str | Path, infos: list[LayerInfo]) -> Scores | None:
    """The ranks cached at ``path`` if they fit ``infos``' layers and units, else None (a damaged
    file, or one for other layers, is warned about and ignored: ``cache.read_cached``)."""
    return read_cached(
        path, _load_ranks, lambda found: _check_ranks(found, infos), "cached feature-map ranks"
    )


def _load_ranks(path: Path) -> Scores:
    with np.load(path, allow_pickle=False) as found:
        return {str(name): found[f"ranks_{i}"] for i, name in enumerate(found["names"])}


def _check_ranks(ranks: Scores, infos: list[LayerInfo]) -> None:
    if list(ranks) != [info.name for info in infos]:
        raise WorkbenchError(f"they are for other layers ({len(ranks)} layers, {list(ranks)[:3]}...)")
    for info in infos:
        check_array(ranks[info.name], f"ranks of {info.name}", tuple(info.units_shape), NON_NEGATIVE)
