"""The report to share: ``bench report RUN --html FILE`` writes one self-contained HTML page.

Everything is inside the file: inline CSS, no script, the plots as ``data:`` URIs. It holds the
machine and the provenance of every run, every table the terminal report shows (the built-in
sections and the plugins': top operators, sft generations), the accuracy-against-cost and
throughput-against-memory plots, and links to each run's profiler traces (``file:`` URIs: they open
where the run folders are). Each part is a ``<section>`` with a stable ``id`` so a browser test (and a
reader) can find it.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.results.report import Section
from bench.results.schema import RunResult

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#1d232a;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #d8dee4}
.sub{color:#57606a;margin-top:0}
table{border-collapse:collapse;margin:.3em 0;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #d8dee4;padding:3px 8px;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
td.wrap{white-space:normal;max-width:520px}
.note{color:#57606a;font-size:12px;margin:.2em 0 0}
nav{background:#f3f5f7;padding:.5em 1em;border-radius:6px;font-size:13px}nav a{margin-right:1em}
figure{display:inline-block;margin:0 1.5em 1em 0}figure img{max-width:560px;border:1px solid #d8dee4}
figcaption{font-size:12px;color:#57606a}
code{background:#f3f5f7;padding:0 3px;border-radius:3px}
"""


def slug(title: str) -> str:
    """A section's id: its title in lower case, words joined by hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def render_html(results: Sequence[RunResult], sections: Sequence[Section], machines: Sequence[Mapping[str, Any]],
                sources: Sequence[str], *, created_utc: str = "",
                draw: Mapping[str, Callable[[Sequence[RunResult], Path], Path]] | None = None) -> str:
    """The whole page. ``machines``: the machine record of each results file; ``sources``: the files'
    paths; ``draw``: the plot functions by caption (default: the two built-in plots)."""
    from bench.results.plot import plot, throughput_memory_plot

    draw = draw if draw is not None else {"Accuracy against training cost": plot,
                                          "Throughput against peak memory": throughput_memory_plot}
    tables: list[tuple[str, str, str]] = []  # (id, title, body)
    used = {"machine", "provenance", "plots", "traces"}
    for s in sections:
        ident = slug(s.title)
        while ident in used:
            ident += "-2"
        used.add(ident)
        tables.append((ident, s.title, _table(s.headers, s.rows) + (f'<p class="note">{_e(s.note)}</p>' if s.note
                                                                      else "")))
    # The results first (the first table, then the plots), then the rest, then where they come from.
    parts = [*tables[:1], ("plots", "Plots", _plots(results, draw)), *tables[1:],
             ("traces", "Profiler traces", _traces(results)), ("machine", "Machine", _machine(machines)),
             ("provenance", "Provenance", _provenance(results))]
    stamp = created_utc or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    nav = "".join(f'<a href="#{i}">{_e(t)}</a>' for i, t, _ in parts)
    body = "\n".join(f'<section id="{i}" class="part"><h2>{_e(t)}</h2>\n{b}</section>' for i, t, b in parts)
    names = ", ".join(dict.fromkeys(r.strategy for r in results)) or "no results"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>finetune-bench report: {_e(names)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>finetune-bench report</h1>\n"
            f'<p class="sub">{len(results)} run(s): {_e(names)}; from {_e(", ".join(sources))}; written {_e(stamp)}</p>\n'
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")


def write_html(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# -------------------------------------------------------------------------------------------------
# Parts.
# -------------------------------------------------------------------------------------------------


def _machine(machines: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for i, machine in enumerate(machines):
        title = f"<p><b>results file {i + 1}</b></p>" if len(machines) > 1 else ""
        out.append(title + _table(("field", "value"), _flatten(machine), wrap_last=True))
    return "\n".join(out) or "<p>no machine record</p>"


def _provenance(results: Sequence[RunResult]) -> str:
    """One column per run, one row per field (the config's fields as ``config.<name>``)."""
    if not results:
        return "<p>no runs</p>"
    columns = []
    for r in results:
        p = r.provenance
        fields = {"status": r.status, "seed": p.seed, "device": p.device, "device name": p.device_name,
                  "precision": p.precision, "torch": p.torch, "transformers": p.transformers, "python": p.python,
                  "git commit": p.git_commit, "plugin": f"{p.plugin} ({p.distribution or 'built-in'} "
                                                          f"{p.plugin_version or ''})".strip(),
                  "model sha256": r.model_sha256 or None, "data sha256": r.data_sha256 or None,
                  "run folder": r.run_dir or None}
        fields.update({f"config.{k}": v for k, v in _flatten(dict(p.config))})
        columns.append(fields)
    names = list(dict.fromkeys(k for c in columns for k in c))
    headers = ("field", *(f"{r.label}: {r.strategy}" if r.label else r.strategy for r in results))
    rows = [(name, *(_flat(c.get(name)) for c in columns)) for name in names]
    return _table(headers, rows)


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as ``outer.inner`` rows; lists and deeper values as JSON."""
    rows: list[tuple[str, str]] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value and not prefix:
            rows += _flatten(value, f"{key}.")
        else:
            rows.append((f"{prefix}{key}", _flat(value)))
    return rows


def _plots(results: Sequence[RunResult], draw: Mapping[str, Callable[[Sequence[RunResult], Path], Path]]) -> str:
    out = []
    with tempfile.TemporaryDirectory(prefix="bench-html-") as tmp:
        for i, (caption, fn) in enumerate(draw.items()):
            try:
                png = fn(results, Path(tmp) / f"plot{i}.png").read_bytes()
            except UsageError as exc:
                out.append(f'<p class="note">{_e(caption)}: not drawn ({_e(str(exc))})</p>')
                continue
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
                       f"<figcaption>{_e(caption)}</figcaption></figure>")
    return "\n".join(out)


def _traces(results: Sequence[RunResult]) -> str:
    items = []
    for r in results:
        folder = r.artifacts_dir()
        profile = folder / "profile" if folder is not None else None
        name = f"{r.label}: {r.strategy}" if r.label else r.strategy
        if profile is None or not profile.is_dir():
            items.append(f"<li>{_e(name)}: no profiler traces</li>")
            continue
        files = sorted(p for p in profile.rglob("*") if p.is_file() and p.name.endswith((".json", ".json.gz"))
                       and "trace" in p.name)
        links = "".join(f'<li><a href="{_e(p.resolve().as_uri())}">{_e(p.name)}</a></li>' for p in files)
        items.append(f"<li>{_e(name)}: <a href=\"{_e(profile.resolve().as_uri())}\">{_e(str(profile))}</a>; "
                     f"open with <code>tensorboard --logdir {_e(str(profile))}</code>"
                     + (f"<ul>{links}</ul>" if links else " (no trace files in it)") + "</li>")
    return f"<ul>{''.join(items)}</ul>" if items else "<p>no runs</p>"


def _table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], wrap_last: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            cls = ' class="wrap"' if wrap_last and j == len(row) - 1 else ""
            cells.append(f"<td{cls}>{_e(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _flat(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return "-" if value is None else str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
