"""What a resumed run may change in its config: refused, or listed and taken."""

import json

import pytest

from fcn_jax.configs import load_config_file, spec_from_config
from fcn_jax.models import abstract_variables
from fcn_jax.train.workdir import config_changes, init_source, refused_changes
from tests.utils import REPO


def smoke():
    return load_config_file(REPO / "configs/synthetic_fcn8s.py", "smoke")  # Adam, no decay


def changed(**values):
    """The smoke config with dotted keys (``optim__name``) set."""
    c = smoke()
    for key, value in values.items():
        *path, last = key.split("__")
        node = c
        for part in path:
            node = node[part]
        node[last] = value
    return c


def saved(config):
    """The config as a checkpoint stores it."""
    return json.loads(config.to_json_best_effort())


def refused(before, after):
    changes = config_changes(saved(before), after)
    params = abstract_variables(spec_from_config(after))["params"]
    return changes, refused_changes(changes, after, params, steps_per_epoch=4)


@pytest.mark.parametrize(
    ("values", "keys"),
    [
        ({"optim__name": "sgd"}, ["optim.name"]),
        ({"model__arch": "fcn16s"}, ["model.arch"]),
        ({"model__n_class": 7}, ["model.n_class"]),
        ({"model__width": 0.125}, ["model.width"]),
        # Not listed by name, found by the optimiser state's layout.
        ({"optim__weight_decay": 5e-4}, ["optim.weight_decay"]),
        ({"optim__trainable": "score_.*"}, ["optim.trainable"]),
        ({"model__learn_upsampling": True}, ["model.learn_upsampling"]),
    ],
)
def test_changes_that_do_not_fit_the_checkpoint_are_refused(values, keys):
    _, keys_refused = refused(smoke(), changed(**values))
    assert keys_refused == keys


def test_other_changes_are_listed_not_refused():
    after = changed(
        learning_rate=0.5,
        num_steps=9,
        optim__momentum=0.0,  # Adam ignores it: the state is the same
        optim__lr_halve_every_epochs=2,  # a schedule keeps the same (count) state
        data__buckets=(48,),
        init__from_="runs/elsewhere",
    )
    changes, keys_refused = refused(smoke(), after)
    assert keys_refused == []
    assert {key: (old, new) for key, old, new in changes} == {
        "learning_rate": (0.001, 0.5),
        "num_steps": (2, 9),
        "optim.momentum": (0.99, 0.0),
        "optim.lr_halve_every_epochs": (None, 2),
        "data.buckets": (None, [48]),
        "init.from_": (None, "runs/elsewhere"),
    }


def test_weight_decay_changes_fit_while_it_stays_on():
    before = changed(optim__name="sgd", optim__weight_decay=5e-4)
    _, keys_refused = refused(before, changed(optim__name="sgd", optim__weight_decay=1e-3))
    assert keys_refused == []
    after = changed(optim__name="sgd", optim__weight_decay=5e-4, optim__momentum=0.0)
    _, keys_refused = refused(before, after)
    assert keys_refused == ["optim.momentum"]  # SGD without momentum keeps no trace


@pytest.mark.parametrize("spelling", [None, "", "None"])
def test_every_spelling_of_from_scratch_is_the_same(spelling):
    after = changed(init__from_=spelling)
    assert init_source(after) is None
    assert config_changes(saved(smoke()), after) == []


def test_a_key_the_saved_config_lacks_is_listed():
    before = saved(smoke())
    del before["log_every"]  # a run saved before the key existed
    assert config_changes(before, smoke()) == [("log_every", "(absent)", 10)]
