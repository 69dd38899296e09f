#!/usr/bin/env python3
"""The inputs of one research VM image build, and their hash (the build cache's key).

Runs on the Ansible controller (role research_image). Read-only. The key covers:

- the base image's id (``podman image inspect``), not its tag;
- the local apt repository's signed index (``InRelease``, which lists every package's hash);
- every file of the roles and plugins that shape the root (``--tree``), by path and content
  (but their documentation, ``*.md``);
- the values the roles read (``--values``: the recipe, the VM type's catalogue entry, the
  HTCondor and research_vm settings, the build's own settings), as canonical JSON.

Prints one JSON object: ``hash`` (the key) and each input's own digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

#: Files that never change what the build makes: caches, and documentation (README.md).
IGNORED_PARTS = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")
IGNORED_SUFFIXES = (".pyc", ".md")


def tree_digest(top: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in top.rglob("*")
        if p.is_file()
        and not any(part in IGNORED_PARTS for part in p.parts)
        and p.suffix not in IGNORED_SUFFIXES
    )
    for path in files:
        digest.update(str(path.relative_to(top)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
    return digest.hexdigest()


def base_image_id(podman: str, image: str) -> str:
    result = subprocess.run(
        [podman, "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        sys.exit(f"image_inputs: base image {image} not found ({result.stderr.strip()})")
    return result.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--podman", default="podman")
    parser.add_argument("--base-image", required=True)
    parser.add_argument("--apt-repo", required=True)
    parser.add_argument("--tree", action="append", default=[])
    parser.add_argument("--values", required=True, help="JSON object")
    args = parser.parse_args()
    inrelease = Path(args.apt_repo) / "InRelease"
    if not inrelease.is_file():
        sys.exit(f"image_inputs: {inrelease} is missing (is the local apt repository built?)")
    values = json.loads(args.values)
    inputs = {
        "base_image_id": base_image_id(args.podman, args.base_image),
        "apt_inrelease_sha256": hashlib.sha256(inrelease.read_bytes()).hexdigest(),
        "trees": {os.path.basename(os.path.normpath(t)): tree_digest(Path(t)) for t in args.tree},
        "values_sha256": hashlib.sha256(
            json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest(),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:20]
    print(json.dumps({"hash": key, **inputs}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
