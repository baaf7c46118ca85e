import re

import jax
import numpy as np
import pytest

from fcn_jax.checkpoint import (
    WeightsMetadata,
    best_step,
    load_metadata,
    load_weights,
    save_weights,
)
from fcn_jax.errors import FCNError
from fcn_jax.models import NetSpec, abstract_variables
from tests.utils import metadata_for


def metadata(arch="fcn16s", n_class=3, **kw):
    return metadata_for(arch, n_class, **kw)


def random_variables(meta, seed=0):
    """{"params": ...} of ``meta``'s network, standard normal in every leaf."""
    abstract = abstract_variables(meta.spec)["params"]
    leaves, tree = jax.tree.flatten(abstract)
    rng = np.random.default_rng(seed)
    params = jax.tree.unflatten(
        tree, [rng.standard_normal(x.shape).astype(np.float32) for x in leaves]
    )
    return {"params": params}


def test_save_load_round_trip(tmp_path):
    meta = metadata()
    variables = random_variables(meta)
    save_weights(tmp_path / "w", variables, meta)
    loaded, meta2 = load_weights(tmp_path / "w")
    assert meta2 == meta
    assert set(loaded) == {"params"}
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
    raw, _ = load_weights(tmp_path / "w", as_numpy=True)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(raw))
    assert load_metadata(tmp_path / "w").to_json()["preprocessing"]["mean"][0] == 104.00699


def test_latest_step_and_overwrite(tmp_path):
    meta = metadata()
    save_weights(tmp_path / "w", random_variables(meta, 0), meta)
    with pytest.raises(FCNError, match="already exists"):
        save_weights(tmp_path / "w", random_variables(meta, 1), meta)
    new = random_variables(meta, 1)
    save_weights(tmp_path / "w", new, meta, step=5, overwrite=True)
    loaded, _ = load_weights(tmp_path / "w")
    jax.tree.map(np.testing.assert_array_equal, loaded, new)
    with pytest.raises(FCNError, match=r"has no step 0; it has steps \[5\]"):
        load_weights(tmp_path / "w", step=0)


def test_bad_directories(tmp_path):
    with pytest.raises(FCNError, match="does not exist"):
        load_weights(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FCNError, match="is a file"):
        load_weights(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FCNError, match="holds no checkpoint"):
        load_weights(tmp_path / "empty")


def test_params_that_do_not_match_the_metadata(tmp_path):
    meta = metadata()
    wrong = random_variables(metadata(width=0.25))
    save_weights(tmp_path / "w", wrong, meta)
    with pytest.raises(FCNError) as e:
        load_weights(tmp_path / "w")
    msg = str(e.value)
    assert "does not fit a fcn16s (vgg16) with n_class=3, width=0.125" in msg
    assert "shape mismatch in vgg16.conv1_1: vgg16.conv1_1.kernel is (3, 3, 3, 16)" in msg
    assert "needs (3, 3, 3, 8)" in msg


def test_metadata_validation():
    with pytest.raises(FCNError, match="arch 'fcn2s'"):
        metadata(arch="fcn2s")
    with pytest.raises(FCNError, match="2 class_names for n_class=3"):
        metadata(class_names=("a", "b"))
    with pytest.raises(FCNError, match=r"lacks \['width'\]"):
        WeightsMetadata.from_json({k: v for k, v in metadata().to_json().items() if k != "width"})
    assert WeightsMetadata.from_json(metadata().to_json()) == metadata()
    assert isinstance(metadata().spec, NetSpec)


def test_a_step_folder_names_its_directory_and_step(tmp_path):
    # What a user browsing a training workdir passes: run/40 (or run/40/params), not run.
    meta = metadata()
    save_weights(tmp_path / "run", random_variables(meta), meta, step=40)
    expected = f"is step 40 of the weights directory {tmp_path / 'run'}"
    for path in (tmp_path / "run" / "40", tmp_path / "run" / "40" / "params"):
        with pytest.raises(FCNError, match=re.escape(expected)) as e:
            load_weights(path)
        assert f"--weights {tmp_path / 'run'} --step 40" in str(e.value)
        assert "holds no checkpoint" not in str(e.value)
    with pytest.raises(FCNError, match=re.escape(expected)):
        best_step(tmp_path / "run" / "40")
    # A folder merely named by a number is not a step folder.
    (tmp_path / "7").mkdir()
    with pytest.raises(FCNError, match="holds no checkpoint"):
        load_weights(tmp_path / "7")
