"""convert_torch_weights.py run in this process: its ``main``, and the bad-input check."""

import importlib.util

import pytest

from fcn_jax.cli import run
from tests.utils import REPO


def load_cli():
    """convert_torch_weights.py as a module, to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location("convert_cli", REPO / "convert_torch_weights.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def assert_exits_2(args, expected, workdir, monkeypatch, capsys):
    """``args`` (plus ``--out w``) exit 2 through the CLI's runner, ``error: ...`` holding each
    of ``expected``, without a traceback and without writing ``w``."""
    monkeypatch.chdir(workdir)
    cli = load_cli()
    with pytest.raises(SystemExit) as exit_info:
        run(lambda _: cli.main([*args, "--out", "w"]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert not (workdir / "w").exists() or not any((workdir / "w").iterdir())
