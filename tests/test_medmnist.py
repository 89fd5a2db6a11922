"""Tests for workbench.data.medmnist: the dataset table and the verified, atomic downloader.

Downloads go to a real HTTP server on 127.0.0.1 (no outside network), serving a tiny generated
MedMNIST-format ``.npz``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.data import medmnist
from workbench.data.dataset import load_npz
from workbench.data.medmnist import CLASS_NAMES, DATASETS, download, md5sum


def make_medmnist_npz(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a small pneumoniamnist-like .npz (uint8 (n, 28, 28) images, (n, 1) labels)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.fixture
def server(tmp_path):
    """Serve the tiny .npz over HTTP; record each request's path and User-Agent.

    Routes: /good.npz (full file), /nolength.npz (no Content-Length), /truncated.npz (announces
    the full length, sends half, closes), anything else 404.
    """
    served = tmp_path / "served"
    served.mkdir()
    arrays = make_medmnist_npz(served / "good.npz")
    payload = (served / "good.npz").read_bytes()
    requests: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            requests.append((self.path, self.headers.get("User-Agent", "")))
            route = self.path.split("?")[0]
            if route not in ("/good.npz", "/nolength.npz", "/truncated.npz"):
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if route != "/nolength.npz":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2] if route == "/truncated.npz" else payload)
            self.close_connection = True

        def log_message(self, *args):  # keep pytest output quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield SimpleNamespace(
        base=base,
        url=f"{base}/good.npz?download=1",
        md5=hashlib.md5(payload).hexdigest(),
        payload=payload,
        arrays=arrays,
        requests=requests,
    )
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- successful downloads -----------------------------------------------------------------------


def test_download_fresh_file_matches_md5_and_loads_as_dataset(server, data_dir):
    path = download("pneumoniamnist", data_dir, url=server.url, md5=server.md5, progress=False)

    assert path == data_dir / "pneumoniamnist.npz"
    assert path.read_bytes() == server.payload
    assert md5sum(path) == hashlib.md5(server.payload).hexdigest()
    assert files_in(data_dir) == ["pneumoniamnist.npz"]  # no .part file left
    ds = load_npz(path)
    assert ds.train.images.dtype == np.float32
    assert ds.train.images.shape == (12, 28, 28, 1)
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0
    np.testing.assert_allclose(ds.test.images[..., 0], server.arrays["test_images"] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(ds.val.labels, server.arrays["val_labels"].ravel())


def test_download_without_content_length_reads_to_end_and_verifies(server, data_dir):
    path = download("tiny", data_dir, url=f"{server.base}/nolength.npz", md5=server.md5, progress=False)

    assert path.read_bytes() == server.payload


def test_download_sends_plain_user_agent_not_a_browser_one(server, data_dir):
    download("tiny", data_dir, url=server.url, md5=server.md5, progress=False)

    ((_, agent),) = server.requests
    assert agent.startswith("workbench/")
    assert "Mozilla" not in agent


def test_download_with_progress_bar_still_writes_verified_file(server, data_dir):
    path = download("tiny", data_dir, url=server.url, md5=server.md5, progress=True)

    assert md5sum(path) == server.md5


def test_md5sum_matches_hashlib_on_multi_chunk_file(tmp_path, monkeypatch):
    monkeypatch.setattr(medmnist, "CHUNK", 7)  # force many chunks
    data = bytes(range(256)) * 5
    (tmp_path / "f.bin").write_bytes(data)

    assert md5sum(tmp_path / "f.bin") == hashlib.md5(data).hexdigest()


# --- failures leave nothing behind --------------------------------------------------------------


def test_download_wrong_md5_raises_with_both_digests_and_leaves_no_file(server, data_dir):
    wrong = "0" * 32
    with pytest.raises(ValueError, match="checksum mismatch") as info:
        download("tiny", data_dir, url=server.url, md5=wrong, progress=False)

    assert wrong in str(info.value) and server.md5 in str(info.value)
    assert server.url in str(info.value)
    assert files_in(data_dir) == []


def test_download_cut_off_before_content_length_raises_and_leaves_no_file(server, data_dir):
    url = f"{server.base}/truncated.npz"
    with pytest.raises(ConnectionError, match=r"cut off: got \d+ of \d+ bytes"):
        download("tiny", data_dir, url=url, md5=server.md5, progress=False)

    assert files_in(data_dir) == []


def test_download_http_404_raises_connection_error_and_leaves_no_file(server, data_dir):
    url = f"{server.base}/missing.npz"
    with pytest.raises(ConnectionError, match="HTTP 404") as info:
        download("tiny", data_dir, url=url, md5=server.md5, progress=False)

    assert url in str(info.value)
    assert files_in(data_dir) == []


def test_download_refused_connection_raises_connection_error(data_dir):
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectionError, match="could not reach"):
        download("tiny", data_dir, url=f"http://127.0.0.1:{port}/x.npz", md5="0" * 32, progress=False)

    assert files_in(data_dir) == []


def test_download_interrupted_by_keyboard_removes_temp_file(server, data_dir, monkeypatch):
    def interrupt(path):
        assert Path(path).name.startswith(".partial-tiny.npz.")  # the temp file exists at this point
        raise KeyboardInterrupt

    monkeypatch.setattr(medmnist, "md5sum", interrupt)
    with pytest.raises(KeyboardInterrupt):
        download("tiny", data_dir, url=server.url, md5=server.md5, progress=False)

    assert files_in(data_dir) == []


# --- existing files -----------------------------------------------------------------------------


def test_download_existing_valid_file_is_returned_without_request(server, data_dir):
    first = download("tiny", data_dir, url=server.url, md5=server.md5, progress=False)
    second = download("tiny", data_dir, url=server.url, md5=server.md5, progress=False)

    assert second == first
    assert len(server.requests) == 1


def test_download_existing_different_file_is_kept_unchanged_and_raises(server, data_dir):
    data_dir.mkdir()
    own = data_dir / "tiny.npz"
    own.write_bytes(b"the user's own file")
    own_md5 = hashlib.md5(b"the user's own file").hexdigest()

    with pytest.raises(ValueError, match="already exists") as info:
        download("tiny", data_dir, url=server.url, md5=server.md5, progress=False)

    assert own.read_bytes() == b"the user's own file"
    assert own_md5 in str(info.value) and server.md5 in str(info.value)
    assert files_in(data_dir) == ["tiny.npz"]
    assert server.requests == []


# --- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"url": "http://127.0.0.1:9/x.npz"}, {"md5": "0" * 32}])
def test_download_unknown_name_without_url_and_md5_raises_listing_known_names(overrides, data_dir):
    with pytest.raises(ValueError, match="notamnist") as info:
        download("notamnist", data_dir, progress=False, **overrides)

    for known in ("pneumoniamnist", "bloodmnist", "organsmnist"):
        assert known in str(info.value)
    assert files_in(data_dir) == []


@pytest.mark.parametrize("md5", ["abc", "g" * 32, "0" * 31])
def test_download_malformed_md5_raises_value_error(md5, server, data_dir):
    with pytest.raises(ValueError, match="md5 must be 32 hex characters"):
        download("tiny", data_dir, url=server.url, md5=md5, progress=False)

    assert server.requests == []


@pytest.mark.parametrize("name", ["../escape", "sub/dir", "", ".."])
def test_download_name_with_path_parts_raises_value_error(name, server, data_dir):
    with pytest.raises(ValueError, match="plain file stem"):
        download(name, data_dir, url=server.url, md5=server.md5, progress=False)


# --- the table ----------------------------------------------------------------------------------


def test_table_entries_have_hex_md5s_zenodo_urls_and_class_names():
    assert len(DATASETS) == 18
    for name, (url, md5, class_names) in DATASETS.items():
        assert re.fullmatch(r"[0-9a-f]{32}", md5), name
        assert url == f"https://zenodo.org/records/10519652/files/{name}.npz?download=1"
        assert len(class_names) >= 2 and len(set(class_names)) == len(class_names), name
    assert len({source.md5 for source in DATASETS.values()}) == len(DATASETS)


def test_class_names_follow_medmnist_label_order():
    assert CLASS_NAMES["pneumoniamnist"] == ("normal", "pneumonia")
    assert CLASS_NAMES["breastmnist"] == ("malignant", "normal, benign")
    assert len(CLASS_NAMES["bloodmnist"]) == 8 and len(CLASS_NAMES["organamnist"]) == 11
    assert CLASS_NAMES["retinamnist"] == ("0", "1", "2", "3", "4")
    assert CLASS_NAMES["organmnist3d"][:2] == ("liver", "kidney-right")  # not the 2-D order
    assert CLASS_NAMES["nodulemnist3d"] == ("benign", "malignant")
    assert set(CLASS_NAMES) == set(DATASETS)
