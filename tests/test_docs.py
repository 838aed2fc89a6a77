"""Documentation is tested (datasette's tests/test_docs.py idea):

* docs/hooks.md is generated from bench/host/hookspecs.py and must match it (``python tests/test_docs.py
  --write`` regenerates it);
* every hook is documented there and in docs/writing-plugins.md (tests/test_hooks.py calls each one);
* docs/writing-plugins.md works as written: its files (code blocks whose first line is a ``# path``
  comment) are written into a folder, "installed" (a .dist-info with the entry points of its
  pyproject.toml, on sys.path), its other python blocks run, and its shell blocks run: ``bench ...``
  through ``bench.cli.main``, ``python -c`` in this process, ``pytest`` through pytester; ``pip`` and
  the publishing commands are the only lines not run (they need the network).
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOKS_MD = ROOT / "docs" / "hooks.md"
GUIDE_MD = ROOT / "docs" / "writing-plugins.md"

pytest_plugins = ["pytester"]


# -------------------------------------------------------------------------------------------------
# docs/hooks.md, generated from bench/host/hookspecs.py.
# -------------------------------------------------------------------------------------------------

HOOKS_INTRO = """\
# Hook reference

<!-- Generated from bench/host/hookspecs.py by `python tests/test_docs.py --write`; do not edit by hand.
     tests/test_docs.py fails when this file and the hookspecs disagree. -->

Every hook finetune-bench calls, in the order of the phases they belong to. Implement a hook with a
function of the same name marked `@hookimpl` (from `bench.api`) in your plugin module; take any subset of its
arguments, by exactly these names (pluggy passes them by name; a misspelt argument or hook name
stops `bench` with a message saying which). How the results of several plugins combine:

* **all collected**: every implementation is called; the host gets the list of their non-None results;
* **first result**: implementations are called in turn until one returns something other than None
  (`firstresult`); `@hookimpl(tryfirst=True)` / `trylast=True` move yours in the order, and
  `@hookimpl(wrapper=True)` wraps the others (`result = yield`);
* **historic**: a plugin registered later is still called with the same arguments.

The host process is the `bench` command (or the pytest plugin); a run process is the child started
for each strategy run (in the host itself with `--no-isolate`). See
[writing-plugins.md](writing-plugins.md) for a whole plugin.
"""


def _banner_groups(source: str) -> list[tuple[int, str]]:
    """(line number, title) of each banner comment (a ``# ----`` line, then ``# Title``)."""
    lines = source.splitlines()
    out = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith("# ---") and lines[i + 1].startswith("# ") and not lines[i + 1].startswith("# ---"):
            out.append((i + 2, lines[i + 1][2:].strip()))
    return out


def _markdown_docstring(doc: str) -> str:
    """reST-ish docstring to markdown: ``x`` -> `x`, :role:`x` -> `x`, :param a: -> a bullet."""
    doc = re.sub(r":(?:class|func|meth|mod|data|attr):`~?([^`]+)`", r"`\1`", doc)
    doc = doc.replace("``", "`")
    out: list[str] = []
    for line in doc.splitlines():
        m = re.match(r"\s*:param (\w+):\s*(.*)", line)
        r = re.match(r"\s*:return:\s*(.*)", line)
        if m:
            out.append(f"* `{m.group(1)}`: {m.group(2)}")
        elif r:
            out.append(f"* returns: {r.group(1)}")
        elif out and out[-1].startswith("* ") and line.startswith("    "):
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out).strip()


def _combining(opts: dict) -> str:
    kinds = []
    if opts.get("firstresult"):
        kinds.append("first result")
    else:
        kinds.append("all collected")
    if opts.get("historic"):
        kinds.append("historic")
    return ", ".join(kinds)


def hook_names() -> list[str]:
    from bench.host import hookspecs

    return [name for name, _ in _hook_functions(hookspecs)]


def _hook_functions(module: object) -> list[tuple[str, object]]:
    source = inspect.getsource(module)
    tree = ast.parse(source)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("bench_")]
    return [(n, getattr(module, n)) for n in names]


def render_hooks_md() -> str:
    from bench.host import hookspecs

    source = inspect.getsource(hookspecs)
    groups = _banner_groups(source)
    parts = [HOOKS_INTRO]
    summary = ["| hook | runs in | combines |", "|---|---|---|"]
    sections: list[str] = []
    current = None
    for name, func in _hook_functions(hookspecs):
        line = inspect.getsourcelines(func)[1]
        group = next((title for start, title in reversed(groups) if start <= line), "Hooks")
        if group != current:
            sections.append(f"## {group.rstrip('.')}\n")
            current = group
        opts = func.bench_spec
        sig = inspect.signature(func)
        params = ", ".join(sig.parameters)
        annotated = f"def {name}{sig}".replace("'", "")
        where = group.split(":", 1)[1].strip().rstrip(".") if ":" in group else ""
        summary.append(f"| [`{name}`](#{name}) | {where} | {_combining(opts)} |")
        sections.append(
            f"### `{name}`\n\n"
            f"*{_combining(opts)}*\n\n"
            f"```python\n{annotated}: ...\n\n@hookimpl\ndef {name}({params}): ...\n```\n\n"
            f"{_markdown_docstring(inspect.getdoc(func) or '')}\n"
        )
    parts.append("\n".join(summary) + "\n")
    parts.extend(sections)
    return "\n".join(parts)


def test_hooks_md_is_generated_from_the_hookspecs():
    assert HOOKS_MD.is_file(), "docs/hooks.md is missing: run python tests/test_docs.py --write"
    assert HOOKS_MD.read_text(encoding="utf-8") == render_hooks_md(), (
        "docs/hooks.md is out of date with bench/host/hookspecs.py: run python tests/test_docs.py --write")


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE_MD.read_text(encoding="utf-8")


@pytest.mark.parametrize("hook", hook_names())
def test_hook_is_documented(hook, guide):
    from bench.host import hookspecs

    assert (inspect.getdoc(getattr(hookspecs, hook)) or "").strip(), f"{hook} has no docstring in bench/host/hookspecs.py"
    assert f"### `{hook}`" in HOOKS_MD.read_text(encoding="utf-8"), f"{hook} has no section in docs/hooks.md"
    assert re.search(rf"`{hook}[`(]", guide), f"{hook} is not in the hook table of docs/writing-plugins.md"


# That every hook is exercised is tested where it is exercised: tests/test_hooks.py calls each hook of
# bench/host/hookspecs.py through a recording plugin and checks the arguments it was called with.


# -------------------------------------------------------------------------------------------------
# docs/writing-plugins.md works as written.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int

    @property
    def path(self) -> str | None:
        """The file a block is, from its first line: ``# src/pkg/mod.py`` or ``# pyproject.toml``."""
        first = self.text.splitlines()[0] if self.text else ""
        m = re.fullmatch(r"#\s*([\w./-]+\.(?:py|toml|md|cfg))", first.strip())
        return m.group(1) if m else None


def code_blocks(markdown: str) -> list[Block]:
    blocks = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, flags=re.S | re.M):
        blocks.append(Block(m.group(1), m.group(2), markdown[: m.start()].count("\n") + 1))
    return blocks


def test_every_code_block_has_a_known_language(guide):
    for block in code_blocks(guide):
        assert block.lang in ("python", "toml", "bash", "text"), (
            f"docs/writing-plugins.md line {block.line}: a code block needs a language the docs test knows "
            f"(python, toml, bash, text), got {block.lang!r}")


def _install(files: dict[str, str], project: Path) -> None:
    """What ``pip install -e .`` leaves behind, without the network: the src folder on sys.path and a
    .dist-info holding the entry points of the project's pyproject.toml."""
    import tomllib

    meta = tomllib.loads(files["pyproject.toml"])["project"]
    src = project / "src"
    info = src / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    lines = []
    for group, entries in meta.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        lines += [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


SKIPPED_COMMANDS = ("pip ", "python -m build", "twine ", "cd ", "mkdir ")


def test_writing_plugins_guide_runs_as_written(guide, tmp_path, monkeypatch, pytester, capsys):
    import tomllib

    from bench.host.cli import main

    blocks = code_blocks(guide)
    project = tmp_path / "bench-bitfit"
    files = {b.path: b.text for b in blocks if b.path}
    assert {"pyproject.toml", "src/bench_bitfit/plugin.py", "tests/test_bitfit.py"} <= set(files)
    for rel, text in files.items():
        target = project / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    for block in blocks:  # every toml block parses, every python block compiles
        if block.lang == "toml":
            tomllib.loads(block.text)
        elif block.lang == "python":
            compile(block.text, f"writing-plugins.md:{block.line}", "exec")
    _install(files, project)
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.chdir(project)
    monkeypatch.setenv("BENCH_CHECK_ISOLATE", "0")
    try:
        for block in blocks:
            if block.lang == "python" and block.path is None:
                exec(compile(block.text, f"writing-plugins.md:{block.line}", "exec"), {"__name__": "guide"})
            elif block.lang == "bash":
                _run_shell(block, main, pytester, project, capsys)
    finally:
        for name in [m for m in sys.modules if m == "bench_bitfit" or m.startswith("bench_bitfit.")]:
            del sys.modules[name]


def _run_shell(block: Block, main, pytester, project: Path, capsys) -> None:
    for raw in block.text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(SKIPPED_COMMANDS):
            continue
        where = f"docs/writing-plugins.md line {block.line}: {line}"
        args = shlex.split(line)
        if args[0] == "bench":
            if args[1] == "run":  # in this process, to keep the docs test fast (isolation is tested elsewhere)
                args += ["--no-isolate", "-p", "no:profiler"]
            code = main(args[1:])
            out = capsys.readouterr()
            assert code == 0, f"{where} exited {code}: {out.err.strip()}"
            sys.stdout.write(out.out)
            if args[1] == "list":
                assert "bitfit" in out.out, f"{where}: the plugin's strategy is not listed"
            if args[1] == "run":
                assert "bitfit: " in out.out, f"{where}: the plugin's terminal summary line is missing"
        elif args[:2] == ["python", "-c"]:
            exec(compile(args[2], where, "exec"), {"__name__": "__main__"})
        elif args[0] == "pytest":  # BENCH_CHECK_ISOLATE=0: isolation is proven by tests/test_testing_kit.py
            result = pytester.runpytest_inprocess(*args[1:], str(project / "tests"), "-p", "no:cacheprovider")
            assert result.ret == 0, f"{where} failed:\n" + "\n".join(result.outlines[-30:])
            result.assert_outcomes(passed=2)
        else:
            raise AssertionError(f"{where}: the docs test does not know how to run this command; handle it in "
                                 "tests/test_docs.py or list it in SKIPPED_COMMANDS with a reason")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        sys.path.insert(0, str(ROOT))
        HOOKS_MD.write_text(render_hooks_md(), encoding="utf-8")
        print(f"wrote {HOOKS_MD}")
    else:
        print(textwrap.dedent("usage: python tests/test_docs.py --write   (regenerates docs/hooks.md)"))
