"""What the README tells a user to run is installable from the project's own extras."""

import tomllib

from tests.utils import REPO


def test_every_extra_the_readme_names_exists_and_tensorboard_is_one():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    readme = (REPO / "README.md").read_text()
    # The README says `tensorboard --logdir runs`; tensorboardX (a dependency) only writes logs.
    assert "tensorboard --logdir runs" in readme
    assert any(d.split(">")[0].split("=")[0] == "tensorboard" for d in extras["tensorboard"])
    assert "pip install -e '.[tensorboard]'" in readme
    import re

    for group in re.findall(r"pip install -e '\.\[([a-z0-9_,]+)\]'", readme):
        for name in group.split(","):
            assert name in extras, f"README installs the extra {name!r}, pyproject lacks it"
