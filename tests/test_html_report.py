"""`bench report RUN --html FILE`: one self-contained page, checked as text and rendered in headless Chromium.

The run: all-layers on the tiny BERT with the profiler on (traces and top operators), plus sft-style
generations added to its result, so every kind of section the terminal report can show is present.
The browser tests skip, saying why, where no Chromium is installed (CI installs it where it can: .ci/run).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.host.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
GENERATIONS = [{"source": "addition", "prompt": "What is 12 + 30?", "reference": "42", "before": "I think 40",
                "after": "42"}]


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


needs_browser = pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed (looked for "
                                   f"{', '.join(BROWSERS)}; Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def report(tiny_bert, sentiment_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "out"
    assert main(["run", "-s", "all-layers", "--model", str(tiny_bert), "--dataset", str(sentiment_csv),
                 "--epochs", "2", "--train-samples", "0", "--batch-size", "8", "--warmup-steps", "2",
                 "--profile-warmup", "1", "--profile-active", "2", "--out", str(out)]) == 0
    results = out / "results.json"
    data = json.loads(results.read_text())
    data["results"][0]["extra"]["generations"] = GENERATIONS  # as sft's result carries them
    results.write_text(json.dumps(data))
    page = out.parent / "report.html"
    assert main(["report", str(out), "--html", str(page)]) == 0
    return page


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section" and a.get("id"):
            self.ids.append(str(a["id"]))
        if a.get("src"):
            self.srcs.append(str(a["src"]))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))


EXPECTED = ("machine", "provenance", "task-metrics", "throughput", "peak-memory-per-phase-mib", "parameters",
            "wall-time-per-phase-s", "speed-techniques", "plots", "traces")


def _parsed(page: Path) -> _Sections:
    parser = _Sections()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_the_page_holds_every_section_and_needs_nothing_outside_it(report):
    parsed = _parsed(report)
    for ident in EXPECTED:
        assert ident in parsed.ids, f"section {ident!r} missing"
    assert any(i.startswith("top-operators-all-layers") for i in parsed.ids)
    assert any(i.startswith("sample-generations-all-layers") for i in parsed.ids)
    assert len(parsed.srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in parsed.srcs)
    assert not {"script", "link", "iframe"} & parsed.tags  # inline CSS, no script, nothing fetched
    traces = [h for h in parsed.hrefs if h.startswith("file:") and "trace" in h]
    assert traces and all(Path(h.removeprefix("file://")).is_file() for h in traces)


def test_every_terminal_table_is_in_the_page(report, capsys):
    text = report.read_text(encoding="utf-8")
    assert main(["report", str(report.parent / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    titles = [line for line, under in zip(lines, lines[1:]) if under and set(under) == {"="}]
    assert len(titles) >= 8
    for title in titles:
        assert f"<h2>{html.escape(title)}</h2>" in text, title
    assert "What is 12 + 30?" in text and "I think 40" in text


def test_escaping_keeps_markup_out_of_cells(tmp_path):
    from bench.results.html import render_html
    from bench.results.report import Section

    page = render_html([], [Section("Odd <b>", ("a",), (("<script>alert(1)</script>",),))], [{"cpu": "x<y"}], ["f"],
                       draw={})
    assert "<script>" not in page and "&lt;script&gt;" in page and "x&lt;y" in page


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


PROBE = """<script>
addEventListener('load', () => {
  const out = document.createElement('pre'); out.id = 'probe';
  const rows = [];
  for (const s of document.querySelectorAll('section')) rows.push('section ' + s.id + ' ' + s.getBoundingClientRect().height);
  for (const i of document.images) rows.push('img ' + i.complete + ' ' + i.naturalWidth + 'x' + i.naturalHeight);
  for (const t of document.querySelectorAll('table')) rows.push('table ' + t.rows.length);
  out.textContent = rows.join('\\n'); document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess[str]:
    browser = _browser()
    assert browser is not None
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", "--virtual-time-budget=5000", *args],
                          capture_output=True, text=True, timeout=timeout)


@needs_browser
def test_chromium_renders_every_section_and_decodes_both_plots(report, tmp_path):
    probed = tmp_path / "probed.html"  # a copy with a probe script: what the browser laid out and decoded
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    done = _chromium("--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"no probe output; chromium said: {done.stderr[-2000:]}"
    lines = match.group(1).splitlines()
    heights = {ln.split()[1]: float(ln.split()[2]) for ln in lines if ln.startswith("section ")}
    for ident in EXPECTED:
        assert heights.get(ident, 0) > 0, f"section {ident!r} not laid out: {heights}"
    images = [ln for ln in lines if ln.startswith("img ")]
    assert len(images) == 2
    for line in images:
        complete, size = line.split()[1:]
        width, height = map(int, size.split("x"))
        assert complete == "true" and width > 300 and height > 200, line  # the PNGs decoded at their size
    assert all(int(ln.split()[1]) >= 2 for ln in lines if ln.startswith("table "))  # a header and a row at least


@needs_browser
def test_chromium_screenshots_the_page(report, tmp_path):
    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", report.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    assert _png_size(shot) == (1280, 2400)
