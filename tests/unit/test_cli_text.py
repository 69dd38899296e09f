"""The command lines a person reads: ``--version`` on every program, help text without reST
markup, log lines that are plain on a terminal and JSON elsewhere, and a progress bar for
``cvmc image sign`` on a terminal only (issue 17, item 6).

Real: each program's own argument parser renders its help, and a real pseudo-terminal
(``os.openpty``) stands where a person's terminal does.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cvmc import __version__
from cvmc.agent.adapters import minisign
from cvmc.agent.entrypoints import cli as agent_cli
from cvmc.agent.entrypoints.progress import Progress
from cvmc.agent.logs import log_event, setup_logging
from cvmc.coordinator.entrypoints import cli as coordinator_cli
from cvmc.coordinator.entrypoints import vm_token

#: reST and Sphinx markup that a terminal would show as is.
MARKUP = re.compile(r"``|:(?:class|func|meth|mod|attr|data|ref):`|\*\*\w")

PARSERS: dict[str, argparse.ArgumentParser] = {
    "cvmc": agent_cli.parser(),
    "cvmc-coordinator": coordinator_cli._parser(),
    "cvmc-vm-token": vm_token.parser(),
}


def _every_parser(
    name: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _every_parser(f"{name} {sub}", child)


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_program_prints_its_version(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        PARSERS[prog].parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"{prog} {__version__}\n"


@pytest.mark.parametrize(
    ("name", "parser"),
    [pair for prog, parser in PARSERS.items() for pair in _every_parser(prog, parser)],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_help_text_is_plain(name: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert not MARKUP.search(text), f"{name} --help shows markup: {MARKUP.search(text)}"
    assert text.startswith("usage: "), name


def _record(fmt: str, stream: io.TextIOBase) -> None:
    setup_logging(fmt=fmt, stream=stream)  # type: ignore[arg-type]
    log_event(logging.getLogger("cvmc.test"), logging.ERROR, "config.invalid", "bad key", key="x")


def test_log_lines_are_json_off_a_terminal_and_text_when_asked() -> None:
    piped = io.StringIO()
    _record("auto", piped)
    line = json.loads(piped.getvalue())
    assert (line["level"], line["event"], line["msg"], line["key"]) == (
        "error",
        "config.invalid",
        "bad key",
        "x",
    )
    text = io.StringIO()
    _record("text", text)
    assert text.getvalue() == "cvmc: error: bad key (key=x)\n"
    with pytest.raises(ValueError, match="--log-format: 'xml'"):
        setup_logging(fmt="xml")


def _terminal_run(*args: str) -> tuple[int, str]:
    """Run ``cvmc`` with standard error on a real pseudo-terminal; (exit code, what it showed)."""
    primary, secondary = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cvmc.agent.entrypoints.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=secondary,
            check=False,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    return done.returncode, shown.decode().replace("\r\n", "\n")


def test_an_error_on_a_terminal_is_one_plain_line(tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "agent.json")
    code, shown = _terminal_run("--config", missing, "config", "check")
    assert code == 2
    assert shown == f"cvmc: error: config: {missing} does not exist; nothing was changed\n"
    # The same error as JSON when asked (a log shipper reading a terminal session).
    code, shown = _terminal_run("--log-format", "json", "--config", missing, "config", "check")
    assert code == 2
    assert json.loads(shown)["event"] == "config.invalid"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_draws_at_most_five_times_a_second_and_ends_its_line() -> None:
    now = [0.0]
    shown = _Terminal()
    bar = Progress("hashing", 4 << 20, shown, clock=lambda: now[0])
    for _ in range(4):
        bar.advance(1 << 19)  # four half-MiB chunks in the same instant: drawn at the first only
    now[0] = 0.5
    bar.advance(2 << 20)
    bar.finish()
    frames = shown.getvalue().split("\r")[1:]
    assert frames == [
        "hashing [###...........................]  12%  0/4 MiB",
        "hashing [##############################] 100%  4/4 MiB",
        "hashing [##############################] 100%  4/4 MiB\n",
    ]
    piped = io.StringIO()
    assert list(Progress("signing", 3, piped).chunks([b"a", b"bc"])) == [b"a", b"bc"]
    assert piped.getvalue() == ""  # not a terminal: nothing drawn


def test_image_sign_shows_its_progress_on_a_terminal_only(tmp_path: os.PathLike[str]) -> None:
    key = minisign.SecretKey.generate()
    key_file = os.path.join(tmp_path, "admin.key")
    with open(key_file, "w", encoding="utf-8") as fh:
        fh.write(key.file_text())
    image = os.path.join(tmp_path, "its-u11-boinc-20120415.qcow2")
    with open(image, "wb") as fh:
        fh.write(os.urandom(6 << 20))
    sign = ("image", "sign", "--key", key_file, "--image", image)
    code, shown = _terminal_run(*sign, "--vm-name", "its-u11-boinc-20120415")
    assert code == 0, shown
    assert "\rhashing [##############################] 100%  6/6 MiB\n" in shown
    assert "\rsigning [##############################] 100%  6/6 MiB\n" in shown
    # Not on a terminal: the result only, no bar.
    piped = subprocess.run(
        [sys.executable, "-m", "cvmc.agent.entrypoints.cli", *sign, "--vm-name", "its-u11-x-1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert piped.returncode == 0, piped.stderr
    assert "\r" not in piped.stderr + piped.stdout
    assert piped.stdout.startswith("signed its-u11-boinc-20120415.qcow2 (6291456 bytes")
