"""The explorer engine (settings, estimates, cached curves), its figure, and the dashboard's
background answers, checked with a deliberately slow fake evaluator rather than timings."""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import faint_square_dataset, multilabel_dataset, three_class_dataset, tiny_head_model, write_npz

from workbench.analysis.curves import Evaluator
from workbench.data.dataset import Split, load_npz
from workbench.explore.session import Explorer
from workbench.model.registry import kernel_variables
from workbench.prune.pruning import PruneSpec, copy_model
from workbench.view.dashboard import Dashboard
from workbench.view.figure import ExplorerFigure

WAIT = 60  # seconds: a bound for hangs only


def _explorer(model, data, **options):
    return Explorer(model, data, calibration_size=32, grid_points=6, **options)


def test_setting_CarriesSparsityOver_AndNamesTheThreshold(trained_tiny):
    explorer = _explorer(*trained_tiny)
    setting = explorer.setting(PruneSpec(criterion="magnitude", epsilon=1e-4), keep_sparsity=0.5)
    low, high = setting.decades
    assert setting.threshold_name == "|w|" and 10**low <= setting.spec.epsilon <= 10**high
    assert explorer.point(setting.spec).result.sparsity == pytest.approx(0.5, abs=0.02)
    assert explorer.setting(PruneSpec(epsilon=0.0)).spec.epsilon == 0.0  # without carry-over: as given


def test_point_AtEpsilonZero_IsTheDenseModel(trained_tiny):
    explorer = _explorer(*trained_tiny)
    point = explorer.point(PruneSpec(epsilon=0.0))
    assert point.result.sparsity == 0.0 and len(point.metrics["changed"]) == 0
    assert point.metrics["auc"] == explorer.dense_metrics["auc"]


def test_estimate_AgreesWithTheExactAUC_WithinItsInterval(trained_tiny, tmp_path):
    model, _ = trained_tiny
    data = load_npz(write_npz(tmp_path / "big.npz", sizes=(40, 200, 400)), class_names=("plain", "square"))
    explorer = _explorer(model, data, estimate_images=150)
    for criterion, epsilon in (("gradient", 0.0), ("magnitude", 0.05), ("snip", 1e-3)):
        spec = PruneSpec(criterion=criterion, epsilon=epsilon)
        estimate, exact = explorer.estimate(spec), explorer.point(spec)
        assert not estimate.exact and exact.exact and estimate.n < exact.n
        assert abs(estimate.metrics["auc"] - exact.metrics["auc"]) <= estimate.interval, criterion
        np.testing.assert_array_equal(estimate.result.keep["fc"], exact.result.keep["fc"])


@pytest.mark.slow
def test_estimate_OverRandomMoves_IsAsOftenBelowAsAbove_AndItsIntervalCoversAtItsRate():
    """#25: on 30 moves over five backbones the estimate was above the exact AUC 24 times (one
    seeded subset served every move, so all of a session's estimates erred the same way)."""
    from scipy.stats import binomtest

    from workbench.model.train import Recipe, compile_model, fit

    data = faint_square_dataset()
    covered, moves = 0, 0
    for seed in (0, 1, 2):  # a session per seed: model, calibration and subsets all differ
        model = compile_model(tiny_head_model(seed=seed))
        fit(model, data, Recipe(epochs=8, batch_size=16, seed=seed), progress=False)
        explorer = _explorer(model, data, seed=seed, estimate_images=60)
        rng = np.random.default_rng(seed)
        above = below = 0
        for _ in range(40):
            criterion = str(rng.choice(["magnitude", "taylor", "gradient"]))
            spec = PruneSpec(criterion=criterion, sparsity=float(rng.uniform(0.1, 0.95)))
            estimate, exact = explorer.estimate(spec), explorer.point(spec)
            assert estimate.n < exact.n
            error = estimate.metrics["auc"] - exact.metrics["auc"]
            above, below = above + (error > 0), below + (error < 0)
            covered, moves = covered + (abs(error) <= estimate.interval), moves + 1
        sign = binomtest(above, above + below).pvalue
        assert sign > 0.01, f"seed {seed}: estimate above the exact AUC {above} times, below {below}"
    assert binomtest(covered, moves, 0.95).pvalue > 0.01, f"the 95% interval covered {covered} of {moves}"


def test_estimate_OfAMultiLabelModel_HasTheMeanAUCsInterval():
    """(N, L) labels were flattened: 'labels has 144 entries but probs have 48', so a background
    dashboard on any multi-label model too slow to evaluate whole in 30 ms failed to open."""
    data = multilabel_dataset(sizes=(48, 80, 80))
    explorer = _explorer(tiny_head_model(3, "sigmoid"), data, estimate_images=80)
    point = explorer.estimate(PruneSpec(criterion="magnitude", sparsity=0.5))
    assert not point.exact and point.n < len(data.test) and np.isfinite(point.interval)


def test_model_ForOtherClasses_IsRefusedAsNotFittingTheData_BeforeItsLabelsAreBlamed(trained_tiny):
    """A 2-class model on 3-class data said 'calibration labels must be in [0, 2)'."""
    model, data = trained_tiny
    with pytest.raises(ValueError, match=r"model: a softmax head over 2 unit\(s\).*does not fit three"):
        _explorer(model, three_class_dataset(data))


def test_estimate_size_FollowsTheQuickestPassSeen_ExactWhenTheWholeSetIsAffordable(trained_tiny, tmp_path):
    model, _ = trained_tiny
    data = load_npz(write_npz(tmp_path / "big.npz", sizes=(40, 400, 600)), class_names=("plain", "square"))
    explorer = _explorer(model, data, estimate_budget=0.1)
    evaluator = explorer.evaluator
    evaluator.fastest_pass = 1.0  # a pass slowed down by other work: 1000 images per second
    assert explorer.estimates.size() == 96  # 100 affordable, rounded down to a subset size
    assert not explorer.estimate(PruneSpec(epsilon=1e-4)).exact
    evaluator.probabilities(explorer.point(PruneSpec(epsilon=0.0)).result.keep)
    assert evaluator.fastest_pass < 1.0, "a quicker pass replaces the slow one"
    evaluator.fastest_pass = 0.05  # the whole set fits the budget: the estimate is the exact point
    assert explorer.estimates.size() == explorer.evaluation_size
    assert explorer.estimate(PruneSpec(epsilon=1e-4)).exact


def test_curve_cache_IsReused_AndInvalidatedByWeightsDataCalibrationOrSpec(trained_tiny, tmp_path):
    model, data = trained_tiny
    spec = PruneSpec(epsilon=1e-4)
    table = _explorer(model, data, cache_dir=tmp_path).curve(spec)
    reopened = _explorer(model, data, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(reopened.cached_curve(spec), table, check_dtype=False)
    assert reopened.cached_curve(replace(spec, criterion="magnitude")) is None
    assert reopened.cached_curve(replace(spec, scope="layerwise")) is None

    changed = copy_model(model)
    kernel = kernel_variables(changed)["fc"]
    kernel.assign(np.asarray(kernel) * 1.001)
    assert _explorer(changed, data, cache_dir=tmp_path).cached_curve(spec) is None
    bias_only = copy_model(model)  # e.g. BatchNorm recalibrated: no kernel changes
    bias = next(w for w in bias_only.weights if "bias" in w.path)
    bias.assign(np.asarray(bias) + 0.01)
    assert _explorer(bias_only, data, cache_dir=tmp_path).cached_curve(spec) is None

    images = data.test.images.copy()
    images[0, 0, 0, 0] = 1.0 - images[0, 0, 0, 0]
    other_data = replace(data, test=Split(images, data.test.labels, data.test.sources))
    assert _explorer(model, other_data, cache_dir=tmp_path).cached_curve(spec) is None
    smaller = Explorer(model, data, calibration_size=16, grid_points=6, cache_dir=tmp_path)
    assert smaller.cached_curve(spec) is None


def test_figure_MoveRedrawsOnlyThePoint_AndMarkAddsAStar(trained_tiny):
    explorer = _explorer(*trained_tiny)
    spec = PruneSpec(epsilon=1e-4)
    figure = ExplorerFigure(("plain", "square"))
    first = figure.draw(
        explorer.curve(spec), explorer.point(spec), explorer.dense_metrics, x="epsilon", layer="fc"
    )
    moved = explorer.point(PruneSpec(criterion="gradient", epsilon=float(explorer.epsilon_bounds(spec)[1])))
    assert figure.move(moved, "fc") != first
    assert figure.dots["vs_sparsity"][0].get_xdata()[0] == moved.result.sparsity
    figure.mark(0.5, {"accuracy": 0.7})
    assert [line.get_ydata()[0] for line in figure.axes["vs_sparsity"].lines if line.get_marker() == "*"] == [
        0.7
    ]


# --- the dashboard's background answers -----------------------------------------------------


def _recording(dashboard):
    """Record (criterion, ε, exact, curve rows computed) of every frame the figure draws or moves to."""
    frames, figure = [], dashboard.figure
    draw, move = figure.draw, figure.move

    def recorded_draw(curve, point, *args, **kwargs):
        frames.append(
            (point.spec.criterion, point.spec.epsilon, point.exact, int(curve["sparsity"].notna().sum()))
        )
        return draw(curve, point, *args, **kwargs)

    def recorded_move(point, layer):
        frames.append((point.spec.criterion, point.spec.epsilon, point.exact, None))
        return move(point, layer)

    figure.draw, figure.move = recorded_draw, recorded_move
    return frames


def _gated(function, blocks, gate: threading.Event, started: threading.Event):
    """``function``, held at ``gate`` whenever ``blocks(spec)``: a deliberately slow engine call."""

    def slow(spec, *args, **kwargs):
        if blocks(spec):
            started.set()
            gate.wait(WAIT)
        return function(spec, *args, **kwargs)

    return slow


@pytest.fixture
def live_dashboard(trained_tiny):
    explorer = _explorer(*trained_tiny, estimate_images=12)  # half of the 24 evaluation images
    dashboard = Dashboard(explorer, background=True)
    dashboard.wait(WAIT)
    return dashboard


def test_slider_move_AnswersWithAnEstimate_ThenTheExactPoint(live_dashboard):
    frames = _recording(live_dashboard)
    slider = live_dashboard.controls["epsilon"]
    slider.value = 10 ** (slider.min + 1)
    live_dashboard.wait(WAIT)
    assert [frame[2] for frame in frames] == [False, True]
    assert "exact" in live_dashboard.readout.value and live_dashboard.point.exact


def test_overtaken_exact_answer_IsNeverDrawn(live_dashboard):
    explorer, slider = live_dashboard.explorer, live_dashboard.controls["epsilon"]
    first, second = 10 ** (slider.min + 1), 10 ** (slider.max - 1)
    gate, started = threading.Event(), threading.Event()
    explorer.point = _gated(explorer.point, lambda spec: spec.epsilon == first, gate, started)
    frames = _recording(live_dashboard)
    slider.value = first
    assert started.wait(WAIT)  # the quick answer is drawn, the exact one is being computed
    assert "nearest point" in live_dashboard.readout.value  # the curve is cached
    slider.value = second  # overtakes the first value's exact answer, still being computed
    gate.set()
    live_dashboard.wait(WAIT)
    assert ("gradient", first, True, None) not in frames
    assert frames[-1] == ("gradient", second, True, None)
    assert live_dashboard.point.spec.epsilon == second and live_dashboard.point.exact


def test_slider_move_WhileACurveComputes_IsAnsweredWithoutWaitingForIt(live_dashboard):
    """The user's input outranks background work: a move used to queue behind the first curve."""
    explorer, slider = live_dashboard.explorer, live_dashboard.controls["epsilon"]
    gate, started = threading.Event(), threading.Event()
    explorer.curve = _gated(explorer.curve, lambda spec: spec.criterion == "magnitude", gate, started)
    live_dashboard.controls["criterion"].value = "magnitude"  # its curve holds the background worker
    assert started.wait(WAIT)
    frames = _recording(live_dashboard)
    slider.value = 10 ** (slider.min + 1)
    live_dashboard.scheduler.answers.future.result(WAIT)  # answered while the curve still waits
    assert not gate.is_set() and frames and frames[-1][:3] == ("magnitude", slider.value, True)
    gate.set()
    live_dashboard.wait(WAIT)


def test_overtaken_curve_IsCancelled_AndNeverDrawn(live_dashboard):
    explorer = live_dashboard.explorer
    gate, started = threading.Event(), threading.Event()
    explorer.curve = _gated(explorer.curve, lambda spec: spec.criterion == "magnitude", gate, started)
    frames = _recording(live_dashboard)
    live_dashboard.controls["criterion"].value = "magnitude"
    assert started.wait(WAIT)
    live_dashboard.controls["criterion"].value = "snip"
    gate.set()
    live_dashboard.wait(WAIT)
    full = [frame for frame in frames if frame[3] == explorer.grid_points]
    assert full and all(frame[0] == "snip" for frame in full)
    assert explorer.cached_curve(PruneSpec(criterion="magnitude", epsilon=1e-4)) is None  # stopped midway
    assert live_dashboard.progress.layout.display == "none"


def test_long_curve_ShowsProgress(trained_tiny, monkeypatch):
    explorer = _explorer(*trained_tiny)
    dashboard = Dashboard(explorer)
    seen, evaluate = [], Evaluator.evaluate

    def slow_evaluate(
        self, *args, **kwargs
    ):  # a deliberately slow fake: records what the user sees meanwhile
        seen.append((dashboard.progress.layout.display, dashboard.progress.value, dashboard.progress.max))
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "evaluate", slow_evaluate)
    dashboard.controls["criterion"].value = "magnitude"
    shown = [(value, total) for display, value, total in seen if display is None]
    assert len(shown) >= 2, "the curve's evaluations ran with no progress bar"
    assert [value for value, _ in shown] == sorted(value for value, _ in shown)
    assert shown[-1][0] > 0 and {total for _, total in shown[1:]} == {explorer.grid_points}
    assert dashboard.progress.layout.display == "none"


def _spy_gradient_passes(monkeypatch, during=None) -> list:
    """Count gradient passes; ``during()``, if given, is recorded at every progress report of a pass."""
    from workbench.prune import scores

    calls, real = [], scores.gradient_stats

    def spy(model, images, labels, batch_size, head, progress=None):
        def report(done, total):
            if progress is not None:
                progress(done, total)
            if during is not None:
                calls.append(during())

        calls.append("pass")
        return real(model, images, labels, batch_size, head, report)

    monkeypatch.setattr(scores, "gradient_stats", spy)
    return calls


def test_reopened_explorer_ReadsGradientsFromDisk_WithoutAGradientPass(trained_tiny, tmp_path, monkeypatch):
    model, data = trained_tiny
    calls = _spy_gradient_passes(monkeypatch)
    spec = PruneSpec(criterion="snip", epsilon=1e-4)
    first = _explorer(model, data, cache_dir=tmp_path).point(spec)
    reopened = _explorer(model, data, cache_dir=tmp_path)
    again = reopened.point(spec)
    assert calls == ["pass"]
    np.testing.assert_array_equal(again.result.keep["fc"], first.result.keep["fc"])
    changed = copy_model(model)
    kernel = kernel_variables(changed)["fc"]
    kernel.assign(np.asarray(kernel) * 1.001)
    _explorer(changed, data, cache_dir=tmp_path).point(spec)
    assert calls == ["pass", "pass"]


def test_reopened_explorer_ReadsDensePassAndShownPointsFromDisk_WithoutAForwardPass(
    trained_tiny, tmp_path, monkeypatch
):
    from workbench.analysis.curves import Forward

    model, data = trained_tiny
    spec = PruneSpec(epsilon=1e-4)
    first = _explorer(model, data, cache_dir=tmp_path)
    exact = first.point(spec)

    def no_pass(*args, **kwargs):
        raise AssertionError("a forward pass ran on reopening")

    monkeypatch.setattr(Forward, "__call__", no_pass)
    monkeypatch.setattr(Forward, "compile", no_pass)
    reopened = _explorer(model, data, cache_dir=tmp_path)
    assert reopened.dense_metrics["auc"] == first.dense_metrics["auc"]
    again = reopened.estimates.first_answer(spec)  # the known exact point, not an estimate
    assert again.exact
    np.testing.assert_array_equal(again.metrics["test_probs"], exact.metrics["test_probs"])
    with pytest.raises(AssertionError, match="forward pass"):
        reopened.point(replace(spec, epsilon=2e-4))  # an unknown point still computes


def test_criterion_switch_ShowsProgress_WhileScoring(trained_tiny, monkeypatch):
    explorer = _explorer(*trained_tiny)
    dashboard = Dashboard(explorer, criterion="magnitude")  # no gradients needed yet
    progress = dashboard.progress

    def shown():  # what the user sees while the pass runs
        return progress.layout.display, progress.description, progress.value, progress.max

    calls = _spy_gradient_passes(monkeypatch, shown)
    dashboard.controls["criterion"].value = "snip"  # the first gradient pass, in the foreground
    steps = 1 + -(-32 // explorer.scorer.batch_size)  # the trace, then each batch
    assert calls[0] == "pass"
    shown_steps = [(display, done, total) for display, _, done, total in calls[1:]]
    assert _distinct(shown_steps) == [(None, done, steps) for done in range(steps + 1)]
    assert all(re.fullmatch(r"scores snip \d+ s", text) for _, text, _, _ in calls[1:])  # the seconds taken
    assert dashboard.point.spec.criterion == "snip" and progress.layout.display == "none"
    dashboard.controls["criterion"].value = "taylor"  # same gradients: no pass, no progress
    assert calls.count("pass") == 1


@pytest.mark.parametrize("points", [0, 1, 2.5, True])
def test_explorer_BadGridPoints_RaiseValueErrorNamingIt(trained_tiny, points):
    with pytest.raises(ValueError, match="grid_points must be an integer >= 2"):
        Explorer(*trained_tiny, grid_points=points)


def test_opening_ReportsProgress_ThroughTheTraceTheFirstCallAndEveryChunk(trained_tiny, monkeypatch):
    from workbench.analysis.curves import Forward

    model, data = trained_tiny
    monkeypatch.setattr(Forward, "CHUNK", 4)
    reports = []
    _explorer(model, data, progress=lambda done, total: reports.append((done, total)))
    chunks = -(-(len(data.val) + len(data.test)) // 4)
    # trace, first call, chunks (a step that takes over 0.5 s is reported again as it runs)
    assert _distinct(reports) == [(done, chunks + 2) for done in range(chunks + 3)]


def test_figure_CriterionSwitch_UpdatesInPlace_AsADrawFromScratchWould(trained_tiny):
    explorer = _explorer(*trained_tiny)
    gradient, magnitude = PruneSpec(epsilon=1e-4), PruneSpec(criterion="magnitude", epsilon=1e-2)
    dense = explorer.dense_metrics

    def draw(figure, spec, threshold_name):
        return figure.draw(
            explorer.curve(spec), explorer.point(spec), dense, x="epsilon", layer="fc",
            threshold_name=threshold_name,
        )  # fmt: skip

    switched = ExplorerFigure(("plain", "square"))
    before = draw(switched, gradient, "|∂L/∂w|")
    heatmap = switched.axes["heatmap"].images[0]
    after_switch = draw(switched, magnitude, "|w|")
    assert switched.axes["heatmap"].images[0] is heatmap, "updated in place, not rebuilt"
    fresh = draw(ExplorerFigure(("plain", "square")), magnitude, "|w|")
    assert _pixels(after_switch).shape == _pixels(fresh).shape
    # a stale label or tick would leave a few hundred pixels far off; the criteria differ in thousands
    assert _far_off(after_switch, fresh) < 50
    assert _far_off(before, fresh) > 1000


def _far_off(a: bytes, b: bytes) -> int:
    """How many pixels of two frames differ by more than 40 grey levels (of 255)."""
    return int((np.abs(_pixels(a) - _pixels(b)) > 40).sum())


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def test_background_curve_FillsInAsItGoes_OnTheFinalLayout(trained_tiny, monkeypatch):
    explorer = _explorer(*trained_tiny, estimate_images=12)
    dashboard = Dashboard(explorer, background=True)
    dashboard.wait(WAIT)
    monkeypatch.setattr(dashboard.scheduler, "refill_seconds", 0.0)  # every point redraws
    heatmap, filled = dashboard.figure.axes["heatmap"], []
    draw = dashboard.figure.draw

    def spy(curve, *args, **kwargs):
        filled.append(int(curve["sparsity"].notna().sum()))
        return draw(curve, *args, **kwargs)

    monkeypatch.setattr(dashboard.figure, "draw", spy)
    dashboard.controls["criterion"].value = "magnitude"  # its curve is not computed yet
    image = heatmap.images[0]
    assert image.get_array().shape == (len(explorer.layers), explorer.grid_points), "the final layout at once"
    dashboard.wait(WAIT)
    assert filled[0] == 0, "the first figure shows the grid blank"
    assert filled[-1] == explorer.grid_points
    assert len(set(filled)) > 2, f"no figure between blank and complete: {filled}"
    assert heatmap.images[0] is image, "filled in place"


def test_first_answer_WithACachedCurve_ReadsItsNearestPoint(trained_tiny):
    explorer = _explorer(*trained_tiny, estimate_images=12)
    spec = PruneSpec(epsilon=1e-4)
    estimate = explorer.estimates.first_answer(spec)
    assert estimate.nearest is None and 0 < estimate.n < len(explorer.dataset.test), "no curve yet: a subset"
    curve = explorer.curve(spec)
    grid = curve["epsilon"].to_numpy()
    epsilon = float(np.sqrt(grid[3] * grid[4]) * 0.99)  # nearer grid[3] on the log scale
    answer = explorer.estimates.first_answer(replace(spec, epsilon=epsilon))
    assert not answer.exact and answer.nearest == grid[3]
    assert answer.metrics["auc"] == curve["auc"].iloc[3]
    exact = explorer.point(replace(spec, epsilon=epsilon))
    for name, mask in exact.result.keep.items():
        np.testing.assert_array_equal(answer.result.keep[name], mask)  # the spec's own masks

    dashboard = Dashboard(explorer, background=True)
    dashboard.wait(WAIT)
    frames, readouts = _recording(dashboard), []
    dashboard.readout.observe(lambda change: readouts.append(change["new"]), names="value")
    dashboard.controls["epsilon"].value = float(np.sqrt(grid[2] * grid[3]) * 1.01)
    dashboard.wait(WAIT)
    assert [exact for _, _, exact, _ in frames] == [False, True]
    assert "nearest point" in readouts[0] and "exact" in readouts[-1]


def test_figure_DrawsACurveReadPoint_ThenTheExactCounts(trained_tiny):
    explorer = _explorer(*trained_tiny)
    spec = PruneSpec(epsilon=1e-4)
    curve = explorer.curve(spec)
    figure = ExplorerFigure(("plain", "square"))
    figure.draw(
        curve,
        explorer.estimates.nearest_curve_point(spec, curve),
        explorer.dense_metrics,
        x="epsilon",
        layer="fc",
    )
    assert [text.get_text() for text in figure.axes["confusion"].texts] == ["…"] * 4
    exact = explorer.point(spec)
    figure.move(exact, "fc")
    counts = [int(text.get_text()) for text in figure.axes["confusion"].texts]
    assert counts == list(np.asarray(exact.metrics["confusion"]).ravel())


def test_figure_BeforeItsCurveIsComputed_SaysSo_AndNotOnceItIs(trained_tiny):
    """A headless run's stored figure showed empty panels with nothing saying why."""
    explorer = _explorer(*trained_tiny)
    spec = PruneSpec(epsilon=1e-4)
    figure = ExplorerFigure(("plain", "square"))
    dense, point = explorer.dense_metrics, explorer.point(spec)
    blank = figure.draw(explorer.placeholder_curve(spec), point, dense, x="epsilon", layer="fc")
    assert figure.computing.get_visible() and "computing" in figure.computing.get_text()
    filled = figure.draw(explorer.curve(spec), point, dense, x="epsilon", layer="fc")  # in place
    assert not figure.computing.get_visible() and filled != blank
    fresh = ExplorerFigure(("plain", "square"))
    assert fresh.draw(explorer.curve(spec), point, dense, x="epsilon", layer="fc") == filled
    assert not fresh.computing.get_visible()


def test_figure_LongClassNames_DoNotRunIntoTheHeatmapsColourbar(trained_tiny):
    explorer = _explorer(*trained_tiny)
    spec = PruneSpec(epsilon=1e-4)
    figure = ExplorerFigure(("normal", "pneumonia"))
    curve = explorer.curve(spec)  # a backbone's long layer names widen the heatmap's left margin
    curve = curve.rename(columns=lambda c: c.replace("sparsity/", "sparsity/block_16_expand_"))
    figure.draw(curve, explorer.point(spec), explorer.dense_metrics, x="epsilon", layer="fc")
    renderer = figure.blitter.canvas.get_renderer()
    (colourbar,) = [ax for ax in figure.figure.axes if ax not in figure.axes.values()]
    label = colourbar.yaxis.label.get_window_extent(renderer)
    confusion = figure.axes["confusion"].get_tightbbox(renderer)  # its names and "true"
    # 5.6 px apart when the names lay flat: "sparsity" and "true" read as one label
    assert confusion.x0 - label.x1 >= 20, "the colourbar's label runs into the confusion matrix's"


def test_readout_CountsChangedPredictions_OutOfTheTestImagesItsAnswerUsed(trained_tiny):
    """An estimate's count is of its subset: "19 changed" then "212" read as a jump without it."""
    from workbench.view.dashboard import readout_html

    model, data = trained_tiny
    explorer = _explorer(model, data)
    spec = PruneSpec(epsilon=1e-4)
    estimate, exact = explorer.estimate(spec, size=16), explorer.point(spec)
    assert estimate.n < len(data.test)
    shown = readout_html(estimate, explorer.dense_metrics)
    assert f"{len(estimate.metrics['changed'])} of {estimate.n} test predictions changed" in shown
    shown = readout_html(exact, explorer.dense_metrics)
    assert f"{len(exact.metrics['changed'])} of {len(data.test)} test predictions changed" in shown


def test_readout_NamesAFewGuardedLayers_AndCountsTheRest(trained_tiny):
    from dataclasses import replace as changed

    from workbench.view.dashboard import readout_html

    explorer = _explorer(*trained_tiny)
    point = explorer.point(PruneSpec(epsilon=1e-4))
    many = changed(point, result=changed(point.result, guarded=("a", "b", "c", "d", "e")))
    assert "guard kept a weight in: a, b, c and 2 more" in readout_html(many, explorer.dense_metrics)


def test_criterion_switch_WithASlowEstimate_ShowsTheMasksFirst_ThenItsMetrics(trained_tiny):
    explorer = _explorer(*trained_tiny, estimate_budget=1e-9)  # every forward pass is over budget
    dashboard = Dashboard(explorer, background=True)
    dashboard.wait(WAIT)
    gate, started = threading.Event(), threading.Event()
    explorer.point = _gated(explorer.point, lambda spec: spec.criterion == "magnitude", gate, started)
    frames, readouts = _recording(dashboard), []
    dashboard.readout.observe(lambda change: readouts.append(change["new"]), names="value")
    dashboard.controls["criterion"].value = "magnitude"
    assert started.wait(WAIT)  # the worker is computing the metrics: the masks are on screen
    pending = dashboard.point
    assert pending.pending and pending.spec.criterion == "magnitude"
    assert [text.get_text() for text in dashboard.figure.axes["confusion"].texts] == ["…"] * 4
    assert "metrics are coming" in readouts[-1] and "nan" not in readouts[-1]
    gate.set()
    dashboard.wait(WAIT)
    assert frames[0] == ("magnitude", pending.spec.epsilon, False, 0), "first: the masks, on a blank curve"
    assert frames[-1][:3] == ("magnitude", pending.spec.epsilon, True), "last: the exact answer"
    assert "exact" in readouts[-1] and not dashboard.point.pending
    counts = [int(text.get_text()) for text in dashboard.figure.axes["confusion"].texts]
    assert counts == list(np.asarray(dashboard.point.metrics["confusion"]).ravel())
    assert dashboard.figure.axes["confusion"].images[0].get_clim()[1] == max(
        np.sum(counts[:2]), np.sum(counts[2:])
    )


def test_first_answer_ForANewSetting_IsMasksFirstOnlyWhenThePassIsOverBudget(trained_tiny):
    spec = PruneSpec(criterion="magnitude", epsilon=1e-2)
    quick = _explorer(*trained_tiny, estimate_budget=10.0).estimates.first_answer(spec, masks_if_slow=True)
    assert not quick.pending and quick.exact  # the whole (tiny) set is affordable
    slow = _explorer(*trained_tiny, estimate_budget=1e-9)
    assert slow.estimates.first_answer(spec, masks_if_slow=True).pending
    assert not slow.estimates.first_answer(spec).pending, "a slider move still gets metrics"


def test_first_answer_NearestCurvePoint_TestSplitWithOneClass_AucUndefinedNotAnError(trained_tiny, tmp_path):
    model, data = trained_tiny  # a small NIfTI folder's test split can hold one class
    one_class = Split(data.test.images, np.zeros_like(data.test.labels), data.test.sources)
    explorer = _explorer(model, replace(data, test=one_class), cache_dir=tmp_path, estimate_images=8)
    explorer.curve(PruneSpec(sparsity=0.5))
    point = explorer.estimates.first_answer(PruneSpec(sparsity=0.45))  # a slider move answered from the curve
    assert point.nearest is not None and point.metrics["auc"] is None
    dashboard = Dashboard(explorer, point=point)
    assert "undefined" in dashboard.readout.value
    dashboard.controls["sparsity"].value = 0.4  # the figure's dots move to an undefined AUC
    assert dashboard.message.value == "" and dashboard.point.spec.sparsity == pytest.approx(0.4)


def test_explorer_RefusesAHeadThatDoesNotFitTheTask_AndADatasetThatIsNotOne(trained_tiny):
    from workbench.data.dataset import Dataset

    model, data = trained_tiny  # a 2-way softmax head
    three = Dataset("three", data.train, data.val, data.test, ("a", "b", "c"))
    with pytest.raises(ValueError, match="head over 2 unit.*does not fit three, a multiclass task with 3"):
        Explorer(model, three)
    with pytest.raises(ValueError, match="dataset must be a Dataset .*, not str"):
        Explorer(model, "pneumoniamnist")


def _distinct(reports: list) -> list:
    """``reports`` without repeats of the same step (``progressive.ticking`` repeats a long one)."""
    return [report for report, _ in itertools.groupby(reports)]
