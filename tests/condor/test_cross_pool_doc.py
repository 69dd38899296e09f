"""docs/cross-pool.md's worked example, checked with HTCondor's own parsers.

kind: contract. Every submit description on the page goes through the ``htcondor2`` submit
parser; the Requirements go through ``classad2`` against research VM ads; the grid_resource is
the one role condor_submit renders; the job script is valid sh and really checkpoints.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import classad2
import htcondor2
import pytest
import yaml
from condor.condor_config import load
from condor.playbook import ROOT, Run

from cvmc.gridmodel import classad

DOC = ROOT / "docs" / "cross-pool.md"


def blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def submit_files() -> dict[str, htcondor2.Submit]:
    """The submit descriptions (the blocks that end with `queue`), keyed by their universe."""
    found: dict[str, htcondor2.Submit] = {}
    names = ["preprocess", "search", "flock"]
    for _, text in blocks():
        if text.strip().endswith("queue"):
            found[names[len(found)]] = htcondor2.Submit(text)
    return found


def example_vm_type(name: str) -> dict[str, object]:
    grid = yaml.safe_load((ROOT / "inventories/example/group_vars/all/grid.yml").read_text())
    return next(t for t in grid["grid_vm_types"] if t["name"] == name)


def vm_ad(vm_type: dict[str, object], **extra: object) -> classad2.ClassAd:
    ad = classad2.ClassAd(dict(classad.vm_machine_attrs(vm_type)))
    ad.update({"Disk": 10_000_000, "HasFileTransfer": True, **extra})
    return ad


def job(submit: htcondor2.Submit, **attrs: object) -> classad2.ClassAd:
    ad = classad2.ClassAd({"RequestMemory": 2048, "ImageSize": 1024, "DiskUsage": 1000, **attrs})
    ad["Requirements"] = classad2.ExprTree(submit["requirements"])
    return ad


def test_the_page_has_three_submit_files_and_a_dag() -> None:
    subs = submit_files()
    assert set(subs) == {"preprocess", "search", "flock"}
    dag = next(text for _, text in blocks() if text.startswith("JOB preprocess"))
    assert "PARENT preprocess CHILD search" in dag
    assert "SCRIPT POST preprocess checkpointed.sh $RETURN" in dag


def test_search_stage_self_checkpoints_on_the_right_vm_type() -> None:
    search = submit_files()["search"]
    assert search["universe"] == "vanilla"
    assert search["checkpoint_exit_code"] == "85"
    assert search["transfer_checkpoint_files"] == "ckpt"
    assert search["MY.vm_name"] == '"its-el9-htc-20261101"'
    htc = example_vm_type("its-el9-htc-20261101")
    # The page's Requirements are exactly what grid_vm_requirements renders for the type.
    assert search["requirements"] == classad.vm_requirements(htc)
    boinc = example_vm_type("its-u11-boinc-20120415")
    req = job(search).lookup("Requirements")
    assert req.eval(scope=job(search), target=vm_ad(htc)) is True
    assert req.eval(scope=job(search), target=vm_ad(boinc)) is False


def test_flocking_job_moves_after_its_first_checkpoint() -> None:
    flock = submit_files()["flock"]
    htc = example_vm_type("its-el9-htc-20261101")
    data_slot = classad2.ClassAd({"HasLigoFrames": True, "Arch": "X86_64", "OpSys": "LINUX"})
    # A match needs Requirements to be True; False and UNDEFINED both mean no match.
    for ad, before, after in ((data_slot, True, False), (vm_ad(htc), False, True)):
        fresh = job(flock)
        assert (fresh.lookup("Requirements").eval(scope=fresh, target=ad) is True) is before
        resumed = job(flock, Stage="search")
        assert (resumed.lookup("Requirements").eval(scope=resumed, target=ad) is True) is after


@pytest.mark.slow
def test_grid_resource_is_what_the_submit_role_renders(lab_render: Run) -> None:
    rendered = load(lab_render.config_d("lab-submit"), ["DESKTOP_GRID_CONDOR_C_LIGO"], "SCHEDD")
    preprocess = submit_files()["preprocess"]
    assert preprocess["universe"] == "grid"
    assert preprocess["grid_resource"] == rendered["DESKTOP_GRID_CONDOR_C_LIGO"]


def test_job_script_checkpoints_then_finishes(tmp_path: Path) -> None:
    """search.sh, run for real with stand-ins for the science tools: 85 until done, then 0."""
    script = next(text for lang, text in blocks() if lang == "sh" and "search.sh" in text)
    (tmp_path / "search.sh").write_text(script)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("reduce-frames", "search-segment", "merge-segments"):
        (bin_dir / tool).write_text('#!/bin/sh\necho "$0 $*"\n')
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    codes = []
    for _ in range(70):
        proc = subprocess.run(["/bin/sh", "search.sh"], cwd=tmp_path, env=env, check=False)
        codes.append(proc.returncode)
        if proc.returncode != 85:
            break
    # One checkpoint after pre-processing, one per segment, then success.
    assert codes == [85] * 65 + [0]
    assert (tmp_path / "result.dat").exists()
