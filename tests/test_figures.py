"""Published figures cannot go stale: every figure block in README.md and docs/*.md is exactly what
scripts/figures.py renders from its results file in docs/results/ (no timing, no runs)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "figures.py"


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("figures", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_block_matches_its_results_file():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_results_file_names_machine_precision_and_command(figures):
    files = sorted(figures.RESULTS.glob("*.json"))
    assert len(files) >= 12
    for path in files:
        data = json.loads(path.read_text())
        assert data["kind"] in figures.KINDS and data["machine"] and data["precision"] and data["command"], path
        assert data.get("reproduced", True) or data["not_reproduced"], f"{path.name}: say why it is not reproduced"


def test_a_changed_figure_fails_the_check_naming_its_block(figures, tmp_path, monkeypatch):
    page = tmp_path / "figures.md"  # the page that holds the block, copied; every other page as it is
    shutil.copy(ROOT / "docs" / "figures.md", page)
    others = [p for p in figures.pages() if p.name != "figures.md"]
    monkeypatch.setattr(figures, "pages", lambda: [page, *others])
    assert figures.check() == []
    page.write_text(page.read_text().replace("| 1,244.8 | 187.2 |", "| 1,244.9 | 187.2 |"))
    (problem,) = figures.check()
    assert "block 'cpu-speed-classification' differs from docs/results/cpu-speed-classification.json" in problem
    page.write_text(figures.regenerate(page.read_text()))
    assert figures.check() == []


def test_a_block_without_a_results_file_and_a_results_file_without_a_block_are_named(figures, tmp_path,
                                                                                    monkeypatch):
    page = tmp_path / "page.md"
    text = (ROOT / "docs" / "shapes.md").read_text().replace("figures:h200-shapes", "figures:h200-nowhere")
    page.write_text(text)
    others = [p for p in figures.pages() if p.name != "shapes.md"]
    monkeypatch.setattr(figures, "pages", lambda: [page, *others])
    problems = figures.check()
    assert any("block 'h200-nowhere': no results file docs/results/h200-nowhere.json" in p for p in problems)
    assert any("docs/results/h200-shapes.json: no page has a block" in p for p in problems)


def test_ratios_show_their_target_and_whether_it_is_met(figures):
    text = figures.render("h100-speed")
    header, _, *rows = text.split("\n\n")[0].splitlines()
    assert header.split(" | ")[-2:] == ["target", "met |"]
    # the quality rule applies on the GPU too: -0.66 and -0.61 points are more than 0.5 below the baseline
    assert "0.7969 vs 0.8035 (-0.66 pt)" in rows[0] and rows[0].endswith("| no (quality -0.66 pt < -0.5 pt) |")
    assert rows[2].endswith("| no (quality -0.61 pt < -0.5 pt) |") and rows[1].endswith("| yes |")


def test_the_script_uses_the_plugins_targets(figures):
    ratios = pytest.importorskip("bench_baselines.ratios")
    assert figures.DEFAULT_TARGETS == ratios.TARGETS and figures.DEFAULT_MFU_TARGETS == ratios.MFU_TARGETS
    assert figures.DEFAULT_QUALITY_SLACK_PT == ratios.QUALITY_SLACK_PT


def test_gpu_figures_come_from_the_results_files(figures):
    """The H200 row of the 1B shape's sft, recomputed by hand from its results file."""
    data = json.loads((figures.RESULTS / "h200-2026-11-30" / "1b" / "results.json").read_text())
    sft = next(r for r in data["results"] if r["strategy"] == "sft")
    timed = [s for s in sft["steps"] if s["phase"] == "train" and s["kind"] == "timed"]
    seconds = sum(s["seconds"] for s in timed)
    row = next(line for line in figures.render("h200-shapes").splitlines() if "llama-1b` | sft |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{sum(s['samples'] for s in timed) / seconds:,.1f}"
    assert cells[4] == f"{sum(s['input_tokens'] for s in timed) / seconds:,.0f}"
    assert cells[5] == f"{sft['mfu']:.1%}"


def test_report_sections_come_from_the_report_itself_and_a_missing_one_is_named(figures):
    """A report-sections block is `bench report --format markdown`'s own tables for its results file:
    the sft smoke row's exact match, recomputed from the file, appears in its Task metrics."""
    data = {"source": "cpu-presets-avx2/smoke/results.json", "sections": ["Task metrics", "Against the best strategy"]}
    text = figures.render_report_sections(data)
    assert text.startswith("**Task metrics**") and "**Against the best strategy**" in text
    raw = json.loads((figures.RESULTS / data["source"]).read_text())
    sft = next(r for r in raw["results"] if r["strategy"] == "sft")
    row = next(line for line in text.splitlines() if line.startswith("| sft "))
    assert f"{sft['metrics']['exact_match_after']:.4f}" in row
    with pytest.raises(figures.FigureError, match="no section 'Strategies over repeats'"):
        figures.render_report_sections({**data, "sections": ["Strategies over repeats"]})
