"""The dashboard as a class sees it: JupyterLab in a 1280x800 window, driven in headless Chromium.

Issue 28 found panel titles ~7 px high in JupyterLab, and an ε slider of 124 px for 11 decades on
which a 25-px drag jumped from 1e-4 to 1.7e-2. Here every visible text of the dashboard is read
from the page (computed CSS font size), the figure's text from the figure itself (its smallest font
in pixels of the PNG, printed by the kernel) times the scale the page shows the PNG at, and the
slider is keyed as a student would key it.

Needs Chromium and Playwright, as tests/test_browser.py (skips without them, fails under CI).
"""

from __future__ import annotations

import contextlib
import math
import time

import nbformat
import pytest
from browser_helpers import (
    CHROMIUM_ARGS,
    ExplorerPage,
    chromium_path,
    explorer_copy,
    free_port,
    lab_argv,
    quiet_lab,
    run_all_cells,
    server_env,
    serving,
    skip_or_fail,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WINDOW = {"width": 1280, "height": 800}
SMALLEST_PX = 10
DASHBOARD = ".widget-vbox:has(img.widget-image)"
FIGURE_TEXT = "figure text px:"
# Each visible element's own text (not its children's) and its computed font size in CSS pixels.
_TEXT_SIZES = """root => {
  const found = [];
  for (const el of [root, ...root.querySelectorAll('*')]) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    const text = own || (el.tagName === 'INPUT' ? (el.value || el.placeholder) : '');
    const style = getComputedStyle(el);
    if (!text || !el.getClientRects().length || style.visibility === 'hidden') continue;
    found.push([text.slice(0, 40), parseFloat(style.fontSize)]);
  }
  return found;
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The explorer notebook run in JupyterLab at 1280x800; yields (page, ExplorerPage, notebook folder)."""
    chromium = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the browser tests need the playwright package: bash run.sh install")
    folder = tmp_path_factory.mktemp("class-lab")
    root = folder / "notebooks"
    root.mkdir()
    _explorer_that_reports_its_figure(root / "explorer.ipynb")
    port, token = free_port(), "class-test-token"
    env = server_env(folder / "data", folder / "jupyter")
    quiet_lab(env)
    with (
        serving(lab_argv(root, port, token), port=port, cwd=root, env=env, log=folder / "lab.log"),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport=WINDOW).new_page()
        page.set_default_timeout(60_000)
        page.goto(f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}")
        run_all_cells(page)
        explorer = ExplorerPage(page)
        explorer.wait_live(timeout=400)
        try:
            yield page, explorer, folder
        finally:
            with contextlib.suppress(Exception):
                page.screenshot(path=folder / "class-dashboard.png")
                print(f"screenshot: {folder / 'class-dashboard.png'}")
            browser.close()


def _explorer_that_reports_its_figure(path):
    """The explorer notebook with a last cell printing the shown figure's smallest text, in PNG pixels."""
    explorer_copy(path)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(
        nbformat.v4.new_code_cell(f"print('{FIGURE_TEXT}', _.figure.smallest_text_px())")  # _: the Dashboard
    )
    nbformat.write(notebook, path)


def test_jupyterlab_1280px_EveryTextOfTheDashboard_IsAtLeast10px(lab):
    page, explorer, _ = lab
    sizes = page.locator(DASHBOARD).first.evaluate(_TEXT_SIZES)
    assert len(sizes) > 10, sizes  # the controls' labels, the readout, the table
    assert [(text, px) for text, px in sizes if px < SMALLEST_PX] == []

    printed = page.locator(".jp-OutputArea-output", has_text=FIGURE_TEXT).first
    printed.wait_for(timeout=120_000)
    figure_px = float(printed.inner_text().split(FIGURE_TEXT)[1])
    explorer.figure.scroll_into_view_if_needed()
    scale = explorer.figure.evaluate("img => img.getBoundingClientRect().width / img.naturalWidth")
    print(f"1280-px JupyterLab: figure's smallest text {figure_px:.1f} px x shown at {scale:.2f} = "
          f"{figure_px * scale:.1f} px; page texts {min(px for _, px in sizes):.1f} px and up")  # fmt: skip
    assert figure_px * scale >= SMALLEST_PX


def _epsilon(explorer: ExplorerPage) -> float:
    return float(explorer.epsilon_shown())


def _wait_epsilon_readout(explorer: ExplorerPage, epsilon: float) -> None:
    """Wait for the readout above the figure to show the engine's answer at ``epsilon``."""
    from playwright.sync_api import expect

    expect(explorer.readout).to_contain_text(f"ε = {epsilon:.3g}", timeout=60_000)


def test_jupyterlab_1280px_ArrowKeys_MoveEpsilonOneDecadeAStep_AndTheBoxTakesAnyValue(lab):
    page, explorer, _ = lab
    explorer.handle.focus()
    page.keyboard.press("End")
    _wait_epsilon_readout(explorer, high := _epsilon(explorer))
    page.keyboard.press("Home")
    low = _epsilon(explorer)
    track = explorer.slider.locator(".noUi-target").bounding_box()["width"]
    per_decade = track / math.log10(high / low)
    print(f"ε slider: {track:.0f} px for {math.log10(high / low):.0f} decades, {per_decade:.0f} px a decade")
    assert 25 <= per_decade <= 40  # room to aim at a decade; a 20-px drag still moves one
    for step in (1, 2):
        page.keyboard.press("ArrowRight")
        deadline = time.monotonic() + 30
        while _epsilon(explorer) == pytest.approx(low * 10 ** (step - 1)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _epsilon(explorer) == pytest.approx(low * 10**step, rel=1e-6)
        _wait_epsilon_readout(explorer, low * 10**step)
    page.keyboard.press("ArrowLeft")
    _wait_epsilon_readout(explorer, low * 10)

    box = page.locator(".widget-text:has(> label:text-is('type ε')) input").first
    box.fill("3e-4")
    box.press("Enter")
    _wait_epsilon_readout(explorer, 3e-4)
    assert explorer.epsilon_shown() == "3.00e-4"  # not snapped to a decade
    time.sleep(2)  # nor sent back snapped to a decade by the page (it may echo the value itself)
    assert explorer.epsilon_shown() == "3.00e-4" and float(box.input_value()) == pytest.approx(3e-4, rel=1e-3)
    _wait_epsilon_readout(explorer, 3e-4)
    page.keyboard.press("Tab")
    explorer.handle.focus()
    page.keyboard.press("ArrowRight")  # a decade from the typed value
    _wait_epsilon_readout(explorer, 3e-3)
    box.fill("three")
    box.press("Enter")
    page.get_by_text("ε must be a number such as 3e-4, got 'three'").wait_for()
