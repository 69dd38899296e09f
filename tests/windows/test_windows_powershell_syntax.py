"""Contract: every PowerShell text the project sends to a desktop parses with a PowerShell grammar.

kind: contract. The parser is tree-sitter (PyPI ``tree-sitter``) with the third-party grammar
``tree-sitter-powershell`` (Airbus CERT), both pinned in requirements.txt. It is **not**
Microsoft's parser (``System.Management.Automation.Language.Parser``), and no PowerShell runs
here. A clean parse means the grammar finds no syntax error: no unbalanced brace, parenthesis or
bracket, no unterminated string, no stray token. It says nothing
about what a script does: cmdlet, parameter and type names, and all runtime behaviour, stay
unchecked. The grammar is also looser than PowerShell in places: it reads a token it does not
know as a command name, so some invalid text parses without an error. A problem is reported
where the grammar noticed it, which after an unterminated string or a stray token can be a line
or a statement away from the mistake (tree-sitter recovers by guessing).

What is parsed. The scripts are found by walking the files, so a new script is covered without
editing this test:
- every ``*.ps1``/``*.psm1`` template under roles/, playbooks/ and molecule/, as the role's own
  ``render`` entry point renders it for two example desktops (the ``rendered`` fixture in
  tests/windows/conftest.py, shared with test_windows_render.py). A static ``.ps1`` is parsed
  as it is;
- every inline script in the YAML under roles/, playbooks/ and molecule/: ``win_powershell``'s
  ``script``; ``win_shell``'s free-form command, ``cmd`` or ``_raw_params`` (unless its
  ``executable`` is not PowerShell); and the ``-Command``/``-EncodedCommand`` text of
  ``powershell.exe`` or ``pwsh.exe`` when ``win_command`` or a scheduled task's action starts
  them. Otherwise ``win_command`` starts a program without PowerShell, so its command line is
  not PowerShell and is not parsed. (Parsed as PowerShell, ``bcdedit /enum {current}`` would
  hold a script block.) A ``script`` that is a template lookup
  (``{{ lookup('ansible.builtin.template', 'x.ps1.j2') }}``) is that template, parsed as
  rendered.

Jinja in an inline script. Ansible templates every inline script before it sends it. Here each
``{{ ... }}`` becomes a placeholder, the bare word ``JINJA1``, ``JINJA2``, .... That is valid
PowerShell inside quotes, as a command argument and as an assignment's value, which are where
values go. Jinja comments are dropped, as Ansible drops them, and a stray ``{#`` fails as it
would in Ansible. A Jinja statement (``{% ... %}``) is refused: render such a script from a
template. A placeholder cannot show what a real value would do, such as a quote inside a value
that sits between quotes. So the role's scripts take their values through ``win_powershell``'s
``parameters``, and none of them holds Jinja today.

Two additions to the plain grammar check:
- **One exemption, exactly one construct:** a numeric literal whose multiplier suffix is not in
  lower case, such as ``1MB`` in ``preflight.ps1`` (``[int64]($installed / 1MB)``). PowerShell
  reads ``kb mb gb tb pb`` in any case (about_Numeric_Literals; PowerShell is
  case-insensitive). The grammar's number tokens (``decimal_integer_literal`` and
  ``real_literal`` in its grammar.js) spell the suffixes in lower case only, and the pinned
  0.26.4 behaves so. So ``$b / 1MB`` gives an ERROR node, and ``$a = 1MB`` silently becomes a
  command named ``1MB``. At first the grammar's maintainers parsed only lower case on purpose
  ("we choose to parse only lowercase", airbus-cert/tree-sitter-powershell#8, about
  operators). Operators and keywords became case-insensitive later (``-LIKE`` and ``IF`` parse
  in 0.26.4), but the multipliers did not, and we found no issue in its tracker about them.
  ``lowercase_multipliers`` lower-cases exactly these suffixes before the parse, in place
  (same length, so every column stays). ``test_the_multiplier_exemption_is_still_needed`` fails
  once the pinned grammar reads ``1MB``, so the exemption then goes.
- The pipeline chain operators ``&&`` and ``||`` are reported too. The grammar accepts them, but
  they are PowerShell 7 syntax, and the desktops run these scripts in Windows PowerShell 5.1:
  ``win_powershell`` runs in Ansible's own PowerShell process, and the stop task runs
  ``powershell.exe -File``. Windows PowerShell 5.1 refuses them.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PureWindowsPath

import jinja2
import pytest
import tree_sitter
import tree_sitter_powershell
import yaml
from windows.windows_run import HOSTS, ROOT

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
SEARCHED = ("roles", "playbooks", "molecule")
POWERSHELL_FILE = re.compile(r"\.psm?1(\.j2)?$")
RENDERED_ROLE = ("roles", "windows_desktop", "templates")
POWERSHELL_MODULES = {"win_powershell", "ansible.windows.win_powershell"}
SHELL_MODULES = {"win_shell", "ansible.windows.win_shell"}
COMMAND_MODULES = {"win_command", "ansible.windows.win_command"}
TASK_MODULES = {"win_scheduled_task", "community.windows.win_scheduled_task"}
POWERSHELL_EXES = {"powershell", "powershell.exe", "pwsh", "pwsh.exe"}
COMMAND_FLAGS = {"-c", "-command", "/c", "/command"}
ENCODED_FLAGS = {"-e", "-ec", "-enc", "-encodedcommand"}
TEMPLATE_LOOKUP = re.compile(
    r"\{\{\s*lookup\(\s*['\"](?:ansible\.builtin\.)?template['\"]\s*,\s*['\"]([^'\"]+)['\"]\s*\)"
    r"\s*\}\}"
)
# The exemption (module docstring): a decimal or real literal with a multiplier suffix.
MULTIPLIER = re.compile(r"(?<![\w.$])(\d+(?:\.\d+)?)([kmgtp]b)\b", re.IGNORECASE)
PS7_ONLY = {"&&", "||"}
# Ansible's delimiters are Jinja's own; this only lexes inline scripts, it renders no HTML.
JINJA = jinja2.Environment(keep_trailing_newline=True)  # noqa: S701 - lexing only, no HTML


@dataclass(frozen=True)
class Script:
    """A PowerShell text and where it comes from.

    ``line``/``column`` (1-based) place the text's first character in ``path``. With ``exact``,
    the text's lines are the file's lines (a literal block scalar, or a whole file), so a
    problem is reported at its own line and column in the file; otherwise at the scalar's start,
    plus the line and column within the script. ``jinja``: Ansible templates the text before
    sending it (inline scripts). ``template``: the text is that template, rendered (a lookup).
    """

    path: str
    what: str
    text: str
    line: int = 1
    column: int = 1
    exact: bool = True
    jinja: bool = False
    template: str | None = None

    def where(self, row: int, column: int) -> str:
        if self.exact:
            return f"{self.path}:{self.line + row}:{self.column + column} ({self.what})"
        return (
            f"{self.path}:{self.line}:{self.column} ({self.what}), "
            f"line {row + 1}, column {column + 1} of the script"
        )


# Finding the scripts.


def searched_files(root: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Files under roles/, playbooks/ and molecule/ whose name matches (hidden ones skipped:
    molecule's caches)."""
    found = []
    for top in SEARCHED:
        for path in (root / top).rglob("*"):
            parts = path.relative_to(root).parts
            if path.is_file() and pattern.search(path.name) and not any(p[0] == "." for p in parts):
                found.append(path)
    return sorted(found)


def mapping(node: yaml.Node | None) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def scalar(node: yaml.Node | None) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def from_scalar(
    node: yaml.ScalarNode,
    path: str,
    lines: list[str],
    what: str,
    *,
    text: str | None = None,
    template: str | None = None,
) -> Script:
    """The script in a YAML scalar; ``text``: the PowerShell part of it (a command line's
    ``-Command``), placed at the scalar's start."""
    start = node.start_mark
    if node.style == "|" and text is None:
        first = start.line + 1  # 0-based: the line after the `|` indicator
        indent = next((len(t) - len(t.lstrip(" ")) for t in lines[first:] if t.strip()), 0)
        return Script(path, what, str(node.value), first + 1, indent + 1, exact=True, jinja=True)
    return Script(
        path,
        what,
        str(node.value) if text is None else text,
        start.line + 1,
        start.column + 1,
        exact=False,
        jinja=True,
        template=template,
    )


def windows_argv(command: str) -> list[str]:
    """A Windows command line's words, with the quotes around a word removed."""
    words = shlex.split(command, posix=False)
    return [w[1:-1] if len(w) > 1 and w[0] == w[-1] == '"' else w for w in words]


def is_powershell(program: str) -> bool:
    return PureWindowsPath(program).name.lower() in POWERSHELL_EXES


def powershell_command(argv: list[str]) -> str | None:
    """The PowerShell text that ``powershell.exe``/``pwsh.exe`` with these arguments runs;
    None for another program, and for ``-File`` (a file: parsed where it is rendered)."""
    if not argv or not is_powershell(argv[0]):
        return None
    for i, arg in enumerate(argv[1:], start=1):
        flag = arg.lower()
        if flag in COMMAND_FLAGS:
            return " ".join(argv[i + 1 :])
        if flag in ENCODED_FLAGS and i + 1 < len(argv):
            return base64.b64decode(argv[i + 1]).decode("utf-16-le")
    return None


def template_of(path: Path, root: Path, name: str) -> str:
    """Where ``lookup('template', name)`` in the file ``path`` finds its template."""
    parts = path.relative_to(root).parts
    candidates = [path.parent / "templates" / name, path.parent / name]
    if parts[0] == "roles":
        candidates.insert(0, root.joinpath(*parts[:2], "templates", name))
    found = next((c for c in candidates if c.is_file()), candidates[0])
    return found.relative_to(root).as_posix()


def command_node(value: yaml.Node, args: dict[str, yaml.Node]) -> yaml.ScalarNode | None:
    """The command of win_shell/win_command: free-form, ``cmd`` or ``_raw_params``."""
    for node in (value, args.get("cmd"), args.get("_raw_params")):
        if isinstance(node, yaml.ScalarNode) and node.value:
            return node
    return None


def scripts_of_task(
    fields: dict[str, yaml.Node], rel: str, path: Path, root: Path, lines: list[str]
) -> Iterator[Script]:
    name = scalar(fields.get("name")) or "unnamed task"
    for module, value in fields.items():
        args = {**mapping(fields.get("args")), **mapping(value)}
        what = f"{name!r}, {module}"
        if module in POWERSHELL_MODULES:
            node = args.get("script")
            assert isinstance(node, yaml.ScalarNode), f"{rel}: {what} has no script"
            lookup = TEMPLATE_LOOKUP.fullmatch(str(node.value).strip())
            if lookup:
                template = template_of(path, root, lookup.group(1))
                yield from_scalar(node, rel, lines, what, template=template)
            else:
                yield from_scalar(node, rel, lines, what)
        elif module in SHELL_MODULES:
            node = command_node(value, args)
            if node is not None and is_powershell(scalar(args.get("executable")) or "powershell"):
                yield from_scalar(node, rel, lines, what)
        elif module in COMMAND_MODULES:
            node = command_node(value, args)
            argv_node = args.get("argv")
            argv = windows_argv(scalar(node) or "")
            if isinstance(argv_node, yaml.SequenceNode) and argv_node.value:
                argv = [str(w.value) for w in argv_node.value]
                node = argv_node.value[0]
            command = powershell_command(argv)
            if command is not None and isinstance(node, yaml.ScalarNode):
                yield from_scalar(node, rel, lines, what, text=command)
        elif module in TASK_MODULES:
            actions = args.get("actions")
            for action in actions.value if isinstance(actions, yaml.SequenceNode) else []:
                act = mapping(action)
                arguments = act.get("arguments")
                argv = [scalar(act.get("path")) or "", *windows_argv(scalar(arguments) or "")]
                command = powershell_command(argv)
                if command is not None and isinstance(arguments, yaml.ScalarNode):
                    yield from_scalar(arguments, rel, lines, f"{what} action", text=command)


def scripts_in_node(
    node: yaml.Node, rel: str, path: Path, root: Path, lines: list[str]
) -> Iterator[Script]:
    """Every task anywhere in the document (plays, blocks, handlers, nested lists)."""
    if isinstance(node, yaml.MappingNode):
        yield from scripts_of_task(mapping(node), rel, path, root, lines)
        for _, value in node.value:
            yield from scripts_in_node(value, rel, path, root, lines)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from scripts_in_node(item, rel, path, root, lines)


def inline_scripts(root: Path = ROOT) -> list[Script]:
    """The PowerShell in every YAML file under roles/, playbooks/ and molecule/."""
    found: list[Script] = []
    for path in searched_files(root, re.compile(r"\.ya?ml$")):
        text = path.read_text()
        rel = path.relative_to(root).as_posix()
        for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if document is not None:
                found.extend(scripts_in_node(document, rel, path, root, text.splitlines()))
    return found


def template_files(root: Path = ROOT) -> list[Path]:
    """Every PowerShell file (template or static) under roles/, playbooks/ and molecule/."""
    return searched_files(root, POWERSHELL_FILE)


def file_scripts(rendered: Path, root: Path = ROOT) -> list[Script]:
    """Each PowerShell file as a desktop gets it: a template as the role's render entry point
    rendered it for each of HOSTS, a static file as it is."""
    found = []
    for path in template_files(root):
        rel = path.relative_to(root).as_posix()
        if path.suffix != ".j2":
            found.append(Script(rel, "static file", path.read_text()))
            continue
        for host in HOSTS:
            out = rendered / host / path.name.removesuffix(".j2")
            missing = (
                f"{rel} is not rendered by windows_desktop's render entry point "
                "(roles/windows_desktop/tasks/render.yml); add it there"
            )
            assert path.relative_to(root).parts[:3] == RENDERED_ROLE, missing
            assert out.is_file(), missing
            found.append(Script(rel, f"rendered for {host}", out.read_text(), exact=False))
    return found


# Parsing.


def lowercase_multipliers(text: str) -> str:
    """The exemption (module docstring): ``1MB`` -> ``1mb``, in place, nothing else."""
    return MULTIPLIER.sub(lambda m: m.group(1) + m.group(2).lower(), text)


def placeholders(text: str) -> str:
    """An inline script as Ansible would template it, each ``{{ ... }}`` a bare word
    (module docstring). A Jinja statement raises ValueError; bad Jinja, TemplateSyntaxError."""
    out: list[str] = []
    count = 0
    for _, kind, value in JINJA.lex(text):
        if kind == "variable_begin":
            count += 1
            out.append(f"JINJA{count}")
        elif kind == "block_begin":
            raise ValueError("a Jinja statement ({% ... %}): render this script from a template")
        elif kind == "data":
            out.append(value)
    return "".join(out)


def nodes(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from nodes(child)


def problems(script: Script) -> list[str]:
    """Every ERROR and MISSING node of the script's tree, and every PowerShell 7-only operator,
    each with its file, line, column and text."""
    text = script.text
    if script.jinja:
        try:
            text = placeholders(text)
        except (ValueError, jinja2.TemplateSyntaxError) as error:
            return [f"{script.where(0, 0)}: Jinja: {error}"]
        if text != script.text:  # positions are the placeholder text's, not the file's
            script = replace(script, what=script.what + ", Jinja as placeholders", exact=False)
    # The exemption lower-cases ASCII letters only: the bytes keep their offsets, and what is
    # shown is the script's own text.
    source = text.encode()
    lines = source.split(b"\n")
    found = []
    for node in nodes(PARSER.parse(lowercase_multipliers(text).encode()).root_node):
        if node.is_missing:
            kind, shown = "MISSING", node.type
        elif node.is_error:
            kind = "ERROR"
            shown = source[node.start_byte : node.end_byte].decode(errors="replace")
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
        elif node.type in PS7_ONLY and not node.is_named:
            kind, shown = "PowerShell 7 only, Windows PowerShell 5.1 refuses", node.type
        else:
            continue
        row, byte = node.start_point
        line = lines[row] if row < len(lines) else b""
        column = len(line[:byte].decode(errors="replace"))
        context = line.decode(errors="replace").strip()
        found.append(f"{script.where(row, column)}: {kind} {shown!r} in {context!r}")
    return found


def has_errors(text: str) -> bool:
    """The pinned grammar alone, with no exemption."""
    return PARSER.parse(text.encode()).root_node.has_error


# The project's scripts.


def test_every_inline_script_parses() -> None:
    scripts = [s for s in inline_scripts() if s.template is None]
    assert len(scripts) > 0  # the walk found the role's and the live scenario's scripts
    assert {s.path.split("/")[0] for s in scripts} >= {"roles", "molecule"}
    found = [problem for script in scripts for problem in problems(script)]
    assert found == [], "\n".join(found)


def test_every_win_powershell_task_is_found() -> None:
    """The YAML walk misses no task: each ``win_powershell:`` line of a file is one script."""
    module_line = re.compile(r"^\s*(?:- )?(?:ansible\.windows\.)?win_powershell:", re.MULTILINE)
    scripts = inline_scripts()
    for path in searched_files(ROOT, re.compile(r"\.ya?ml$")):
        rel = path.relative_to(ROOT).as_posix()
        expected = len(module_line.findall(path.read_text()))
        found = [s for s in scripts if s.path == rel and "win_powershell" in s.what]
        assert len(found) == expected, rel


def test_each_template_lookup_names_a_parsed_template() -> None:
    lookups = [s for s in inline_scripts() if s.template is not None]
    assert len(lookups) > 0  # preflight.yml sends preflight.ps1.j2 as its script
    files = {p.relative_to(ROOT).as_posix() for p in template_files()}
    for script in lookups:
        assert script.template in files, script.where(0, 0)


@pytest.mark.slow
def test_every_rendered_powershell_file_parses(rendered: Path) -> None:
    scripts = file_scripts(rendered)
    assert len(scripts) >= len(HOSTS) > 0  # at least one template, rendered for every host
    assert len(template_files()) > 0
    found = [problem for script in scripts for problem in problems(script)]
    assert found == [], "\n".join(found)


@pytest.mark.slow
def test_every_rendered_powershell_file_parses_with_windows_line_endings(rendered: Path) -> None:
    """The role writes the stop script with CRLF (``newline_sequence: '\\r\\n'`` in
    tasks/agent.yml), so the rendered files must parse with Windows line endings too."""
    scripts = [
        replace(script, what=script.what + ", CRLF", text=script.text.replace("\n", "\r\n"))
        for script in file_scripts(rendered)
    ]
    assert all("\r\n" in script.text for script in scripts)
    found = [problem for script in scripts for problem in problems(script)]
    assert found == [], "\n".join(found)


# Negative controls: small mistakes in real scripts are caught, where they are.

STOP_TASK = "roles/windows_desktop/tasks/stop.yml"
STOP_MUTATIONS = {
    # name: (old line, new line, what the report must say)
    "stray paren": ("Start-Sleep -Seconds 1\n", "Start-Sleep -Seconds 1)\n", "ERROR ')'"),
    "unterminated string": (
        "-TaskName 'cvmc-stop' -ErrorAction SilentlyContinue\n",
        "-TaskName 'cvmc-stop -ErrorAction SilentlyContinue\n",
        "ERROR",
    ),
    "unclosed brace": (
        "              Start-Sleep -Seconds 1\n          }\n",
        "              Start-Sleep -Seconds 1\n",
        "MISSING '}'",
    ),
    "PowerShell 7 operator": (
        "Start-Sleep -Seconds 1\n",
        "Start-Sleep -Seconds 1 && Get-Date\n",
        "PowerShell 7 only, Windows PowerShell 5.1 refuses '&&'",
    ),
}


def mutated_stop_task(tmp_path: Path, old: str, new: str) -> tuple[list[Script], int, str]:
    """A copy of the real stop task with one mutation: its scripts, and the number and text of
    the mutated line in the copy."""
    text = (ROOT / STOP_TASK).read_text()
    assert text.count(old) == 1, old
    copy = tmp_path / STOP_TASK
    copy.parent.mkdir(parents=True)
    copy.write_text(text.replace(old, new))
    line = text[: text.index(old)].count("\n") + 1
    return inline_scripts(tmp_path), line, copy.read_text().splitlines()[line - 1]


def test_the_real_stop_task_copied_parses(tmp_path: Path) -> None:
    same = "$Ansible.Changed = $true\n"
    scripts, _, _ = mutated_stop_task(tmp_path, same, same)
    assert len(scripts) == 1
    assert problems(scripts[0]) == []


@pytest.mark.parametrize("mutation", sorted(STOP_MUTATIONS))
def test_a_broken_inline_script_is_caught_at_its_line(tmp_path: Path, mutation: str) -> None:
    old, new, expected = STOP_MUTATIONS[mutation]
    scripts, line, text = mutated_stop_task(tmp_path, old, new)
    assert len(scripts) == 1
    found = problems(scripts[0])
    assert any(expected in problem for problem in found), found
    if mutation in ("stray paren", "PowerShell 7 operator"):
        # Reported at the mutated line of the YAML file, at the offending character.
        bad = ")" if mutation == "stray paren" else "&&"
        wanted = f"{STOP_TASK}:{line}:{text.index(bad) + 1} ("
        assert any(problem.startswith(wanted) for problem in found), (wanted, found)
    else:
        # Reported inside the task's script, at or after the mutated line.
        lines = [int(p.split(":")[1]) for p in found if p.startswith(STOP_TASK + ":")]
        assert lines, found
        assert min(lines) >= line, found


PREFLIGHT_MUTATIONS = {
    "stray paren": ("$launch = $null\n", "$launch = $null)\n", "ERROR ')'"),
    "unterminated string": (
        "$store = 'C:\\Users\\cvmc\\AppData\\Local\\cvmc'\n",
        "$store = 'C:\\Users\\cvmc\\AppData\\Local\\cvmc\n",
        "ERROR",
    ),
    "unclosed brace": ("        version = $vbox\n    }\n", "        version = $vbox\n", "ERROR"),
    # On the line the multiplier exemption touches: the exemption hides no other error.
    "unclosed paren by 1MB": (
        "visible_mb = [int64]($cs.TotalPhysicalMemory / 1MB)\n",
        "visible_mb = [int64]($cs.TotalPhysicalMemory / 1MB\n",
        "ERROR '($cs.TotalPhysicalMemory / 1MB",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("mutation", sorted(PREFLIGHT_MUTATIONS))
def test_a_broken_rendered_template_is_caught(rendered: Path, mutation: str) -> None:
    old, new, expected = PREFLIGHT_MUTATIONS[mutation]
    text = (rendered / HOSTS[0] / "preflight.ps1").read_text()
    assert text.count(old) == 1, old
    script = Script("preflight.ps1", "mutated", text.replace(old, new), exact=False)
    assert problems(Script("preflight.ps1", "as rendered", text, exact=False)) == []
    found = problems(script)
    assert found, mutation
    assert any(expected in problem for problem in found), found


# The exemption, the placeholders and the discovery rules, each shown to hold.


def test_the_multiplier_exemption_is_still_needed() -> None:
    """The pinned grammar still refuses ``1MB``; when this fails, drop the exemption."""
    assert has_errors("$mb = [int64]($bytes / 1MB)\n")
    assert not has_errors("$mb = [int64]($bytes / 1mb)\n")
    lowered = PARSER.parse(b"$mb = [int64]($bytes / 1mb)\n").root_node
    assert "decimal_integer_literal" in str(lowered)  # read as a number, as PowerShell does
    assert problems(Script("x.ps1", "test", "$mb = [int64]($bytes / 1MB)\n")) == []


def test_the_exemption_changes_only_multiplier_suffixes() -> None:
    text = "$a = 10MB + 1.5Gb + 2kb; $x1MB = 'x1MB'; 1MBps; $v.7MB\n"
    assert lowercase_multipliers(text) == "$a = 10mb + 1.5gb + 2kb; $x1MB = 'x1MB'; 1MBps; $v.7MB\n"
    assert len(lowercase_multipliers(text)) == len(text)


def test_jinja_in_an_inline_script_becomes_placeholders() -> None:
    text = "$dir = '{{ dir }}'\nGet-Item -LiteralPath {{ dir | win_basename }}{# why #}\n"
    assert placeholders(text) == "$dir = 'JINJA1'\nGet-Item -LiteralPath JINJA2\n"
    assert placeholders("$h = @{ a = 1 }\n") == "$h = @{ a = 1 }\n"
    with pytest.raises(ValueError, match="Jinja statement"):
        placeholders("{% if x %}Get-Date{% endif %}\n")
    broken = problems(Script("x.yml", "test", "Get-Item '{{ path }}')\n", jinja=True))
    # Placed in the placeholder text: `Get-Item 'JINJA1')`, the `)` in column 18.
    assert "Jinja as placeholders), line 1, column 18 of the script: ERROR ')" in broken[0]
    # `{#` opens a Jinja comment for Ansible too: such a script never reaches the desktop.
    script = Script("x.yml", "test", "$h = @{# a comment\n a = 1 }\n", jinja=True)
    assert [p for p in problems(script) if "Jinja" in p], problems(script)


def test_the_walk_finds_powershell_wherever_a_task_holds_it(tmp_path: Path) -> None:
    encoded = base64.b64encode("Get-Date | Out-Null".encode("utf-16-le")).decode()
    tasks = tmp_path / "roles/example/tasks/main.yml"
    tasks.parent.mkdir(parents=True)
    (tmp_path / "roles/example/templates").mkdir()
    (tmp_path / "roles/example/templates/x.ps1.j2").write_text("Get-Date\n")
    tasks.write_text(
        "---\n"
        "- name: Free-form shell\n"
        "  ansible.windows.win_shell: Get-Service -Name '{{ svc }}' | Out-Null\n"
        "- name: Shell through cmd\n"
        "  ansible.windows.win_shell: dir C:\\\n"
        "  args:\n"
        "    executable: cmd\n"
        "- name: A block\n"
        "  block:\n"
        "    - name: Command with PowerShell\n"
        "      ansible.windows.win_command: >-\n"
        '        powershell.exe -NoProfile -Command "Get-Process | Sort-Object"\n'
        "    - name: Command without PowerShell\n"
        "      ansible.windows.win_command:\n"
        "        cmd: bcdedit.exe /enum {current}\n"
        "    - name: Encoded\n"
        "      ansible.windows.win_command:\n"
        f"        argv: [pwsh.exe, -EncodedCommand, {encoded}]\n"
        "- name: A task\n"
        "  community.windows.win_scheduled_task:\n"
        "    name: t\n"
        "    actions:\n"
        "      - path: powershell.exe\n"
        '        arguments: -NoProfile -Command "Stop-Process -Name x)"\n'
        "      - path: powershell.exe\n"
        '        arguments: -File "C:\\x.ps1"\n'
        "- name: A lookup\n"
        "  ansible.windows.win_powershell:\n"
        "    script: \"{{ lookup('ansible.builtin.template', 'x.ps1.j2') }}\"\n"
    )
    found = inline_scripts(tmp_path)
    assert [(s.what.split(",")[0], s.text) for s in found] == [
        ("'Free-form shell'", "Get-Service -Name '{{ svc }}' | Out-Null"),
        ("'Command with PowerShell'", "Get-Process | Sort-Object"),
        ("'Encoded'", "Get-Date | Out-Null"),
        ("'A task'", "Stop-Process -Name x)"),
        ("'A lookup'", "{{ lookup('ansible.builtin.template', 'x.ps1.j2') }}"),
    ]
    assert found[-1].template == "roles/example/templates/x.ps1.j2"
    assert [p.name for p in template_files(tmp_path)] == ["x.ps1.j2"]
    assert [problems(s) for s in found[:3]] == [[], [], []]
    stray = problems(found[3])
    assert len(stray) == 1
    assert stray[0].startswith("roles/example/tasks/main.yml:24:20 ('A task', ")
    assert "line 1, column 21 of the script: ERROR ')'" in stray[0]
