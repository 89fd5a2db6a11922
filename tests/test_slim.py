"""Physical filter removal: the slim model equals the masked one, on every supported topology."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_cnn

from workbench.model.builders import small_resnet
from workbench.model.compat import keras
from workbench.model.registry import prunable_layers
from workbench.model.train import Recipe
from workbench.prune.pruning import apply_masks, fine_tune
from workbench.prune.slim import (
    channel_plan,
    couple_masks,
    coupled_groups,
    mask_structured,
    slim_model,
    slim_report,
    unit_alive,
)

layers = keras.layers
TOLERANCE = 1e-5


def conv_bn_net(seed: int = 0, input_shape=(12, 12, 1), classes: int = 3) -> keras.Model:
    """Conv(no bias)-BN-ReLU-Conv-BN-ReLU-GAP-Dense-Dense, with BN statistics far from identity."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(6, 3, use_bias=False, name="c1")(inputs)
    x = layers.ReLU(name="r1")(layers.BatchNormalization(name="bn1")(x))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c2")(x)
    x = layers.ReLU(name="r2")(layers.BatchNormalization(name="bn2")(x))
    x = layers.Dense(5, activation="relu", name="fc")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, layers.Dense(classes, activation="softmax", name="out")(x), name="conv_bn")
    _randomise_batchnorm(model, seed)
    return model


def tiny_resnet(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = small_resnet((12, 12, 1), 2, widths=(4, 8))
    _randomise_batchnorm(model, seed)
    return model


def _randomise_batchnorm(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.normal(1, 0.3, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                ]
                + [rng.uniform(0.5, 2.0, var.shape)]
            )


BUILDERS = {"conv_pool_flatten_dense": tiny_cnn, "conv_bn": conv_bn_net, "resnet": tiny_resnet}


def random_structured_keep(model: keras.Model, seed: int, prune: float = 0.5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = {}
    for info in prunable_layers(model):
        units = rng.random(info.shape[-1]) >= prune
        keep[info.name] = np.broadcast_to(units, info.shape).copy()
    return keep


def _images(model: keras.Model, n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *model.input_shape[1:])).astype(np.float32)


def _max_gap(a: keras.Model, b: keras.Model, images: np.ndarray) -> float:
    return float(np.abs(np.asarray(a(images)) - np.asarray(b(images))).max())


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize("mask_seed", [0, 1, 2])
def test_slim_model_OutputsEqualTheMaskedModel_ForEachTopology(builder, mask_seed):
    model = BUILDERS[builder]()
    keep = couple_masks(model, random_structured_keep(model, mask_seed))
    slim = slim_model(model, keep)
    masked = mask_structured(model, keep)
    assert _max_gap(slim, masked, _images(model)) <= TOLERANCE
    assert slim.count_params() < model.count_params()
    assert _max_gap(masked, model, _images(model)) > 1e-3, "the mask should change the model"


def test_slim_model_RemovesPrunedFiltersAndSlicesTheNextLayersInputs():
    model = tiny_cnn()
    keep = random_structured_keep(model, 3)
    keep["out"][:] = True
    alive = unit_alive(keep)
    slim = slim_model(model, keep)
    kept = {name: int(units.sum()) for name, units in alive.items()}
    assert slim.get_layer("conv1").kernel.shape == (3, 3, 1, kept["conv1"])
    assert slim.get_layer("conv2").kernel.shape == (3, 3, kept["conv1"], kept["conv2"])
    # flatten of (9, 9, C): input i of fc belongs to channel i % C, so 81 rows per kept channel
    assert slim.get_layer("fc").kernel.shape == (81 * kept["conv2"], kept["fc"])
    assert slim.get_layer("out").kernel.shape == (kept["fc"], 2)


def test_slim_model_FlattenRows_AreTheKeptChannelsRowsInOrder():
    model = tiny_cnn()
    keep = random_structured_keep(model, 4)
    keep["out"][:] = True
    slim = slim_model(model, keep)
    rows = np.tile(unit_alive(keep)["conv2"], 81)
    expected = np.asarray(mask_structured(model, keep).get_layer("fc").kernel)[rows][
        :, unit_alive(keep)["fc"]
    ]
    np.testing.assert_array_equal(np.asarray(slim.get_layer("fc").kernel), expected)


def test_slim_model_NeverRemovesTheClassLogits_EvenWhenTheMaskPrunesThem():
    model = tiny_cnn()
    keep = random_structured_keep(model, 0)
    keep["out"][:, 0] = False
    slim = slim_model(model, keep)
    assert slim.output_shape == (None, 2)
    assert _max_gap(slim, mask_structured(model, keep), _images(model)) <= TOLERANCE
    assert couple_masks(model, keep)["out"].all()


def test_slim_model_LayerWithEveryUnitPruned_KeepsOneZeroChannel():
    model = tiny_cnn()
    keep = random_structured_keep(model, 0, prune=0.0)
    keep["conv2"][:] = False
    slim = slim_model(model, keep)
    assert slim.get_layer("conv2").kernel.shape[-1] == 1
    assert not np.asarray(slim.get_layer("conv2").kernel).any()
    assert _max_gap(slim, mask_structured(model, keep), _images(model)) <= TOLERANCE


def test_slim_model_SavesAndLoadsAsAPlainKerasFile(tmp_path):
    model = tiny_resnet()
    keep = couple_masks(model, random_structured_keep(model, 1))
    slim = slim_model(model, keep)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.models.load_model(tmp_path / "slim.keras")
    assert _max_gap(loaded, slim, _images(model)) == 0.0


# --- BatchNorm ---------------------------------------------------------------------------------


def _probe(model: keras.Model, layer: str) -> keras.Model:
    return keras.Model(model.input, model.get_layer(layer).output)


def test_apply_masks_Structured_ZerosBatchNormOfPrunedFilters_WhichTheKernelMaskAloneLeavesConstant():
    model = conv_bn_net()
    keep = random_structured_keep(model, 0)
    dead = ~unit_alive(keep)["c1"]
    assert dead.any()
    images = _images(model)
    plain = _probe(apply_masks(model, keep), "bn1")
    pinned = _probe(apply_masks(model, keep, structured=True), "bn1")
    assert np.abs(np.asarray(plain(images))[..., dead]).min() > 0, "BN turns a zero filter into beta - ..."
    assert np.all(np.asarray(pinned(images))[..., dead] == 0.0)
    assert _max_gap(apply_masks(model, keep, structured=True), mask_structured(model, keep), images) == 0.0


def _fine_tune_briefly(model, keep, data):
    recipe = Recipe(epochs=2, batch_size=8, learning_rate=0.05)
    tuned = apply_masks(model, keep, structured=True)
    history = fine_tune(tuned, keep, data, recipe, structured=True, progress=False)
    assert len(history["loss"]) == 2
    return tuned


@pytest.mark.slow
def test_fine_tune_Structured_PinsBatchNormOfDeadChannels_BeforeAnAdd_SoSlimStillEquals(tiny_dataset):
    keras.utils.set_random_seed(0)
    model = small_resnet(tiny_dataset.image_shape, 2, widths=(4, 8))
    keep = random_structured_keep(model, 2)  # uncoupled: the add passes gradient to dead BN betas
    alive = unit_alive(keep)
    dead_b = ~alive["block2_b_conv"] & alive["block2_proj_conv"]
    assert dead_b.any()
    tuned = _fine_tune_briefly(model, keep, tiny_dataset)
    assert np.all(np.asarray(tuned.get_layer("block2_b_bn").beta)[dead_b] == 0.0)
    assert np.all(np.asarray(tuned.get_layer("block2_b_bn").gamma)[dead_b] == 0.0)
    assert _max_gap(slim_model(tuned, keep), tuned, tiny_dataset.test.images) <= TOLERANCE


@pytest.mark.slow
def test_fine_tune_Structured_PinsDeadBiasesOfLinearUnits_SoSlimStillEquals(tiny_dataset):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(tiny_dataset.image_shape),
            layers.Flatten(name="flat"),
            layers.Dense(6, name="linear"),  # f(0) = 0 but, unlike ReLU, a gradient at 0
            layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    keep = couple_masks(model, random_structured_keep(model, 0))
    tuned = _fine_tune_briefly(model, keep, tiny_dataset)
    dead = ~unit_alive(keep)["linear"]
    assert dead.any() and np.all(np.asarray(tuned.get_layer("linear").bias)[dead] == 0.0)
    assert _max_gap(slim_model(tuned, keep), tuned, tiny_dataset.test.images) <= TOLERANCE


def test_slim_model_OfAModelFineTunedUnstructured_WarnsThatItDiffers(tiny_dataset):
    """README's recipe without structured=True: dead units' biases trained on, and slim_model
    silently dropped them (outputs 1e-3 apart, AUC 0.556 vs 0.541 in a trial)."""
    import warnings

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(tiny_dataset.image_shape),
            layers.Flatten(name="flat"),
            layers.Dense(6, name="linear"),
            layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    keep = couple_masks(model, random_structured_keep(model, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the documented use, on the dense model: no warning
        slim_model(model, keep)
    tuned = apply_masks(model, keep)
    fine_tune(tuned, keep, tiny_dataset, Recipe(epochs=1, batch_size=8, learning_rate=0.05), progress=False)
    with pytest.warns(UserWarning, match=r"removed channels of \['linear'\] still carry a bias"):
        slim = slim_model(tuned, keep)
    assert _max_gap(slim, tuned, tiny_dataset.test.images) > TOLERANCE  # what the warning is about


# --- residual coupling -------------------------------------------------------------------------


def test_coupled_groups_AreTheConvsMeetingInEachResidualAdd():
    assert coupled_groups(tiny_resnet()) == [
        ("stem_conv", "block1_b_conv"),
        ("block2_proj_conv", "block2_b_conv"),
    ]
    assert coupled_groups(tiny_cnn()) == []


def test_couple_masks_Any_KeepsAChannelIfAnyMemberKeepsIt_All_PrunesItIfAnyPrunes():
    model = tiny_resnet()
    keep = random_structured_keep(model, 2)
    alive = unit_alive(keep)
    either = alive["block2_proj_conv"] | alive["block2_b_conv"]
    both = alive["block2_proj_conv"] & alive["block2_b_conv"]
    assert (either != both).any(), "the random mask should disagree somewhere"
    for rule, expected in (("any", either), ("all", both)):
        coupled = unit_alive(couple_masks(model, keep, rule))
        np.testing.assert_array_equal(coupled["block2_proj_conv"], expected)
        np.testing.assert_array_equal(coupled["block2_b_conv"], expected)


def test_couple_masks_ThatGivesMuchSparsityBack_SaysHowMuch():
    """A trial's EfficientNetB0 went from 0.50 to 0.21 with no message, and 'isn't faster' followed."""
    import warnings

    from workbench.core.masks import overall_sparsity

    model = tiny_resnet()
    keep = random_structured_keep(model, 2)
    with pytest.warns(UserWarning, match=r"couple_masks\(rule='any'\) changed the sparsity from") as seen:
        coupled = couple_masks(model, keep, "any")
    before, after = overall_sparsity(keep), overall_sparsity(coupled)
    assert abs(before - after) > 0.05 and f"from {before:.2f} to {after:.2f}" in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        couple_masks(model, keep, "any", quiet=True)  # a search coupling many candidates on purpose
        couple_masks(model, couple_masks(model, keep, "any", quiet=True))  # already coupled: no change


def test_slim_model_OnResnet_EveryAddInputHasTheSameChannels():
    model = tiny_resnet()
    keep = couple_masks(model, random_structured_keep(model, 1))
    slim = slim_model(model, keep)
    for group in coupled_groups(model):
        widths = {slim.get_layer(name).kernel.shape[-1] for name in group}
        assert widths == {int(unit_alive(keep)[group[0]].sum())}
    assert slim.get_layer("block1_add").output.shape[-1] == slim.get_layer("stem_bn").output.shape[-1]


def test_slim_model_UncoupledMask_KeepsTheUnionAsZeros_AndStillEqualsTheMaskedModel():
    model = tiny_resnet()
    keep = random_structured_keep(model, 2)
    alive = unit_alive(keep)
    plan = channel_plan(model, keep)
    np.testing.assert_array_equal(plan["block2_b_conv"], alive["block2_proj_conv"] | alive["block2_b_conv"])
    slim = slim_model(model, keep)
    assert _max_gap(slim, mask_structured(model, keep), _images(model)) <= TOLERANCE


# --- bad input ---------------------------------------------------------------------------------


def test_slim_model_UnstructuredMask_RaisesValueError():
    model = tiny_cnn()
    keep = random_structured_keep(model, 0)
    keep["conv2"][0, 0, 0, np.flatnonzero(unit_alive(keep)["conv2"])[0]] = False
    with pytest.raises(ValueError, match="structured"):
        slim_model(model, keep)


def test_slim_model_MaskForAnotherModel_RaisesValueError():
    with pytest.raises(ValueError, match="keep"):
        slim_model(tiny_resnet(), random_structured_keep(tiny_cnn(), 0))
    keep = random_structured_keep(tiny_cnn(classes=3), 0)
    with pytest.raises(ValueError, match="'out'"):
        slim_model(tiny_cnn(), keep)


def test_slim_model_ChannelMovingReshape_KeepsItsInputWhole_AndStillEqualsTheMaskedModel():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, name="c"),
            layers.Reshape((18, 8), name="moves_channels"),
            layers.Dense(2, name="d"),
        ]
    )
    keep = random_structured_keep(model, 0)
    assert not unit_alive(keep)["c"].all()
    slim = slim_model(model, keep)
    assert slim.get_layer("c").kernel.shape[-1] == 4, "the Reshape reads every channel"
    assert "moves_channels" in slim_report(model)
    assert _max_gap(slim, mask_structured(model, keep), _images(model)) <= TOLERANCE


def test_slim_model_ChannelPreservingReshape_IsSlimmed():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(4, 3, name="c"),
            layers.Reshape((36, 4), name="keeps_channels"),
            layers.Dense(2, name="d"),
        ]
    )
    keep = random_structured_keep(model, 0)
    slim = slim_model(model, keep)
    assert slim.get_layer("c").kernel.shape[-1] == unit_alive(keep)["c"].sum()
    assert _max_gap(slim, mask_structured(model, keep), _images(model)) <= TOLERANCE


def test_slim_model_ActivationThatMapsZeroToNonZero_KeepsThoseUnitsAsConstants():
    model = keras.Sequential(
        [keras.Input((6,)), layers.Dense(8, activation="sigmoid", name="h"), layers.Dense(2, name="o")]
    )
    keep = random_structured_keep(model, 0)
    assert not unit_alive(keep)["h"].all()
    slim = slim_model(model, keep)
    assert slim.get_layer("h").kernel.shape[-1] == 8, "sigmoid(0) = 0.5 still reaches the output"
    assert _max_gap(slim, mask_structured(model, keep), _images(model)) <= TOLERANCE


def test_couple_masks_UnknownRule_RaisesValueError():
    model = tiny_resnet()
    with pytest.raises(ValueError, match="rule"):
        couple_masks(model, random_structured_keep(model, 0), rule="most")
