"""The documentation's code blocks are checked against the code they describe.

README.md and every page under docs/ (the MkDocs site): each fenced block names its language; every
``bench`` command in a shell block parses with the real command-line parser (every option, choice and
subcommand exists) and names only strategies that are registered; Python blocks compile; TOML and JSON
blocks load. docs/writing-plugins.md is run as written by tests/test_docs.py; the commands here are
parsed, not run (many of them train for minutes).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib

from bench.host.cli import _build_parser, _global_parser
from bench.host.config import plugin_spec
from bench.host.harness import Harness

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"bash", "console", "text", "toml", "python", "yaml", "json", "ini"}
FENCE = re.compile(r"^```(\S*)\s*$")


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line number, language, body) of every fenced block in ``path``."""
    out, lang, start, body = [], None, 0, []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line.strip()) if line.lstrip().startswith("```") else None
        if m is None:
            if lang is not None:
                body.append(line)
            continue
        if lang is None:
            lang, start, body = m.group(1), i, []
        else:
            out.append((start, lang, "\n".join(body)))
            lang = None
    assert lang is None, f"{path.name}: the block opened on line {start} is never closed"
    return out


def bench_commands(body: str, lang: str) -> list[str]:
    """The ``bench`` command lines of a shell block (continuations joined, prompts and comments dropped)."""
    text = body.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if lang == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        line = re.split(r"\s+#\s", line, maxsplit=1)[0]
        for part in re.split(r"\s*(?:&&|\|\||\||;)\s*", line):
            part = re.sub(r"^(?:nice -n \d+ |timeout \d+ )", "", part.strip())
            if part.startswith("bench ") or part.startswith("python -m bench "):
                out.append(part)
    return out


ALL_BLOCKS = [(p, *b) for p in PAGES for b in blocks(p)]
COMMANDS = [(p, line, cmd) for p, line, lang, body in ALL_BLOCKS if lang in ("bash", "console")
            for cmd in bench_commands(body, lang)]


def _id(p: Path, line: int) -> str:
    return f"{p.relative_to(ROOT)}:{line}"


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness(plugin_spec([], None))


def test_the_pages_have_commands_to_check():
    assert len(PAGES) >= 10 and len(COMMANDS) >= 20, (len(PAGES), len(COMMANDS))


@pytest.mark.parametrize(("path", "line", "lang", "body"), ALL_BLOCKS,
                         ids=[_id(p, n) for p, n, _, _ in ALL_BLOCKS])
def test_block_language_and_syntax(path, line, lang, body):
    assert lang in LANGUAGES, f"{_id(path, line)}: a code block needs one of {sorted(LANGUAGES)}, not {lang!r}"
    if lang == "python":
        compile(body, _id(path, line), "exec")
    elif lang == "toml":
        tomllib.loads(body)
    elif lang == "json":
        json.loads(body)


@pytest.mark.parametrize(("path", "line", "command"), COMMANDS, ids=[f"{_id(p, n)}:{c[:60]}" for p, n, c in COMMANDS])
def test_bench_command_parses(path, line, command, harness, capsys):
    words = shlex.split(command)
    words = words[3:] if words[:3] == ["python", "-m", "bench"] else words[1:]
    words = [w for w in words if not w.startswith("$")]  # shell variables stand for paths
    pre, rest = _global_parser(add_help=False).parse_known_args(words)
    try:
        args = _build_parser(harness).parse_args(rest)
    except SystemExit as exc:
        pytest.fail(f"{_id(path, line)}: `{command}` does not parse ({exc.code}): {capsys.readouterr().err.strip()}")
    if pre.plugins_dir or any(not a.startswith("no:") for a in pre.plugin_args) or path.name == "writing-plugins.md":
        return  # strategies from a plugin the page loads or writes (tests/test_docs.py runs that guide)
    known = set(harness.registry.names())
    for name in getattr(args, "strategies", None) or []:
        assert name in known, f"{_id(path, line)}: `{command}` names strategy {name!r}, not one of {sorted(known)}"
