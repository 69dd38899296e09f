"""The Windows tests' shared render: the real role renders every desktop file once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from windows.windows_run import ENROL_KEY, HOSTS, ROOT, build_wheelhouse, offline_vars, run


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the windows_desktop role deploys to HOSTS, rendered on the controller by the role's
    own `render` entry point (tests/windows/render.yml): `<dir>/<host>/<file>`."""
    tmp = tmp_path_factory.mktemp("render")
    build_wheelhouse()
    extra = offline_vars(
        windows_desktop_render_dir=str(tmp / "out"), windows_desktop_render_secrets=True
    )
    result = run(ROOT / "tests/windows/render.yml", tmp, extra, "--limit", ",".join(HOSTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert ENROL_KEY not in result.stdout + result.stderr
    return tmp / "out"
