"""torchvision's FCN-ResNet recipe in fcn-jax: its optimiser groups, schedule, aux loss, data
augmentation and evaluation resize, and the demo-sized run that learns.

The two-step equality with torchvision's own training loop is in
tests/convert/test_train_step_parity.py (it needs torch).
"""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from fcn_jax.checkpoint import load_metadata
from fcn_jax.configs import load_config_file
from fcn_jax.data.pipeline import PipelineOptions, make_pipeline
from fcn_jax.data.synthetic import SyntheticSegmentation
from fcn_jax.data.transforms import augment, random_resize
from fcn_jax.errors import FCNError
from fcn_jax.eval.evaluate import resized_buckets
from fcn_jax.models import NetSpec, random_variables
from fcn_jax.train.losses import cross_entropy_sum
from fcn_jax.train.optim import learning_rate_schedule, make_optimizer, param_labels
from fcn_jax.train.step import create_train_state, make_steps
from tests.utils import REPO, run_script

RECIPE = REPO / "configs/voc_fcn_resnet50.py"
N_CLASS = 5
WIDTH = 0.0625


def recipe(**overrides):
    c = load_config_file(RECIPE)
    c.model.n_class, c.model.width = N_CLASS, WIDTH
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (c[section] if section else c)[name] = value
    return c


@pytest.fixture(scope="module")
def variables():
    spec = NetSpec.single("fcn_resnet50", N_CLASS, backbone="resnet50", width=WIDTH, aux=True)
    return spec, random_variables(spec, seed=0)


# --- optimiser -----------------------------------------------------------------------------------


def test_poly_schedule_is_torchvisions_lambda_per_step():
    c = recipe(num_steps=1000)
    lr = learning_rate_schedule(c, steps_per_epoch=100)
    steps = np.array([0, 1, 250, 500, 999, 1000])
    expected = 0.02 * (1 - steps / 1000) ** 0.9  # LambdaLR's factor at iteration i
    np.testing.assert_allclose(
        [float(lr(s)) for s in steps], expected, rtol=1e-4, atol=1e-12
    )  # float32


def test_poly_schedule_refuses_other_schedules_and_bad_powers():
    with pytest.raises(FCNError, match=re.escape("lr_milestone_epochs and optim.lr_poly_power")):
        learning_rate_schedule(recipe(**{"optim.lr_milestone_epochs": (5,)}), 10)
    with pytest.raises(FCNError, match=re.escape("lr_poly_power=-1 must be > 0")):
        learning_rate_schedule(recipe(**{"optim.lr_poly_power": -1.0}), 10)


def test_aux_head_at_ten_times_the_rate_and_every_param_decayed(variables):
    params = variables[1]["params"]
    labels = param_labels(params, lr_mults=(("aux_classifier/", 10.0),))
    flat = {"/".join(k): x for k, x in traverse_util.flatten_dict(labels).items()}
    aux = {k: x for k, x in flat.items() if k.startswith("aux_classifier")}
    assert aux and set(aux.values()) == {"weight@x10", "bias@x10"}
    assert {x for k, x in flat.items() if k not in aux} == {"weight", "bias"}

    # One step on a zero gradient moves each param by the decay alone: -lr * mult * wd * p.
    c = recipe(num_steps=10)
    tx = make_optimizer(c, params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    flat_params = traverse_util.flatten_dict(params)
    for key, u in traverse_util.flatten_dict(updates).items():
        path, p = "/".join(key), flat_params[key]
        mult = 10.0 if path.startswith("aux_classifier") else 1.0
        np.testing.assert_allclose(u, -0.02 * mult * 1e-4 * p, rtol=1e-5, atol=1e-12, err_msg=path)
    # Caffe's rule (decay_biases False): a bias does not move on a zero gradient.
    tx = make_optimizer(recipe(num_steps=10, **{"optim.decay_biases": False}), params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["classifier"]["4"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["classifier"]["4"]["kernel"]).max()) > 0.0


def test_lr_mults_errors_name_the_key(variables):
    _, v = variables
    with pytest.raises(FCNError, match=re.escape("optim.lr_mults: 'head/' matches no parameter")):
        make_optimizer(recipe(**{"optim.lr_mults": (("head/", 10.0),)}), v["params"])
    with pytest.raises(FCNError, match=re.escape("multiplier -1 of 'aux_classifier/' must be > 0")):
        make_optimizer(recipe(**{"optim.lr_mults": (("aux_classifier/", -1.0),)}), v["params"])
    with pytest.raises(FCNError, match=re.escape("give (regex, multiplier) pairs")):
        make_optimizer(recipe(**{"optim.lr_mults": ("aux_classifier",)}), v["params"])


# --- the aux loss --------------------------------------------------------------------------------


def test_step_loss_is_out_plus_half_aux(variables):
    spec, v = variables
    rng = np.random.default_rng(0)
    labels = rng.integers(0, N_CLASS, (2, 32, 40)).astype(np.uint8)
    labels[:, :6] = 255
    b = {"image": rng.integers(0, 256, (2, 32, 40, 3), np.uint8), "label": labels}
    # Both heads in train mode over the whole batch: what the per-example step computes.
    forward = jax.jit(
        lambda v, x: spec.apply(
            v, x, overrides={"dropout_rate": 0.0}, train=True, mutable=["batch_stats"]
        )[0]
    )
    out = forward(v, spec.preprocess(b))
    count = float((labels != 255).sum())
    ce = {k: float(cross_entropy_sum(out[k], labels, N_CLASS)[0]) / count for k in out}
    tx = optax.sgd(0.0)
    steps = make_steps(spec, tx, "mean", 2, dropout_rate=0.0, aux_loss_weight=0.5)
    state = create_train_state(jax.tree.map(jnp.array, v), tx, seed=0)  # a copy: donated
    _, metrics = steps.train_step(state, jax.tree.map(jnp.asarray, b))
    assert float(metrics["loss"]) == pytest.approx(ce["out"] + 0.5 * ce["aux"], rel=1e-5)
    assert abs(ce["aux"] - ce["out"]) > 1e-3 * ce["out"]  # the two heads' losses differ
    assert float(metrics["pixels"]) == count  # the aux head's pixels are not counted twice


# --- data ----------------------------------------------------------------------------------------


def test_random_resize_draws_the_shorter_side_in_range_nearest_labels():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (30, 50)).astype(np.uint8)
    label[0] = 255
    record = {"image": rng.integers(0, 256, (30, 50, 3), np.uint8), "label": label, "id": "a"}
    sides = set()
    for seed in range(40):
        out = random_resize(record, np.random.default_rng(seed), 20, 60)
        h, w = out["label"].shape
        assert out["image"].shape == (h, w, 3) and 20 <= h <= 60 and w == int(h * 50 / 30)
        assert set(np.unique(out["label"])) <= set(np.unique(label))  # nearest: no new values
        sides.add(h)
    assert min(sides) <= 25 and max(sides) >= 55  # both ends of the range are reached
    # The crop after it pads a short side with void (torchvision's pad_if_smaller, fill 255).
    small = augment(record, np.random.default_rng(1), (20, 20), 40, flip=True)
    assert small["label"].shape == (40, 40) and (small["label"][:, 33:] == 255).all()


def test_pipeline_resizes_crops_and_flips_deterministically():
    ds = SyntheticSegmentation("train", num_images=6, min_size=24, max_size=40, n_class=N_CLASS)
    opts = PipelineOptions(batch_size=3, shuffle=True, num_epochs=1, resize_range=(48, 64),
                           crop_size=32, flip=True, seed=3)  # fmt: skip
    a = [b["label"] for b in make_pipeline(ds, opts)]
    b = [b["label"] for b in make_pipeline(ds, opts)]
    assert [x.shape for x in a] == [(3, 32, 32)] * 2
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(FCNError, match=re.escape("data.resize_range=(64, 48)")):
        make_pipeline(ds, PipelineOptions(resize_range=(64, 48)))


def test_resized_evaluation_buckets_hold_two_to_one_images():
    buckets = resized_buckets((32, 64), 64)
    assert buckets[:2] == (32, 64) and buckets[-1] == 128 and all(b % 32 == 0 for b in buckets)


# --- the demo-sized run --------------------------------------------------------------------------


def test_smoke_recipe_learns_and_its_weights_carry_the_eval_resize(tmp_path):
    work = tmp_path / "run"
    r = run_script(
        "train.py",
        "--config",
        f"{RECIPE}:smoke",
        "--workdir",
        work,
        "--config.num_steps=100",
        "--config.eval_every=100",
        "--config.checkpoint_every=100",
        "--config.log_every=20",
        timeout=300,  # ~40 s on an idle 2-core machine; room for a loaded one
    )
    assert r.returncode == 0, r.stderr
    log = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in log if "train/loss" in row]
    final = [row for row in log if "eval/mean_iou" in row][-1]
    # All background scores ~13% mean IU on these shapes; the first logged loss is ~1.3.
    assert final["step"] == 100 and final["eval/mean_iou"] > 0.22, log
    assert min(losses[-2:]) < 0.8 * losses[0], losses
    meta = load_metadata(work)
    assert meta.eval_resize == 64 and meta.spec.aux and meta.spec.arch == "fcn_resnet50"
    summary = json.loads(r.stdout[r.stdout.index("{") :])
    assert summary["compilations"] == 1  # every batch is cropped to 64x64
