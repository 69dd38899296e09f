"""The knobs that differ between the HTCondor releases the roles support, chosen by version.

kind: contract for the 25.0 side (the htcondor wheel's own parser, 25.0.x, reads both renders).
The 23.9 side (Debian 13's package) is checked by the daemons themselves in molecule `condor`
(condor_config_val on the running pool, and a clean start) and in `make lab`.

The roles read the installed version back (roles/htcondor/tasks/version.yml); here it is given
as an extra var, which wins over that read-back, so both sides render on this machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from condor.condor_config import load
from condor.playbook import Run, fresh_key, run
from condor.test_rendered_config import LEVELS, methods

pytestmark = pytest.mark.slow

SECURITY = "90-desktop-grid-security.conf"


@pytest.fixture(scope="module")
def debian13_render(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("debian13") / "root"
    result = run(
        "render.yml",
        root,
        {
            "htcondor_pool_signing_key": fresh_key(),
            "condor_submit_vm_token_issuer_user": "",
            # What Debian 13 ships (the lab's and molecule's daemons).
            "htcondor_installed_version": "23.9.6",
        },
    )
    assert result.rc == 0, result.output
    return result


def pool_password_free(value: object) -> object:
    """The value without the pool password's principal, which the two metaknobs spell differently
    (condor@password in 25.0's recommended, condor_pool@* in recommended_v9_0) and which no host of
    this grid can use: IDTOKENS and FS are the only methods."""
    if not isinstance(value, str):
        return value
    return " ".join(w for w in value.split() if w not in ("condor@password", "condor_pool@*"))


def use_lines(config_d: Path) -> list[str]:
    text = (config_d / SECURITY).read_text()
    return [line.strip() for line in text.splitlines() if line.strip().lower().startswith("use ")]


def test_security_metaknob_follows_the_installed_version(
    lab_render: Run, debian13_render: Run
) -> None:
    # 25.0 has the version-independent name; 23.9 knows only the 9.0 baseline by its own name.
    assert use_lines(lab_render.config_d("lab-cm")) == ["use security:recommended"]
    assert use_lines(debian13_render.config_d("lab-cm")) == ["use security:recommended_v9_0"]


@pytest.mark.parametrize("host", ["lab-cm", "lab-submit", "condor-test-vm"])
def test_both_renders_require_the_same_security(
    lab_render: Run, debian13_render: Run, host: str
) -> None:
    names = [f"SEC_{level}_{what}" for level in LEVELS for what in ("ENCRYPTION", "INTEGRITY")]
    names += ["SEC_DEFAULT_AUTHENTICATION", "SEC_DEFAULT_AUTHENTICATION_METHODS"]
    names += ["SEC_READ_AUTHENTICATION_METHODS"]
    names += [f"ALLOW_{level}" for level in ("DAEMON", "NEGOTIATOR", "ADMINISTRATOR")]
    new = {k: pool_password_free(v) for k, v in load(lab_render.config_d(host), names).items()}
    old = {k: pool_password_free(v) for k, v in load(debian13_render.config_d(host), names).items()}
    for level in LEVELS:
        assert str(old[f"SEC_{level}_ENCRYPTION"]).upper() == "REQUIRED", level
        assert str(old[f"SEC_{level}_INTEGRITY"]).upper() == "REQUIRED", level
    assert str(old["SEC_DEFAULT_AUTHENTICATION"]).upper() == "REQUIRED"
    assert methods(old["SEC_DEFAULT_AUTHENTICATION_METHODS"]) == {"FS", "IDTOKENS"}
    # Apart from the metaknob's name and its pool-password principal, both get the same security.
    assert old == new
