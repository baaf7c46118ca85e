"""The CLIs' flag handling (fcn_jax.cli): typos, config files, variants, --help, the runner."""

import functools
import importlib.util

import ml_collections
import pytest

from fcn_jax.cli import parse_flags, run
from fcn_jax.errors import FCNError
from fcn_jax.eval.run import eval_split
from fcn_jax.paper.tables import load_tables
from tests.utils import REPO, run_script

SYNTHETIC = str(REPO / "configs/synthetic_fcn8s.py")


def fails_cleanly(*args, script="train.py"):
    r = run_script(script, *args, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: "), r.stderr
    return r.stderr


@pytest.mark.parametrize(
    ("override", "first_line", "suggested"),
    [
        # A nested typo names the key and the nearest valid ones, the top-level one included.
        (
            "--config.optim.lerning_rate=0.1",
            "no key 'optim.lerning_rate'",
            "--config.learning_rate",
        ),
        # No stray escapes (\'num_step\') in top-level suggestions.
        ("--config.num_step=3", "no key 'num_step'", "--config.num_steps"),
        ("--config.data.rot=/data", "no key 'data.rot'", "--config.data.root"),
    ],
)
def test_config_key_typo_suggests_nearest_keys_one_per_line(override, first_line, suggested):
    err = fails_cleanly("--config", SYNTHETIC, "--workdir", "unused", override)
    lines = err.strip().splitlines()
    assert first_line in lines[0] and "\\" not in err
    assert lines[1] == "did you mean:" and f"  {suggested}" in lines[2:]
    assert all(len(line) < 120 for line in lines)  # not 45 keys on one line


def test_plain_flag_that_is_a_config_key_suggests_config_form():
    err = fails_cleanly("--config", SYNTHETIC, "--workdir", "unused", "--num_steps=3")
    assert "unknown flag --num_steps" in err and "  --config.num_steps=..." in err
    err = fails_cleanly("--config", SYNTHETIC, "--wrkdir", "unused")
    assert "unknown flag --wrkdir" in err and "  --workdir" in err


def test_missing_config_file_and_bad_variant_are_one_line():
    err = fails_cleanly("--config", "configs/nope.py", "--workdir", "unused")
    assert err.startswith("error: --config: config file configs/nope.py not found")
    assert "voc_fcn8s.py" in err and len(err.strip().splitlines()) == 1
    err = fails_cleanly("--config", SYNTHETIC + ":bogus", "--workdir", "unused")
    assert "unknown config variant 'bogus'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_help_lists_config_first_with_an_example(script):
    r = run_script(script, "--help", cwd=REPO)
    assert r.returncode == 0, r.stderr
    flags = r.stdout[r.stdout.index("flags:") :].splitlines()
    assert flags[1].startswith("  --config:") and "configs/" in flags[2]
    assert "--config.KEY=VALUE" in r.stdout
    own = "--workdir" if script == "train.py" else "--weights"
    assert own in r.stdout and "--logtostderr" not in r.stdout  # absl's own flags: --helpfull


# --- one flag library, one runner (fcn_jax.cli.parse_flags, fcn_jax.cli.run) ---------------------


def load_script(name):
    """A CLI script as a module (its ``main(argv)`` runs in this process)."""
    spec = importlib.util.spec_from_file_location(f"cli_{name}", REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(script, *argv, **kwargs):
    module = load_script(script)
    define = module.define_flags
    if script == "reproduce":  # --table's choices are the data file's tables
        define = functools.partial(define, tables=load_tables())
    return parse_flags(define, list(map(str, argv)), module.__doc__, **kwargs)


def test_both_value_forms_and_every_boolean_form():
    for argv in (["--src", "a.pth", "--out=w"], ["--src=a.pth", "--out", "w"]):
        args = parse("convert_torch_weights", *argv, "--n-class", "3")
        assert (args.src, args.out, args.n_class) == ("a.pth", "w", 3)
    booleans = {
        "--overwrite": True,
        "--nooverwrite": False,
        "--overwrite=true": True,
        "--overwrite=false": False,
    }
    for flag, value in booleans.items():
        assert parse("convert_torch_weights", flag).overwrite is value
    assert parse("convert_torch_weights", "--to-torch").to_torch is True
    assert parse("reproduce", "--no-timing", "--table", "2").no_timing is True


def test_parsing_twice_in_one_process_starts_from_the_defaults():
    # absl's global FLAGS would keep --save-logits from the first parse.
    predict = load_script("predict")
    first = parse_flags(predict.define_flags, ["--save-logits"], predict.__doc__)
    assert first.save_logits is True
    args = parse_flags(predict.define_flags, ["--alpha", "0.25"], predict.__doc__)
    assert args.save_logits is False and args.alpha == 0.25
    assert args.present == frozenset({"alpha"})
    assert args.if_given("alpha") == 0.25 and args.if_given("step") is None


def test_underscore_multi_host_flags_are_aliases():
    for spelling in ("coordinator_address", "coordinator-address"):
        args = parse("train", f"--{spelling}=host0:1234", "--num_processes=2", "--process-id=1")
        assert args.coordinator_address == "host0:1234"
        assert (args.num_processes, args.process_id) == (2, 1)


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("reproduce", ["--table", "7"], "--table: invalid choice '7' (choose from 1, 2, 3,"),
        ("predict", ["--alpha", "1.5"], "--alpha=1.5: 1.5 is not a number in the range [0, 1]"),
        ("predict", ["--weights", "w"], "--input is required: an image file or a folder"),
        ("predict", ["--weights", "w", "x.jpg"], "unexpected arguments ['x.jpg']"),
        ("bench", ["--repeats", "many"], "--repeats=many: invalid literal for int()"),
        ("convert_torch_weights", ["--ovrwrite"], "unknown flag --ovrwrite\ndid you mean:\n"),
    ],
)
def test_bad_flags_are_fcn_errors(script, argv, message):
    required = {"input": "an image file or a folder of images"} if script == "predict" else None
    with pytest.raises(FCNError) as e:
        parse(script, *argv, required=required)
    assert str(e.value).startswith(message), str(e.value)
    assert not str(e.value).startswith("flag ")  # absl's own prefix is dropped


def test_help_is_the_docstring_then_the_flags(capsys):
    with pytest.raises(SystemExit) as e:
        parse("predict", "--weights", "w", "-h")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("Predict class maps") and "\nflags:\n" in out
    assert "  --overlay {side,blend}: " in out and "  --[no]save-logits: " in out


@pytest.mark.parametrize(
    ("returned", "status"), [(None, 0), (0, 0), (1, 1), (FCNError("no such file x"), 2)]
)
def test_run_exits_with_mains_status_and_prints_user_errors(returned, status, capsys):
    def main(argv):
        assert argv is None  # main parses sys.argv itself
        if isinstance(returned, Exception):
            raise returned
        return returned

    with pytest.raises(SystemExit) as e:
        run(main)
    assert e.value.code == status
    err = capsys.readouterr().err
    assert err == ("error: no such file x\n" if status == 2 else "")


def test_reproduce_timing_flags_exclude_each_other(tmp_path):
    reproduce = load_script("reproduce")
    with pytest.raises(FCNError, match="--no-timing and --timing-json exclude each other"):
        reproduce.main(["--table", "1", "--no-timing", "--timing-json", str(tmp_path / "b.json")])


def test_eval_split_is_data_split_only_when_the_command_line_sets_it():
    config = ml_collections.ConfigDict({"data": {"split": "train", "eval_split": "seg11valid"}})
    assert eval_split(config, {}) == "seg11valid"
    assert eval_split(config, {"data.eval_split": "val"}) == "seg11valid"
    assert eval_split(config, {"data.split": "train"}) == "train"
