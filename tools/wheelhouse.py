"""Build a wheelhouse: every wheel fcn-jax needs on an offline accelerator host.

Accelerator hosts are often air-gapped, with jax (a CUDA or TPU build), torch and their
accelerator libraries installed by the cluster. This tool, run on a connected machine, fills a
folder with the wheels of fcn-jax and of every dependency beyond those, for the *target* Python
and platform (not this machine's), so that on the host

    pip install --no-index --find-links wheelhouse fcn-jax

installs the project and leaves the cluster's jax and torch alone: pip keeps an installed
package that satisfies the requirements, and the folder has no wheel that could replace them.

Steps, each a ``python -m pip`` call of the interpreter running this file (pip >= 23.0):

1. Resolve the project's full dependency closure for the target: ``pip install --dry-run
   --report`` with ``--python-version``, ``--implementation cp``, ``--only-binary=:all:`` and
   every platform tag the target accepts (``platform_tags``: pip matches manylinux tags exactly,
   so ``manylinux_2_28_x86_64`` alone would miss the many wheels tagged 2_17 or 2014).
2. Leave out what the cluster provides (``CLUSTER_PROVIDED``). jax's own dependencies (numpy,
   scipy, ml_dtypes, opt_einsum) stay: numpy and scipy are the project's own dependencies and
   ml_dtypes is tensorstore's too, all are small next to jaxlib, and pip installs them only where
   the host lacks a version that fits.
3. Download the exact files the resolver chose (``pip download --no-deps --require-hashes``).
4. Build fcn-jax's own wheel (``pip wheel --no-deps``).
5. Write MANIFEST.txt (target, every wheel, what was left out and why) and print the size.

pip evaluates environment markers (``python_version < "3.12"``) with the interpreter it runs on,
not the target (pypa/pip#11010); step 1 therefore checks every marker in the closure against the
target and stops if one would decide differently, naming ``--interpreter`` (pip's ``--python``:
resolve with an interpreter of the target version) as the fix.

Usage (``make wheelhouse`` runs this with its variables PY_VERSION, PLATFORM, JAX_VERSION):

    python tools/wheelhouse.py --python-version 3.12 --platform manylinux_2_28_x86_64 \
        --out wheelhouse [--jax-version 0.10.2] [--interpreter python3.12]

Errors print ``error: ...`` and exit with status 2. Only the standard library is used (and pip,
which this tool drives, for PEP 508 markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent

# Packages an accelerator cluster installs itself, matched (fnmatch) against PEP 503 normalised
# names: jax and jaxlib (their CUDA/ROCm builds are the same names), the CUDA/ROCm PJRT plugins,
# libtpu (TPU), NVIDIA's CUDA libraries, torch, torchvision and triton (torch's GPU compiler).
# The wheelhouse never holds these, so an offline install cannot replace them.
CLUSTER_PROVIDED = (
    "jax",
    "jaxlib",
    "jax-cuda*-plugin",
    "jax-cuda*-pjrt",
    "jax-rocm*-plugin",
    "jax-rocm*-pjrt",
    "libtpu*",
    "nvidia-*",
    "torch",
    "torchvision",
    "triton",
)

MANIFEST = "MANIFEST.txt"
MIN_PIP = (23, 0)  # --dry-run with --report ("version": "1", stable from 23.0) and --python

# manylinux tags: PEP 600 names manylinux_2_<glibc minor>_<arch>; PEP 513/571/599 named the
# glibc 2.5, 2.12 and 2.17 baselines manylinux1, manylinux2010 and manylinux2014.
_PEP600 = re.compile(r"manylinux_(\d+)_(\d+)_([a-z0-9_]+)")
_LEGACY = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}
_LEGACY_RE = re.compile(r"(manylinux1|manylinux2010|manylinux2014)_([a-z0-9_]+)")
# The oldest glibc a manylinux wheel of each architecture can target (as pip's own tag list):
# x86 back to manylinux1 (glibc 2.5), the rest arrived with manylinux2014 (glibc 2.17).
_OLDEST_GLIBC = {"x86_64": 5, "i686": 5, "aarch64": 17, "ppc64le": 17, "s390x": 17, "armv7l": 17}
# Which legacy aliases each architecture has (manylinux1 and 2010 were x86 only).
_LEGACY_ARCHES = {
    "manylinux1": {"x86_64", "i686"},
    "manylinux2010": {"x86_64", "i686"},
    "manylinux2014": set(_OLDEST_GLIBC),
}


class WheelhouseError(Exception):
    """A problem the user can fix (bad flag, unusable folder, failed pip step); no traceback."""


@dataclasses.dataclass(frozen=True)
class Pin:
    """One distribution of the resolved closure.

    Attributes:
        name: the distribution's name as its metadata spells it (``orbax-checkpoint``).
        version: the resolved version.
        filename: the wheel's file name; empty for the project itself (built, not downloaded).
        sha256: the wheel's hash from pip's report; empty for the project.
    """

    name: str
    version: str
    filename: str = ""
    sha256: str = ""


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Jax_CUDA12.Plugin`` -> ``jax-cuda12-plugin``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_cluster_provided(name: str) -> bool:
    """Whether ``name`` matches one of ``CLUSTER_PROVIDED`` (any spelling of the name)."""
    canonical = canonical_name(name)
    return any(fnmatch.fnmatchcase(canonical, pattern) for pattern in CLUSTER_PROVIDED)


def platform_tags(platform: str) -> list[str]:
    """Every platform tag a host of ``platform`` accepts, best first, as ``--platform`` flags want.

    Args:
        platform: a manylinux tag: ``manylinux_2_28_x86_64`` (PEP 600) or a legacy alias
            (``manylinux2014_aarch64``).

    Returns:
        ``manylinux_2_<m>_<arch>`` for every glibc minor m from the given one down to the
        architecture's oldest (2.5 on x86, 2.17 elsewhere), each legacy alias right after its PEP
        600 twin, as pip itself lists them. Pure-Python (``any``) wheels need no tag here.

    Raises:
        WheelhouseError: ``platform`` is not a manylinux tag of a known architecture.
    """
    legacy = _LEGACY_RE.fullmatch(platform)
    pep600 = _PEP600.fullmatch(platform)
    if legacy:
        if legacy.group(2) not in _LEGACY_ARCHES[legacy.group(1)]:
            raise WheelhouseError(
                f"--platform {platform}: {legacy.group(1)} has no {legacy.group(2)} wheels; "
                f"use manylinux_2_<glibc minor>_{legacy.group(2)}"
            )
        major, minor, arch = 2, _LEGACY[legacy.group(1)], legacy.group(2)
    elif pep600:
        major, minor, arch = int(pep600.group(1)), int(pep600.group(2)), pep600.group(3)
    else:
        raise WheelhouseError(
            f"--platform {platform!r} is not a manylinux platform tag: give the host's glibc and "
            "architecture as manylinux_2_<glibc minor>_<arch>, e.g. manylinux_2_28_x86_64 or "
            "manylinux_2_28_aarch64 (`ldd --version` and `uname -m` on the host tell them)"
        )
    if arch not in _OLDEST_GLIBC:
        raise WheelhouseError(
            f"--platform {platform}: unknown architecture {arch!r}; known: "
            + ", ".join(sorted(_OLDEST_GLIBC))
        )
    oldest = _OLDEST_GLIBC[arch]
    if major != 2 or minor < oldest:
        raise WheelhouseError(
            f"--platform {platform}: manylinux wheels for {arch} start at glibc 2.{oldest} "
            f"(manylinux_2_{oldest}_{arch}); give the host's glibc, e.g. manylinux_2_28_{arch}"
        )
    tags = []
    for m in range(minor, oldest - 1, -1):
        tags.append(f"manylinux_2_{m}_{arch}")
        tags += [
            f"{alias}_{arch}"
            for alias, glibc in _LEGACY.items()
            if glibc == m and arch in _LEGACY_ARCHES[alias]
        ]
    return tags


def parse_python_version(text: str, requires_python: str) -> tuple[int, int]:
    """``"3.12"`` -> ``(3, 12)``, checked against the project's ``requires-python``.

    Args:
        text: the target version, major.minor.
        requires_python: pyproject's ``requires-python``; only a ``>=3.N`` floor is checked here
            (the resolver checks the full specifier of every dependency).

    Raises:
        WheelhouseError: not major.minor, not Python 3, or below the project's floor.
    """
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not match or match.group(1) != "3":
        raise WheelhouseError(
            f"--python-version {text!r}: give the target Python as major.minor, e.g. 3.12"
        )
    version = (3, int(match.group(2)))
    floor = re.search(r">=\s*3\.(\d+)", requires_python)
    if floor and version < (3, int(floor.group(1))):
        raise WheelhouseError(
            f"--python-version {text}: fcn-jax needs Python {requires_python} (pyproject.toml's "
            "requires-python); give the host's Python version"
        )
    return version


def split_report(report: dict) -> tuple[Pin, list[Pin], list[Pin]]:
    """Split a ``pip install --report`` into the project, the wheels to fetch and those left out.

    Args:
        report: the parsed JSON (format version 1, pip >= 23.0): ``install`` lists one item per
            distribution, with ``metadata`` (name, version) and ``download_info``: ``dir_info``
            for the local project, ``archive_info`` (with its sha256) for a wheel.

    Returns:
        (project, keep, left_out): the local project; the wheels to download, sorted by name;
        the cluster-provided distributions (``CLUSTER_PROVIDED``), sorted by name.

    Raises:
        WheelhouseError: the report is not version 1, or does not hold exactly one local project,
            or a wheel entry lacks its hash or is not a wheel.
    """
    if report.get("version") != "1":
        raise WheelhouseError(
            f"pip's report has format version {report.get('version')!r}, this tool reads '1'"
        )
    projects, keep, left_out = [], [], []
    for item in report["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        info = item["download_info"]
        if "dir_info" in info:
            projects.append(Pin(name, version))
            continue
        filename = urllib.parse.unquote(info["url"].rsplit("/", 1)[-1])
        archive = info.get("archive_info", {})
        sha256 = archive.get("hashes", {}).get("sha256", "")
        if not filename.endswith(".whl") or not sha256:
            raise WheelhouseError(
                f"pip resolved {name} {version} to {info['url']} (not a wheel with a sha256); "
                "the wheelhouse holds only wheels"
            )
        pin = Pin(name, version, filename, sha256)
        (left_out if is_cluster_provided(name) else keep).append(pin)
    if len(projects) != 1:
        raise WheelhouseError(f"pip's report holds {len(projects)} local projects, expected 1")
    by_name = lambda pin: canonical_name(pin.name)  # noqa: E731
    return projects[0], sorted(keep, key=by_name), sorted(left_out, key=by_name)


def target_environment(host: dict[str, str], version: tuple[int, int], arch: str) -> dict:
    """The PEP 508 marker environment of the target host, from the resolving host's.

    Args:
        host: the ``environment`` of pip's report (where pip ran).
        version: the target Python (major, minor).
        arch: the target architecture (``platform_machine``).

    Returns:
        ``host`` with the Python version, CPython, Linux and ``arch`` put in. The patch level is
        unknown; where the minor versions differ it is taken as .0.
    """
    env = dict(host)
    short = f"{version[0]}.{version[1]}"
    if host.get("python_version") != short:
        env["python_full_version"] = env["implementation_version"] = f"{short}.0"
    env.update(
        python_version=short,
        implementation_name="cpython",
        platform_python_implementation="CPython",
        sys_platform="linux",
        platform_system="Linux",
        os_name="posix",
        platform_machine=arch,
    )
    return env


def marker_mismatches(report: dict, target: dict[str, str]) -> list[str]:
    """The requirements whose marker decides differently on the target than where pip ran.

    pip decides ``dep; python_version < "3.12"`` with its own interpreter's values, whatever
    ``--python-version`` says, so such a requirement may have been wrongly kept or dropped.
    Each requirement is judged for no extra and for every extra that some requirement of the
    closure (or the user) asks of its package.

    Args:
        report: pip's report, as ``split_report`` takes it.
        target: ``target_environment``'s result.

    Returns:
        ``"<package>: <requirement>"`` for each requirement that decides differently; empty when
        the resolution holds for the target.
    """
    from pip._vendor.packaging.requirements import Requirement  # pip is this tool's engine

    host = report["environment"]
    requirements = []
    extras_asked: dict[str, set[str]] = {}
    for item in report["install"]:
        meta = item["metadata"]
        name = canonical_name(meta["name"])
        extras_asked.setdefault(name, set()).update(item.get("requested_extras", []))
        for text in meta.get("requires_dist") or []:
            requirement = Requirement(text)
            requirements.append((meta["name"], name, text, requirement))
            extras_asked.setdefault(canonical_name(requirement.name), set()).update(
                requirement.extras
            )
    mismatches = []
    for owner, owner_key, text, requirement in requirements:
        if requirement.marker is None:
            continue
        for extra in {"", *extras_asked.get(owner_key, ())}:
            on_host = requirement.marker.evaluate({**host, "extra": extra})
            on_target = requirement.marker.evaluate({**target, "extra": extra})
            if on_host != on_target:
                mismatches.append(f"{owner}: {text}")
                break
    return mismatches


def stale_wheels(out: Path) -> list[Path]:
    """The previous wheels in ``out``, after checking that it is a wheelhouse (or new, or empty).

    Args:
        out: the output folder.

    Returns:
        The ``*.whl`` files in ``out`` (the only files this tool ever deletes there).

    Raises:
        WheelhouseError: ``out`` is not a folder, or holds anything but wheels and MANIFEST.txt
            (so that a mistyped ``--out``, the repository root say, is never cleaned).
    """
    if not out.exists():
        return []
    if not out.is_dir():
        raise WheelhouseError(f"--out {out}: exists and is not a folder")
    foreign = sorted(
        entry.name
        for entry in out.iterdir()
        if not (entry.is_file() and (entry.suffix == ".whl" or entry.name == MANIFEST))
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise WheelhouseError(
            f"--out {out}: holds {shown}, which this tool did not write (a wheelhouse holds only "
            f"*.whl and {MANIFEST}); give a new or empty folder"
        )
    return sorted(out.glob("*.whl"))


def _pip(pip: Sequence[str], args: Sequence[str], what: str) -> None:
    """Run ``pip args``; a failure becomes a WheelhouseError naming the step (pip said why)."""
    try:
        subprocess.run([*pip, *args], check=True)
    except subprocess.CalledProcessError as err:
        raise WheelhouseError(
            f"pip failed to {what} (exit {err.returncode}); its message is above"
        ) from None


def _pip_version(python: str) -> tuple[int, ...]:
    """The version of pip installed for ``python``; WheelhouseError if it has none or too old."""
    run = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True)
    match = re.match(r"pip (\d+)\.(\d+)", run.stdout)
    if run.returncode or not match:
        raise WheelhouseError(f"{python} has no pip: {run.stderr.strip()}")
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_PIP:
        raise WheelhouseError(
            f"pip {'.'.join(map(str, version))} is too old (--dry-run --report need pip >= "
            f"{'.'.join(map(str, MIN_PIP))}): {python} -m pip install --upgrade pip"
        )
    return version


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(
    out: Path,
    py_version: str,
    platform: str,
    jax_version: str | None = None,
    interpreter: str | None = None,
) -> Path:
    """Fill ``out`` with fcn-jax's wheels for the target; see the module docstring for the steps.

    Args:
        out: the wheelhouse folder (created; its previous wheels are replaced).
        py_version: the target Python, major.minor.
        platform: the target's manylinux tag (``platform_tags``).
        jax_version: resolve against this jax release (the cluster's) instead of the newest,
            so that no dependency asks for a newer jax than the host has.
        interpreter: a Python of the target version for pip to resolve with (pip's ``--python``),
            needed only where a marker of the closure depends on the version.

    Returns:
        The path of the manifest written.

    Raises:
        WheelhouseError: bad arguments, an unusable ``out``, or a failed pip step.
    """
    pyproject = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
    version = parse_python_version(py_version, pyproject.get("requires-python", ""))
    tags = platform_tags(platform)
    arch = tags[0].split("_", 3)[3]
    if jax_version is not None and not re.fullmatch(
        r"\d+(\.\d+)*([a-z]+\d+)?(\.post\d+)?", jax_version
    ):
        raise WheelhouseError(f"--jax-version {jax_version!r}: give a release, e.g. 0.10.2")
    old = stale_wheels(out)
    _pip_version(sys.executable)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    resolve_pip = pip + (["--python", interpreter] if interpreter else [])
    target = [
        "--only-binary=:all:",
        "--implementation=cp",
        f"--python-version={py_version}",
        *(f"--platform={tag}" for tag in tags),
    ]

    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        report_path = Path(tmp, "report.json")
        print(f"resolving fcn-jax for CPython {py_version}, {platform} ...", flush=True)
        pins = [f"jax=={jax_version}"] if jax_version else []
        _pip(
            resolve_pip,
            ["install", "--quiet", "--dry-run", "--ignore-installed", f"--report={report_path}",
             f"--target={tmp}/target", *target, str(PROJECT_DIR), *pins],
            f"resolve fcn-jax for CPython {py_version} on {platform}"
            + (f" with jax=={jax_version} (one that fcn-jax and its dependencies accept?)"
               if jax_version else ""),
        )  # fmt: skip
        report = json.loads(report_path.read_text())
        mismatches = marker_mismatches(
            report, target_environment(report["environment"], version, arch)
        )
        if mismatches:
            host = report["environment"]
            raise WheelhouseError(
                f"pip resolved with Python {host['python_version']} on {host['platform_machine']}, "
                f"and these requirements decide differently on the target (Python {py_version}, "
                f"{arch}):\n  " + "\n  ".join(mismatches) + "\n"
                f"resolve with a Python {py_version}: --interpreter /path/to/python{py_version} "
                f"(make wheelhouse RESOLVE_PYTHON=/path/to/python{py_version}); a difference in "
                f"the architecture needs a build on an {arch} machine"
            )
        project, keep, left_out = split_report(report)

        # Only the wheels of the previous build are ever deleted; those kept are not fetched again.
        wanted = {pin.filename: pin.sha256 for pin in keep}
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)  # no manifest while the folder is half built
        for path in old:
            if wanted.get(path.name) != _sha256(path):
                path.unlink()

        requirements = Path(tmp, "requirements.txt")
        requirements.write_text(
            "".join(f"{pin.name}=={pin.version} --hash=sha256:{pin.sha256}\n" for pin in keep)
        )
        print(f"downloading {len(keep)} wheels into {out} ...", flush=True)
        _pip(
            pip,
            ["download", "--quiet", "--no-deps", "--require-hashes",
             f"--requirement={requirements}", f"--dest={out}", *target],
            "download the resolved wheels",
        )  # fmt: skip
        print("building fcn-jax's wheel ...", flush=True)
        _pip(
            pip,
            ["wheel", "--quiet", "--no-deps", f"--wheel-dir={out}", str(PROJECT_DIR)],
            "build fcn-jax's wheel",
        )

    wheels = sorted(out.glob("*.whl"))
    project_wheels = [w for w in wheels if w.name not in wanted]
    missing = set(wanted) - {w.name for w in wheels}
    if missing or len(project_wheels) != 1:
        raise WheelhouseError(
            f"{out} does not hold what was resolved: missing {sorted(missing)}, "
            f"unexpected {[w.name for w in project_wheels]}"
        )
    size = sum(w.stat().st_size for w in wheels)
    host = report["environment"]
    pip_version = report.get("pip_version", "?")
    lines = [
        "# fcn-jax wheelhouse, made by tools/wheelhouse.py (make wheelhouse).",
        "# On the host: pip install --no-index --find-links <this folder> fcn-jax",
        f"target CPython {py_version} {platform}",
        f"jax {'==' + jax_version if jax_version else 'newest'}",
        f"resolved-with CPython {host['python_full_version']} {host['platform_machine']}, "
        f"pip {pip_version}",
        f"size {size / 1e6:.1f} MB in {len(wheels)} wheels",
        f"wheel {project.name} {project.version} {project_wheels[0].name}",
        *(f"wheel {pin.name} {pin.version} {pin.filename}" for pin in keep),
        "# left out: the cluster installs these (jax, jaxlib, accelerator plugins, torch):",
        *(f"left-out {pin.name} {pin.version}" for pin in left_out),
    ]
    manifest = out / MANIFEST
    manifest.write_text("\n".join(lines) + "\n")
    print(
        f"wheelhouse {out}: {len(wheels)} wheels, {size / 1e6:.1f} MB; left out (the cluster's): "
        + (", ".join(f"{pin.name} {pin.version}" for pin in left_out) or "nothing")
    )
    print(f"install on the host: pip install --no-index --find-links {out} fcn-jax")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: parse the flags and build; a WheelhouseError is ``error: ...``, exit 2."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See README.md, Installation: offline install on accelerator hosts.",
    )
    parser.add_argument("--python-version", default="3.12", help="target Python, major.minor")
    parser.add_argument(
        "--platform", default="manylinux_2_28_x86_64", help="target manylinux tag (glibc, arch)"
    )
    parser.add_argument("--out", type=Path, default=Path("wheelhouse"), help="wheelhouse folder")
    parser.add_argument(
        "--jax-version", help="the host's jax release, to resolve against it (default: newest)"
    )
    parser.add_argument(
        "--interpreter", help="a Python of the target version for pip to resolve with"
    )
    args = parser.parse_args(argv)
    try:
        build(args.out, args.python_version, args.platform, args.jax_version, args.interpreter)
    except WheelhouseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
