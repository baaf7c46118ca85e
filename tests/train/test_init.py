"""fcn_jax.train.init: the strict merge of another network's params (merge_params & co)."""

import numpy as np
import pytest

from fcn_jax.errors import FCNError
from fcn_jax.train.init import layer_names, layers_pattern, merge_params, stream_trunks


def tree(**layers):
    """``{layer: {"kernel": zeros(shape), "bias": zeros(shape[-1])}}`` filled with ``fill``."""
    return {
        name: {"kernel": np.full(shape, fill, np.float32), "bias": np.full(shape[-1:], fill)}
        for name, (shape, fill) in layers.items()
    }


INIT = tree(conv=((3, 3, 2, 4), 0.0), score=((1, 1, 4, 5), 0.0), up=((4, 4, 5, 5), 0.0))


def test_loaded_values_replace_init_except_new():
    loaded = tree(conv=((3, 3, 2, 4), 1.0), score=((1, 1, 4, 5), 2.0))
    merged = merge_params(loaded, INIT, new=r"up/.*")
    assert np.all(merged["conv"]["kernel"] == 1) and np.all(merged["score"]["bias"] == 2)
    assert np.all(merged["up"]["kernel"] == 0)
    assert {k: set(v) for k, v in merged.items()} == {k: set(v) for k, v in INIT.items()}


def test_missing_param_is_an_error():
    loaded = tree(conv=((3, 3, 2, 4), 1.0), score=((1, 1, 4, 5), 2.0))
    del loaded["score"]["bias"]
    with pytest.raises(
        FCNError, match=r"src does not fit this model: 1 missing params: score/bias"
    ):
        merge_params(loaded, INIT, new=r"up/.*", where="src")


def test_unexpected_param_is_an_error_unless_ignored():
    loaded = tree(conv=((3, 3, 2, 4), 1.0), score=((1, 1, 4, 5), 2.0), extra=((1,), 3.0))
    with pytest.raises(FCNError, match=r"2 unexpected params: extra/bias, extra/kernel"):
        merge_params(loaded, INIT, new=r"up/.*")
    merged = merge_params(loaded, INIT, new=r"up/.*", ignore=r"extra/.*")
    assert "extra" not in merged


def test_shape_mismatch_names_both_shapes():
    loaded = tree(conv=((3, 3, 2, 4), 1.0), score=((1, 1, 4, 21), 2.0))
    with pytest.raises(FCNError, match=r"score/kernel is \(1, 1, 4, 21\) there, \(1, 1, 4, 5\)"):
        merge_params(loaded, INIT, new=r"up/.*")


def test_error_lists_a_few_per_kind_and_counts():
    init = tree(**{f"l{i}": ((2,), 0.0) for i in range(5)})
    loaded = tree(**{f"m{i}": ((2,), 0.0) for i in range(5)}, l0=((2,), 1.0))
    with pytest.raises(FCNError) as e:
        merge_params(loaded, init)
    message = str(e.value)
    assert "8 missing params: l1/bias, l1/kernel, l2/bias (and 5 more)" in message
    assert "10 unexpected params: m0/bias, m0/kernel, m1/bias (and 7 more)" in message
    assert "\n" not in message


def test_new_is_a_full_match_not_a_prefix():
    # "up" must not make "upper" new: a pattern matches whole paths.
    init = tree(up=((2,), 0.0), upper=((2,), 0.0))
    with pytest.raises(FCNError, match="missing params: upper/bias"):
        merge_params(tree(up=((2,), 1.0)), init, new="up")
    merged = merge_params(tree(upper=((2,), 1.0)), init, new=layers_pattern(["up"]))
    assert np.all(merged["upper"]["kernel"] == 1) and np.all(merged["up"]["kernel"] == 0)


def test_nothing_in_common_is_an_error():
    with pytest.raises(FCNError, match="x shares no layer with this model"):
        merge_params(tree(other=((2,), 1.0)), INIT, new=".*", ignore=".*", where="x")


def test_layer_names_and_patterns():
    nested = {"vgg16": {"conv1_1": {"kernel": 0, "bias": 0}}, "score": {"kernel": 0}}
    assert layer_names(nested) == {"vgg16/conv1_1", "score"}
    assert layers_pattern([]) is None
    assert layers_pattern(["b.x", "a"]) == r"(?:a|b\.x)/[^/]+"


def test_stream_trunks_copy_one_trunk_into_every_stream():
    params = {"vgg16": {"conv1_1": {"kernel": 1}}, "score_fr": {"kernel": 2}}
    out = stream_trunks(params, ("color", "hha"))
    assert out["vgg16color"] == {"conv1_1color": {"kernel": 1}}
    assert out["vgg16hha"] == {"conv1_1hha": {"kernel": 1}}
    assert stream_trunks(params, ()) is params
