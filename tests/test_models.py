"""Baseline builders and loading a user's own .keras model."""

from __future__ import annotations

import pytest

from workbench.compat import keras
from workbench.models import build_model, load_user_model, seed_cnn, small_resnet


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
