"""Baseline builders and loading a user's own .keras model."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np
import pytest
from conftest import custom_layer_model_file

from workbench.model.builders import build_model, import_user_modules, load_user_model, seed_cnn, small_resnet
from workbench.model.compat import keras


def test_seed_cnn_HasTheTutorialLayersSizedFromData(tiny_dataset):
    model = build_model("seed_cnn", tiny_dataset)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [32, 64, 64]
    assert model.input_shape == (None, 24, 24, 1)
    assert model.output_shape == (None, 2)


def test_small_resnet_HasBatchNormAndResidualAdds():
    model = small_resnet((28, 28, 3), 5)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"BatchNormalization", "Add", "Conv2D"} <= kinds
    assert model.output_shape == (None, 5)


def test_build_model_UnknownName_RaisesValueErrorListingChoices(tiny_dataset):
    expected = r"model must be one of \['seed_cnn', 'seed_cnn3d', 'small_resnet'\]"
    with pytest.raises(ValueError, match=expected):
        build_model("vgg", tiny_dataset)


def test_load_user_model_MatchingModel_Loads(tmp_path, tiny_dataset):
    path = tmp_path / "mine.keras"
    seed_cnn((24, 24, 1), 2).save(path)
    assert load_user_model(path, tiny_dataset).output_shape == (None, 2)


def test_load_user_model_WrongInputShape_RaisesValueError(tmp_path, tiny_dataset):
    path = tmp_path / "mine.keras"
    seed_cnn((28, 28, 1), 2).save(path)
    with pytest.raises(
        ValueError, match=r"input shape \(28, 28, 1\) does not match the data's images \(24, 24, 1\)"
    ):
        load_user_model(path, tiny_dataset)


def test_load_user_model_WrongNumberOfClasses_RaisesValueError(tmp_path, tiny_dataset):
    path = tmp_path / "mine.keras"
    seed_cnn((24, 24, 1), 3).save(path)
    with pytest.raises(ValueError, match="softmax head over 3 unit.*does not fit tiny, a binary task"):
        load_user_model(path, tiny_dataset)


def test_load_user_model_MissingOrNotKeras_RaisesClearErrors(tmp_path, tiny_dataset):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_user_model(tmp_path / "absent.keras", tiny_dataset)
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="Keras 3 .keras file"):
        load_user_model(tmp_path / "weights.h5", tiny_dataset)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a .keras file"):
        load_user_model(tmp_path / "broken.keras", tiny_dataset)


def test_load_user_model_AcceptsFlexibleSpatialInput(tmp_path, tiny_dataset):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    path = tmp_path / "flex.keras"
    keras.Model(inputs, outputs).save(path)
    assert load_user_model(path, tiny_dataset) is not None


# --- the kinds of Keras model a user may bring -------------------------------------------------

layers = keras.layers


def _classifier_top(x):
    return layers.Dense(2, activation="softmax")(layers.Flatten()(layers.Conv2D(4, 3, activation="relu")(x)))


def _functional():
    inputs = keras.Input((24, 24, 1))
    return keras.Model(inputs, _classifier_top(inputs))


def _nested():
    inputs = keras.Input((24, 24, 1))
    inner = keras.Sequential([keras.Input((24, 24, 1)), layers.Conv2D(4, 3), layers.ReLU()], name="inner")
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(inner(inputs))))


@keras.saving.register_keras_serializable(package="test_models")
class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv, self.flat, self.out = (
            layers.Conv2D(4, 3),
            layers.Flatten(),
            layers.Dense(2, activation="softmax"),
        )

    def call(self, x):
        return self.out(self.flat(self.conv(x)))


def _subclassed():
    model = _Subclassed()
    model(np.zeros((1, 24, 24, 1), "float32"))
    return model


def _lambda():
    inputs = keras.Input((24, 24, 1))
    return keras.Model(inputs, _classifier_top(layers.Lambda(lambda t: t * 0.5)(inputs)))


def _two_outputs():
    inputs = keras.Input((24, 24, 1))
    x = layers.Flatten()(inputs)
    return keras.Model(inputs, [layers.Dense(2, activation="softmax")(x), layers.Dense(1)(x)])


def _two_inputs():
    image, age = keras.Input((24, 24, 1)), keras.Input((1,))
    x = layers.Concatenate()([layers.Flatten()(image), age])
    return keras.Model([image, age], layers.Dense(2, activation="softmax")(x))


def _other_keras_version(path):
    """A .keras archive whose metadata says an older Keras saved it."""
    _functional().save(path)
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["metadata.json"] = json.dumps(
        {"keras_version": "3.0.0", "date_saved": "2024-01-01@00:00:00"}
    ).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def _saved(build, name="model.keras"):
    def write(tmp):
        build().save(tmp / name)
        return tmp / name, {}

    return write


def _custom_layer(options):
    def write(tmp):
        path, source = custom_layer_model_file(tmp)
        if options == "import":
            import_user_modules([source])
        if options == "custom_objects":
            return path, {"custom_objects": {"ChannelAttention": _channel_attention(source)}}
        return path, {}

    return write


def _channel_attention(source):
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_layers_copy", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ChannelAttention


MODEL_KINDS = {
    "sequential": (_saved(lambda: seed_cnn((24, 24, 1), 2)), None),
    "functional": (_saved(_functional), None),
    "nested sequential inside functional": (_saved(_nested), None),
    "custom layer, its module imported": (_custom_layer("import"), None),
    "custom layer, custom_objects": (_custom_layer("custom_objects"), None),
    "custom layer, unknown here": (
        _custom_layer(None),
        r"uses 'ChannelAttention', a custom class .*import the module .* custom_objects=.*model_modules",
    ),
    "lambda, safe_mode=False": (lambda tmp: (_saved(_lambda)(tmp)[0], {"safe_mode": False}), None),
    "lambda": (_saved(_lambda), r"Lambda layer .* safe_mode=False if you trust the file"),
    "subclassed": (_saved(_subclassed), r"subclassed model \(_Subclassed.*Sequential or functional model"),
    "two outputs": (_saved(_two_outputs), r"must have one output"),
    "two inputs": (_saved(_two_inputs), r"has 2 inputs; the workbench prunes models with one image input"),
    "saved by another Keras 3": (
        lambda tmp: (_other_keras_version(tmp / "old.keras"), (tmp / "old.keras", {}))[1],
        None,
    ),
    "legacy .h5 (Keras 2)": (
        _saved(lambda: seed_cnn((24, 24, 1), 2), "old.h5"),
        r"old.h5, a legacy HDF5 file .*keras.models.load_model\('.*old.h5'\).save\('.*old.keras'\)",
    ),
    "SavedModel folder": (
        lambda tmp: ((tmp / "saved_model").mkdir() or tmp / "saved_model", {}),
        r"got the folder .*saved_model \(a TensorFlow SavedModel\?\)",
    ),
}


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_load_user_model_EveryKindOfModel_LoadsAndPrunes_OrIsRefusedSayingWhatIsNeeded(
    tmp_path, tiny_dataset, kind
):
    from workbench.explore.session import Explorer
    from workbench.prune.pruning import PruneSpec

    write, refusal = MODEL_KINDS[kind]
    path, options = write(tmp_path)
    if refusal:
        with pytest.raises(ValueError, match=refusal):
            load_user_model(path, tiny_dataset, **options)
        return
    model = load_user_model(path, tiny_dataset, **options)
    point = Explorer(model, tiny_dataset, calibration_size=16, grid_points=3).point(PruneSpec(sparsity=0.5))
    assert 0 <= point.metrics["auc"] <= 1


def test_load_user_model_LegacyH5_ConversionItSuggests_Works(tmp_path, tiny_dataset):
    seed_cnn((24, 24, 1), 2).save(tmp_path / "old.h5")
    with pytest.raises(ValueError, match="convert it once") as refused:
        load_user_model(tmp_path / "old.h5", tiny_dataset)
    exec(re.search(r"convert it once: (.*)$", str(refused.value)).group(1), {"keras": keras})
    assert load_user_model(tmp_path / "old.keras", tiny_dataset).output_shape == (None, 2)


@pytest.mark.parametrize(
    "modules, error, message",
    [
        (["no_such_module_xyz"], ValueError, r"model_modules: could not import 'no_such_module_xyz'"),
        (["missing.py"], FileNotFoundError, r"model_modules: no such .py file: .*missing.py"),
        ([3], ValueError, r"model_modules must hold module names or .py paths, got 3"),
    ],
)
def test_import_user_modules_BadModule_IsNamed(tmp_path, monkeypatch, modules, error, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        import_user_modules(modules)


def test_import_user_modules_ModuleThatFails_IsNamedWithItsError(tmp_path):
    (tmp_path / "broken_layers.py").write_text("raise RuntimeError('needs a GPU')\n")
    with pytest.raises(ValueError, match=r"importing '.*broken_layers.py' failed: RuntimeError: needs a GPU"):
        import_user_modules([tmp_path / "broken_layers.py"])
