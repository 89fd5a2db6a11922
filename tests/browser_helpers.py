"""Helpers for the end-to-end browser tests: Chromium, servers in their own process group, the explorer's DOM.

The tests drive a real headless Chromium through Playwright against a real Voilà or JupyterLab
server. Everything here that touches the page goes through the DOM a user sees: the ε slider's
handle, the ``<img>`` of the figure and the readout's text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPLORER = ROOT / "notebooks" / "01_explore_threshold.ipynb"
BIN = Path(sys.executable).parent  # voila and jupyter sit beside the Python running the tests

# Small settings so a page is live in seconds: a 1-epoch baseline, a 6-point curve.
SMALL = {"epochs": 1, "grid_points": 6, "calibration_size": 64}

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

# The explorer's widgets as the page shows them (ipywidgets 8 class names).
EPSILON_SLIDER = ".widget-slider:has(> label.widget-label:text-matches('^ε'))"  # "ε on |g|" etc.
FIGURE = "img.widget-image"
READOUT = ".widget-html-content:has(> b:text-matches('^sparsity'))"


# --- prerequisites ----------------------------------------------------------------------------


def under_ci() -> bool:
    """Return True on CI (``CI=true``), where a missing browser is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip on a user's machine; fail under CI, whose runner is meant to have installed everything."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """Return the Chromium to drive: ``$CHROMIUM``, else ``chromium`` on PATH, else skip (fail under CI)."""
    wanted = os.environ.get("CHROMIUM")
    found = wanted if wanted and os.access(wanted, os.X_OK) else None
    found = found or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        skip_or_fail(
            "no Chromium for the browser tests: install it (Debian/Ubuntu: apt-get install -y chromium) "
            "or set CHROMIUM=/path/to/chromium"
        )
    return found


# --- notebooks --------------------------------------------------------------------------------


def explorer_copy(path: Path, *, extra_cell: str | None = None, **parameters) -> Path:
    """Write the explorer notebook to ``path`` with papermill-injected ``parameters``, unexecuted.

    Args:
        path: where the copy goes (its folder becomes the kernel's working directory).
        extra_cell: code put right after the injected parameters, e.g. to make the kernel die.
        **parameters: values for the notebook's ``parameters`` cell (``SMALL`` is the default).
    """
    import nbformat
    import papermill

    papermill.execute_notebook(
        str(EXPLORER), str(path), parameters={**SMALL, **parameters}, prepare_only=True, progress_bar=False
    )
    if extra_cell is not None:
        notebook = nbformat.read(path, as_version=4)
        tags = [cell.metadata.get("tags", []) for cell in notebook.cells]
        injected = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
        notebook.cells.insert(injected + 1, nbformat.v4.new_code_cell(extra_cell))
        nbformat.write(notebook, path)
    return path


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (servers get no port retries)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(data: Path, home: Path) -> dict[str, str]:
    """Return the environment for a server: test data, and Jupyter state kept out of the user's home."""
    env = dict(os.environ, WORKBENCH_DATA=str(data), PYTHONUNBUFFERED="1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for variable, folder in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ):
        (home / folder).mkdir(parents=True, exist_ok=True)
        env[variable] = str(home / folder)
    return env


def voila_argv(notebook: Path, port: int, *, preheat: bool = False) -> list[str]:
    """Return the README's dashboard command for ``notebook``, on 127.0.0.1:``port``, without a browser.

    ``preheat`` adds ``run.sh dashboard``'s preheated kernel (a pool of one here).
    """
    return [
        str(BIN / "voila"),
        str(notebook),
        "--show_tracebacks=True",
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        f"--port={port}",
        "--Voila.port_retries=0",
        *(["--preheat_kernel=True", "--pool_size=1"] if preheat else []),
    ]


def lab_argv(root: Path, port: int, token: str) -> list[str]:
    """Return a JupyterLab command serving ``root`` on 127.0.0.1:``port`` with ``token``, no browser."""
    return [
        str(BIN / "jupyter"),
        "lab",
        f"--notebook-dir={root}",
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
    ]


def quiet_lab(env: dict[str, str]) -> None:
    """Switch off JupyterLab's "get notified about news?" toast, which can sit on top of the dashboard."""
    labconfig = Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    disabled = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
    (labconfig / "page_config.json").write_text(json.dumps(disabled))


@contextlib.contextmanager
def serving(argv: list[str], *, port: int, cwd: Path, env: dict, log: Path, timeout: float = 90) -> Iterator:
    """Run a server in its own process group until the block ends, however it ends.

    Yields the ``subprocess.Popen`` once the port accepts connections. Ready means listening only:
    requesting Voilà's page would start a kernel. On exit the server is stopped (``stop``).
    """
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_listening(process, port, timeout, log)
        yield process
    finally:
        stop(process)


def _wait_listening(process: subprocess.Popen, port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"server not listening on port {port} after {timeout:.0f} s:\n{tail(log)}")


def descendants(process: subprocess.Popen) -> list:
    """Return psutil handles on every process below ``process`` (kernels run in sessions of their own)."""
    import psutil  # installed with ipykernel

    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(process.pid).children(recursive=True)
    return []


def kernel_pids(server: subprocess.Popen) -> list[int]:
    """Return the ids of the kernels a server has started."""
    import psutil

    found = []
    for child in descendants(server):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                found.append(child.pid)
    return found


def stop(process: subprocess.Popen, grace: float = 15) -> None:
    """Stop a server started by ``serving``: SIGTERM (it shuts its kernels down), then SIGKILL what is left.

    Kernels are started in sessions of their own, so killing the server's group alone would orphan
    them; they are collected first and killed one by one if the server did not stop them. psutil
    handles refuse to signal a process id that has since been reused by an unrelated process.
    """
    import psutil

    children = descendants(process)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def tail(log: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a server log, for failure messages."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# --- the explorer's page ----------------------------------------------------------------------

# Timestamps on the browser's own clock: the ε slider's last value change (the slider snaps to whole
# decades, so it changes mid-drag and the answer can be drawn before the mouse is released), the
# release of the mouse or a key that ended the move, and the figure's first new src after that
# change. The figure is an <img> whose src is a new blob: URL for every new PNG.
_WATCH_FIGURE = """() => {
  window.__released = null; window.__changed = null; window.__redrawn = null;
  document.addEventListener('pointerdown', () => { window.__released = null; }, true);
  const released = () => { window.__released = performance.now(); };
  document.addEventListener('pointerup', released, true);
  document.addEventListener('keyup', released, true);
  new MutationObserver(records => {
    const now = performance.now();
    if (records.some(r => r.attributeName === 'aria-valuenow')) {
      window.__changed = now; window.__redrawn = null;
    }
    if (window.__changed !== null && window.__redrawn === null &&
        records.some(r => r.attributeName === 'src' && r.target.matches('img.widget-image')))
      window.__redrawn = now;
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['src', 'aria-valuenow']});
}"""

_DIGEST = """async img => {
  const bytes = await (await fetch(img.src)).arrayBuffer();
  const hash = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(hash), b => b.toString(16).padStart(2, '0')).join('');
}"""


class ExplorerPage:
    """The explorer dashboard in a Playwright page, driven as a user drives it."""

    def __init__(self, page):
        self.page = page
        self.figure = page.locator(FIGURE).first
        self.readout = page.locator(READOUT).first
        self.slider = page.locator(EPSILON_SLIDER).first
        self.handle = self.slider.locator(".noUi-handle").first

    def wait_live(self, timeout: float = 180) -> None:
        """Wait until the figure has been drawn and the readout shows a sparsity; then watch the figure."""
        try:
            self.page.wait_for_selector(f"{FIGURE}[src^='blob:']", timeout=timeout * 1000)
            self.readout.wait_for(timeout=timeout * 1000)
        except Exception as error:  # Playwright's TimeoutError: say what the user saw instead
            raise AssertionError(f"no live dashboard; the page ends with:\n{self.text_tail()}") from error
        self.handle.scroll_into_view_if_needed()
        self.page.evaluate(_WATCH_FIGURE)

    def text_tail(self, chars: int = 1500) -> str:
        return self.page.inner_text("body")[-chars:]

    def sparsity_text(self) -> str:
        return self.readout.inner_text()

    def figure_state(self) -> tuple[str, str]:
        """Return (the figure's src, a SHA-256 of the image bytes it shows)."""
        return self.figure.get_attribute("src"), self.figure.evaluate(_DIGEST)

    def epsilon_shown(self) -> str:
        return self.slider.locator(".widget-readout").inner_text()

    def epsilon_at_minimum(self) -> bool:
        """Return True if the ε handle sits at its track's left end (what the Home key does)."""
        return self.handle.get_attribute("aria-valuenow") == self.handle.get_attribute("aria-valuemin")

    def drag_epsilon(self, dx: float) -> None:
        """Drag the ε handle ``dx`` pixels along its track, in small steps, and release it.

        The slider snaps to whole decades, so a drag clamped at the track's end could land on the
        value it left and redraw nothing: when the end is nearer than ``dx``, drag the other way.
        """
        self.handle.scroll_into_view_if_needed()
        box = self.handle.bounding_box()
        track = self.slider.locator(".noUi-target").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        if not track["x"] + 1 <= x + dx <= track["x"] + track["width"] - 1:
            dx = -dx
        target = min(max(x + dx, track["x"] + 1), track["x"] + track["width"] - 1)
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(target, y, steps=8)
        self.page.mouse.up()

    def seconds_to_redraw(self, timeout: float = 60) -> float:
        """Wait for the release and the figure's new src after ε's last change; return that change's delay."""
        self.page.wait_for_function(
            "window.__released !== null && window.__redrawn !== null", timeout=timeout * 1000
        )
        return self.page.evaluate("(window.__redrawn - window.__changed) / 1000")


# --- JupyterLab -------------------------------------------------------------------------------


def run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells, once the notebook's cells and kernel are there; retry if nothing starts."""
    page.locator(".jp-Notebook .jp-Cell", has_text="Dashboard(explorer").wait_for(timeout=120_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)
    started = page.locator(".jp-Notebook .jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]")).first
    for _ in range(attempts):
        accept_dialog(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        with contextlib.suppress(Exception):  # Playwright's TimeoutError: the click came too early
            started.wait_for(timeout=20_000)
            return
    raise AssertionError(f"Run All Cells did not start the notebook after {attempts} tries")


def accept_dialog(page) -> None:
    """Accept a dialog JupyterLab may open over the notebook at start (once seen over the Run menu)."""
    dialog = page.locator(".jp-Dialog")
    with contextlib.suppress(Exception):  # Playwright's TimeoutError: no dialog
        dialog.first.wait_for(timeout=3_000)
        print(f"JupyterLab opened a dialog: {dialog.first.inner_text()!r}")
        dialog.locator(".jp-mod-accept").first.click()
