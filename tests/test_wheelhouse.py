"""tools/wheelhouse.py offline: platform tags, the report filter, markers, folder, errors.

The real build (pip resolving, downloading and building against the index) runs in every
`make test`: the Python 3.12 leg (tools/test_py312.sh) builds its wheelhouse with this tool and
installs fcn-jax from it with no index. These tests need no network.
"""

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils import REPO

_spec = importlib.util.spec_from_file_location("wheelhouse", REPO / "tools" / "wheelhouse.py")
wheelhouse = importlib.util.module_from_spec(_spec)
sys.modules["wheelhouse"] = wheelhouse  # dataclasses look their module up by name
_spec.loader.exec_module(wheelhouse)

HOST_311 = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.7",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_release": "6.1.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "python_full_version": "3.11.7",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "sys_platform": "linux",
}


def _wheel(name, version, filename=None, requires=(), sha256="ab" * 32):
    """One ``install`` item of a pip report (format version 1), as pip 23-26 write it."""
    filename = filename or f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return {
        "download_info": {
            "url": f"https://files.example/packages/{filename}",
            "archive_info": {"hashes": {"sha256": sha256}, "hash": f"sha256={sha256}"},
        },
        "is_direct": False,
        "is_yanked": False,
        "requested": False,
        "metadata": {"metadata_version": "2.4", "name": name, "version": version,
                     "requires_dist": list(requires)},
    }  # fmt: skip


def _project(requires=("jax>=0.10", "flax>=0.12")):
    return {
        "download_info": {"url": "file:///src/fcn-jax", "dir_info": {}},
        "is_direct": True,
        "is_yanked": False,
        "requested": True,
        "metadata": {"name": "fcn-jax", "version": "0.1.0", "requires_dist": list(requires)},
    }


def _report(*items, environment=HOST_311):
    return {"version": "1", "pip_version": "26.3", "install": list(items),
            "environment": dict(environment)}  # fmt: skip


# ----------------------------------------------------------------------------- platform tags


def test_x86_64_tags_run_from_the_given_glibc_to_manylinux1_with_each_legacy_alias_after_its_twin():
    tags = wheelhouse.platform_tags("manylinux_2_28_x86_64")
    pep600 = [f"manylinux_2_{m}_x86_64" for m in range(28, 4, -1)]
    assert [t for t in tags if t.startswith("manylinux_2_")] == pep600
    assert tags[0] == "manylinux_2_28_x86_64" and tags[-1] == "manylinux1_x86_64"
    for alias, twin in [("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5)]:
        assert tags.index(f"{alias}_x86_64") == tags.index(f"manylinux_2_{twin}_x86_64") + 1
    assert len(tags) == len(pep600) + 3


def test_aarch64_tags_stop_at_manylinux2014_which_is_its_only_legacy_alias():
    tags = wheelhouse.platform_tags("manylinux_2_28_aarch64")
    assert tags == [f"manylinux_2_{m}_aarch64" for m in range(28, 16, -1)] + [
        "manylinux2014_aarch64"
    ]


def test_a_legacy_platform_is_its_pep600_twin():
    assert wheelhouse.platform_tags("manylinux2014_x86_64") == wheelhouse.platform_tags(
        "manylinux_2_17_x86_64"
    )
    assert wheelhouse.platform_tags("manylinux1_x86_64") == [
        "manylinux_2_5_x86_64",
        "manylinux1_x86_64",
    ]


@pytest.mark.parametrize(
    ("platform", "says"),
    [
        ("manylinux_2_28", "not a manylinux platform tag"),
        ("macosx_11_0_arm64", "not a manylinux platform tag"),
        ("linux_x86_64", "not a manylinux platform tag"),
        ("musllinux_1_2_x86_64", "not a manylinux platform tag"),
        ("manylinux_2_28_sparc", "unknown architecture 'sparc'"),
        ("manylinux_2_12_aarch64", "start at glibc 2.17"),
        ("manylinux_2_4_x86_64", "start at glibc 2.5"),
        ("manylinux_3_0_x86_64", "start at glibc 2.5"),
        ("manylinux2010_aarch64", "manylinux2010 has no aarch64 wheels"),
    ],
)
def test_a_bad_platform_is_an_error_naming_the_flag_and_the_form(platform, says):
    with pytest.raises(wheelhouse.WheelhouseError, match="--platform") as err:
        wheelhouse.platform_tags(platform)
    assert says in str(err.value)


# ------------------------------------------------------------------------------ python version


def test_python_version_is_major_minor_at_or_above_the_project_floor():
    assert wheelhouse.parse_python_version("3.12", ">=3.11") == (3, 12)
    assert wheelhouse.parse_python_version("3.11", ">=3.11") == (3, 11)
    with pytest.raises(wheelhouse.WheelhouseError, match=r"needs Python >=3\.11"):
        wheelhouse.parse_python_version("3.10", ">=3.11")
    for bad in ["312", "3", "3.12.1", "2.7", "py3.12", ""]:
        with pytest.raises(wheelhouse.WheelhouseError, match=r"major\.minor"):
            wheelhouse.parse_python_version(bad, ">=3.11")


# ---------------------------------------------------------------------- the cluster's packages


def test_the_report_is_split_into_the_project_the_wheels_and_the_cluster_provided():
    kept = ["flax", "ml_dtypes", "numpy", "opt_einsum", "orbax-checkpoint", "scipy"]
    cluster = [
        "jax",
        "jaxlib",
        "jax-cuda12-plugin",
        "jax_cuda12_pjrt",  # any spelling of a name
        "Jax-ROCm7-Plugin",
        "libtpu",
        "libtpu-nightly",
        "nvidia-cublas-cu12",
        "nvidia_cudnn_cu12",
        "torch",
        "torchvision",
        "triton",
    ]
    report = _report(_project(), *(_wheel(n, "1.0") for n in reversed(kept + cluster)))
    project, keep, left_out = wheelhouse.split_report(report)
    assert (project.name, project.version, project.filename) == ("fcn-jax", "0.1.0", "")
    assert [p.name for p in keep] == kept
    assert sorted(p.name for p in left_out) == sorted(cluster)
    assert keep[0] == wheelhouse.Pin("flax", "1.0", "flax-1.0-py3-none-any.whl", "ab" * 32)
    # Near names are not the cluster's.
    for name in ["jaxtyping", "jax-dataloader", "torchmetrics", "pytorch-triton-xpu", "nvidia"]:
        assert not wheelhouse.is_cluster_provided(name), name


def test_a_report_the_wheelhouse_cannot_hold_is_an_error():
    sdist = _wheel("flax", "1.0", filename="flax-1.0.tar.gz")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"flax 1\.0 .*not a wheel"):
        wheelhouse.split_report(_report(_project(), sdist))
    unhashed = _wheel("flax", "1.0")
    del unhashed["download_info"]["archive_info"]["hashes"]
    with pytest.raises(wheelhouse.WheelhouseError, match="sha256"):
        wheelhouse.split_report(_report(_project(), unhashed))
    with pytest.raises(wheelhouse.WheelhouseError, match="2 local projects"):
        wheelhouse.split_report(_report(_project(), _project()))
    with pytest.raises(wheelhouse.WheelhouseError, match="format version"):
        wheelhouse.split_report({**_report(_project()), "version": "0"})


# --------------------------------------------------------------------------------- markers


def test_target_environment_replaces_what_differs_and_keeps_the_host_patch_when_versions_agree():
    target = wheelhouse.target_environment(HOST_311, (3, 12), "aarch64")
    assert target["python_version"] == "3.12" and target["python_full_version"] == "3.12.0"
    assert target["platform_machine"] == "aarch64" and target["sys_platform"] == "linux"
    same = wheelhouse.target_environment(HOST_311, (3, 11), "x86_64")
    assert same["python_full_version"] == "3.11.7"


def test_markers_that_decide_differently_on_the_target_are_found():
    report = _report(
        _project(),
        _wheel("a", "1", requires=[
            'new-only; python_version >= "3.12"',  # dropped on 3.11, needed on 3.12
            'old-only; python_version < "3.12"',  # kept on 3.11, not needed on 3.12
            'ancient; python_version < "3.9"',  # the same on both
            'plain>=1',
            'tests; python_version < "3.12" and extra == "testing"',  # nobody asks a[testing]
            'arm; platform_machine == "aarch64"',
        ]),
    )  # fmt: skip
    same_arch = wheelhouse.marker_mismatches(
        report, wheelhouse.target_environment(HOST_311, (3, 12), "x86_64")
    )
    assert same_arch == [
        'a: new-only; python_version >= "3.12"',
        'a: old-only; python_version < "3.12"',
    ]
    other_arch = wheelhouse.marker_mismatches(
        report, wheelhouse.target_environment(HOST_311, (3, 11), "aarch64")
    )
    assert other_arch == ['a: arm; platform_machine == "aarch64"']
    # Once a requirement of the closure asks a[testing], its testing-only markers count too.
    report["install"].append(_wheel("b", "1", requires=["a[testing]>=1"]))
    asked = wheelhouse.marker_mismatches(
        report, wheelhouse.target_environment(HOST_311, (3, 12), "x86_64")
    )
    assert 'a: tests; python_version < "3.12" and extra == "testing"' in asked


# ---------------------------------------------------------------------------- output folder


def test_only_a_wheelhouse_folder_is_cleaned(tmp_path):
    assert wheelhouse.stale_wheels(tmp_path / "new") == []
    house = tmp_path / "house"
    house.mkdir()
    (house / "old-1.0-py3-none-any.whl").write_bytes(b"x")
    (house / "MANIFEST.txt").write_text("old\n")
    assert wheelhouse.stale_wheels(house) == [house / "old-1.0-py3-none-any.whl"]

    (house / "notes.md").write_text("mine\n")
    with pytest.raises(wheelhouse.WheelhouseError, match=r"holds notes\.md.*new or empty folder"):
        wheelhouse.stale_wheels(house)
    (house / "notes.md").unlink()
    (house / "sub").mkdir()
    with pytest.raises(wheelhouse.WheelhouseError, match="holds sub"):
        wheelhouse.stale_wheels(house)
    with pytest.raises(wheelhouse.WheelhouseError, match="not a folder"):
        wheelhouse.stale_wheels(house / "MANIFEST.txt")


class FakePip:
    """Stands in for ``subprocess.run`` of pip: answers --version, writes the report it is given,
    "downloads" each wheel of the requirements file, "builds" fcn-jax's wheel; records each call."""

    def __init__(self, wheels):
        self.wheels = wheels  # {filename: content} the index serves
        self.calls = []
        self.downloaded = []

    def __call__(self, cmd, check=False, capture_output=False, text=False):
        self.calls.append(cmd)
        args = cmd[cmd.index("-m") + 2 :]
        if args == ["--version"]:
            return subprocess.CompletedProcess(cmd, 0, "pip 26.3 from /x (python 3.11)\n", "")
        verb = next(a for a in args if not a.startswith("-") and not a.startswith("/"))
        flag = lambda name: next(a.split("=", 1)[1] for a in args if a.startswith(name + "="))  # noqa: E731
        if verb == "install":
            items = [_project()]
            for filename, content in self.wheels.items():
                name, version = filename.split("-")[:2]
                sha = hashlib.sha256(content).hexdigest()
                items.append(_wheel(name, version, filename=filename, sha256=sha))
            Path(flag("--report")).write_text(json.dumps(_report(*items)))
        elif verb == "download":
            for line in Path(flag("--requirement")).read_text().splitlines():
                name, version = line.split()[0].split("==")
                filename = next(f for f in self.wheels if f.startswith(f"{name}-{version}-"))
                dest = Path(flag("--dest"), filename)
                if not dest.exists():  # as pip: "File was already downloaded"
                    dest.write_bytes(self.wheels[filename])
                    self.downloaded.append(filename)
        elif verb == "wheel":
            Path(flag("--wheel-dir"), "fcn_jax-0.1.0-py3-none-any.whl").write_bytes(b"project")
        return subprocess.CompletedProcess(cmd, 0)


def test_build_fills_the_folder_replaces_only_stale_wheels_and_writes_the_manifest(
    tmp_path, monkeypatch, capsys
):
    index = {
        "flax-0.12.8-py3-none-any.whl": b"flax",
        "numpy-2.5.5-cp312-cp312-manylinux_2_27_x86_64.whl": b"numpy",
        "jax-0.10.2-py3-none-any.whl": b"jax",
        "jaxlib-0.10.2-cp312-cp312-manylinux_2_27_x86_64.whl": b"jaxlib",
    }
    pip = FakePip(index)
    monkeypatch.setattr(wheelhouse.subprocess, "run", pip)
    out = tmp_path / "house"
    manifest = wheelhouse.build(out, "3.12", "manylinux_2_28_x86_64", jax_version="0.10.2",
                                interpreter="/opt/py312")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "MANIFEST.txt",
        "fcn_jax-0.1.0-py3-none-any.whl",
        "flax-0.12.8-py3-none-any.whl",
        "numpy-2.5.5-cp312-cp312-manylinux_2_27_x86_64.whl",
    ]
    resolve = next(c for c in pip.calls if "--dry-run" in c)
    assert resolve[resolve.index("--python") + 1] == "/opt/py312" and "jax==0.10.2" in resolve
    assert "--platform=manylinux2014_x86_64" in resolve and "--python-version=3.12" in resolve
    text = manifest.read_text()
    assert "target CPython 3.12 manylinux_2_28_x86_64\njax ==0.10.2\n" in text
    assert "wheel fcn-jax 0.1.0 fcn_jax-0.1.0-py3-none-any.whl\n" in text
    assert "wheel flax 0.12.8 flax-0.12.8-py3-none-any.whl\n" in text
    assert text.endswith("left-out jax 0.10.2\nleft-out jaxlib 0.10.2\n")
    assert "3 wheels" in capsys.readouterr().out

    # A newer flax: its old wheel goes; numpy's (same file, same hash) stays, not fetched again.
    del index["flax-0.12.8-py3-none-any.whl"]
    index["flax-0.12.12-py3-none-any.whl"] = b"flax new"
    pip = FakePip(index)
    monkeypatch.setattr(wheelhouse.subprocess, "run", pip)
    wheelhouse.build(out, "3.12", "manylinux_2_28_x86_64")
    assert sorted(p.name for p in out.glob("*.whl")) == [
        "fcn_jax-0.1.0-py3-none-any.whl",
        "flax-0.12.12-py3-none-any.whl",
        "numpy-2.5.5-cp312-cp312-manylinux_2_27_x86_64.whl",
    ]
    assert pip.downloaded == ["flax-0.12.12-py3-none-any.whl"]
    # A damaged wheel of the right name is replaced.
    (out / "flax-0.12.12-py3-none-any.whl").write_bytes(b"truncated")
    pip = FakePip(index)
    monkeypatch.setattr(wheelhouse.subprocess, "run", pip)
    wheelhouse.build(out, "3.12", "manylinux_2_28_x86_64")
    assert pip.downloaded == ["flax-0.12.12-py3-none-any.whl"]
    assert (out / "flax-0.12.12-py3-none-any.whl").read_bytes() == b"flax new"
    assert "jax newest" in (out / "MANIFEST.txt").read_text()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--platform", "win_amd64"], "--platform 'win_amd64' is not a manylinux platform tag"),
        (["--python-version", "3.10"], "--python-version 3.10: fcn-jax needs Python >=3.11"),
        (["--jax-version", "jax==0.10.2"], "--jax-version 'jax==0.10.2'"),
        (["--out", str(REPO)], f"--out {REPO}: holds"),
    ],
)
def test_the_command_line_prints_one_error_line_and_exits_2_before_pip_runs(
    flags, says, capsys, monkeypatch
):
    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip ran: {args}")

    monkeypatch.setattr(wheelhouse.subprocess, "run", no_pip)
    before = sorted(p.name for p in REPO.iterdir())
    assert wheelhouse.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err
    assert sorted(p.name for p in REPO.iterdir()) == before


def test_the_readme_gives_the_offline_recipe_the_makefile_runs():
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Installation") : readme.index("## Command-line tools")]
    assert "make wheelhouse PY_VERSION=3.12 PLATFORM=manylinux_2_28_x86_64" in install
    assert "pip install --no-index --find-links wheelhouse fcn-jax" in install
    makefile = (REPO / "Makefile").read_text()
    assert "tools/wheelhouse.py --python-version $(PY_VERSION) --platform $(PLATFORM)" in makefile
    assert "PY_VERSION ?= 3.12" in makefile and "PLATFORM ?= manylinux_2_28_x86_64" in makefile
