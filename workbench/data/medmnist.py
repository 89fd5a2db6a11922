"""MedMNIST datasets, 2-D (28x28) and 3-D (28x28x28): a table of URLs, checksums and class names,
and a safe downloader.

A download streams into a temporary file beside the target, is checked against its MD5 and only
then renamed into place, so a partial or corrupt download never sits at ``{name}.npz``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, NamedTuple

from tqdm.auto import tqdm

from workbench.core.errors import WorkbenchError
from workbench.core.fs import atomic_path

log = logging.getLogger(__name__)

URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"  # MedMNIST v3
USER_AGENT = "workbench/0.1"  # Zenodo refuses browser-like agents with 403
CHUNK = 1 << 20


class Source(NamedTuple):
    """Where one dataset lives, its checksum and its class names (label i is ``class_names[i]``)."""

    url: str
    md5: str
    class_names: tuple[str, ...]


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
           "liver", "lung-left", "lung-right", "pancreas", "spleen")  # fmt: skip
_CHEST = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
          "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural",
          "hernia")  # fmt: skip

# name -> (md5, class names). MD5s from MedMNIST 3.0.2 info.py, i.e. for the v3 record in URL.
_TABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "pathmnist": ("a8b06965200029087d5bd730944a56c1", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium")),
    # Multi-label: 14 findings per image, labels (N, 14); load_npz reads it as a multi-label Dataset.
    "chestmnist": ("02c8a6516a18b556561a56cbdd36c4a8", _CHEST),
    "dermamnist": ("0744692d530f8e62ec473284d019b0c7", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions")),
    "octmnist": ("c68d92d5b585d8d81f7112f81e2d0842", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal")),
    "pneumoniamnist": ("28209eda62fecd6e6a2d98b1501bb15f", ("normal", "pneumonia")),
    "retinamnist": ("bd4c0672f1bba3e3a89f0e4e876791e4", ("0", "1", "2", "3", "4")),
    "breastmnist": ("750601b1f35ba3300ea97c75c52ff8f6", ("malignant", "normal, benign")),
    "bloodmnist": ("7053d0359d879ad8a5505303e11de1dc", (
        "basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
        "monocyte", "neutrophil", "platelet")),
    "tissuemnist": ("ebe78ee8b05294063de985d821c1c34b", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
        "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
        "Proximal Tubule Segments", "Thick Ascending Limb")),
    "organamnist": ("68e3f8846a6bd62f0c9bf841c0d9eacc", _ORGANS),
    "organcmnist": ("b9ceb9546e10131b32923c5bbeaea2b1", _ORGANS),
    "organsmnist": ("9ab87b696fb54e2a387ebe992d6ed5f1", _ORGANS),
    # 3-D volumes (N, 28, 28, 28); load_npz reads them as (N, 28, 28, 28, 1). Organ order differs from 2-D.
    "organmnist3d": ("a0c5a1ff56af4f155c46d46fbb45a2fe", (
        "liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart",
        "lung-right", "lung-left", "spleen", "pancreas")),
    "nodulemnist3d": ("8755a7e9e05a4d9ce80a24c3e7a256f3", ("benign", "malignant")),
    "adrenalmnist3d": ("bbd3c5a5576322bc4cdfea780653b1ce", ("normal", "hyperplasia")),
    "fracturemnist3d": ("6aa7b0143a6b42da40027a9dda61302f", (
        "buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture")),
    "vesselmnist3d": ("b41fd4f7e7e2feedddb201585ecafa1b", ("vessel", "aneurysm")),
    "synapsemnist3d": ("1235b78a3cd6280881dd7850a78eadb6", ("inhibitory synapse", "excitatory synapse")),
}  # fmt: skip

DATASETS: dict[str, Source] = {
    name: Source(URL.format(name=name), md5, classes) for name, (md5, classes) in _TABLE.items()
}
CLASS_NAMES: dict[str, tuple[str, ...]] = {name: src.class_names for name, src in DATASETS.items()}
MULTI_LABEL = frozenset({"chestmnist"})
VOLUMES = frozenset(name for name in DATASETS if name.endswith("3d"))


def md5sum(path: str | Path) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name: str,
    data_dir: str | Path = "data",
    *,
    url: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download a MedMNIST ``.npz`` to ``{data_dir}/{name}.npz`` and verify its MD5.

    A verified file already there is returned as is. A partial or corrupt download is removed.

    Example (not run here: it downloads)::

        path = download("pneumoniamnist", "data")

    Args:
        name: a key of ``DATASETS``, or any file stem if both ``url`` and ``md5`` are given.
        url, md5: override the table's source and checksum (tests point these at a local server).
        timeout: seconds to wait for the server on connect and on each read.

    Raises:
        ValueError: unknown name, bad md5, checksum mismatch, or an existing file that differs.
        ConnectionError: the server is unreachable, answers with an HTTP error, or cuts off.
    """
    url, md5 = _resolve(name, url, md5)
    target = Path(data_dir) / f"{name}.npz"
    if target.exists():
        return _check_existing(target, md5)
    target.parent.mkdir(parents=True, exist_ok=True)
    # atomic_path removes the partial file on any exit, Ctrl-C in a notebook included
    with atomic_path(target) as part:
        with part.open("wb") as out:
            _fetch(url, out, progress, timeout, desc=name)
        actual = md5sum(part)
        if actual != md5:
            raise WorkbenchError(f"checksum mismatch for {url}: expected md5 {md5}, got {actual}")
    log.info("downloaded %s to %s (md5 %s)", url, target, md5)
    return target


def _resolve(name: str, url: str | None, md5: str | None) -> tuple[str, str]:
    if name not in DATASETS and (url is None or md5 is None):
        known = ", ".join(DATASETS)
        raise WorkbenchError(f"name must be one of {known} (or pass url= and md5=), got {name!r}")
    if not name or Path(name).name != name or name in (".", ".."):
        raise WorkbenchError(f"name must be a plain file stem without directories, got {name!r}")
    source = DATASETS.get(name)
    url = source.url if url is None else url
    md5 = (source.md5 if md5 is None else md5).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise WorkbenchError(f"md5 must be 32 hex characters, got {md5!r}")
    return url, md5


def _check_existing(target: Path, md5: str) -> Path:
    actual = md5sum(target) if target.is_file() else "<not a regular file>"
    if actual != md5:
        raise WorkbenchError(
            f"{target} already exists but its md5 is {actual}, expected {md5}; left untouched. "
            "Move or delete it to download again, or pass md5= if it is your own file."
        )
    log.info("%s already present with the expected md5", target)
    return target


def _fetch(url: str, out: BinaryIO, progress: bool, timeout: float, desc: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise ConnectionError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise ConnectionError(f"could not reach {url}: {getattr(err, 'reason', err)}") from err
    total, received = _content_length(response), 0
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
               disable=not progress)  # fmt: skip
    with response, bar:
        while chunk := _read(response, url):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received != total:
        raise ConnectionError(f"download of {url} was cut off: got {received} of {total} bytes")


def _read(response: http.client.HTTPResponse, url: str) -> bytes:
    try:
        return response.read(CHUNK)
    except (OSError, http.client.HTTPException) as err:
        raise ConnectionError(f"download of {url} failed while reading: {err!r}") from err


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None
