"""The config-driven CLIs' flag handling: typos, config files, variants, --help (fcn_jax.cli)."""

import pytest

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
