"""The deployment test's wheel cache (tests/support/nspawn.py) is keyed by what the wheels are built from: a change
to pyproject.toml's tool settings reuses the wheels, a change to a requirement builds them again."""

import pytest

from tests.support.docs import REPO_ROOT
from tests.support.nspawn import wheels_key

pytestmark = pytest.mark.timeout(10)
PYPROJECT = (REPO_ROOT / "pyproject.toml").read_text()


def test_a_tool_setting_keeps_the_key():
    assert "line-length = 120" in PYPROJECT
    assert wheels_key(PYPROJECT.replace("line-length = 120", "line-length = 100")) == wheels_key(PYPROJECT)
    assert wheels_key(PYPROJECT + '\n[tool.other]\nsetting = "x"\n') == wheels_key(PYPROJECT)


def test_a_dependency_or_the_build_backend_changes_the_key():
    for old, new in (('"orjson>=3.9"', '"orjson>=3.10"'), ('requires = ["setuptools>=77"]',
                                                          'requires = ["setuptools>=78"]')):
        assert old in PYPROJECT
        assert wheels_key(PYPROJECT.replace(old, new)) != wheels_key(PYPROJECT)
