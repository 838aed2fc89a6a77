"""Pack what the GPU check needs into one small folder for a machine without registry access.

The lent GPU machines here accept 64 MiB per transfer, so the encoder goes as a bf16 copy
(45 MB instead of 91 MB; training still keeps fp32 master weights) and the Rotten Tomatoes asset
as it is in the cache (manifest and checksums included). SmolLM2 (517 MB) does not fit: the sft
row is skipped there (GPU_CHECK_SFT=0).

    python scripts/gpu_carry.py .gpu        # then: carry .gpu, run scripts/gpu_check.sh with
                                            # BENCH_CACHE_DIR=.gpu/cache --model .gpu/minilm-bf16
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(dest: str) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from bench.data import assets

    target = Path(dest)
    cache = target / "cache" / "assets"
    cache.mkdir(parents=True, exist_ok=True)
    rt = assets.ensure_asset("rotten-tomatoes")
    shutil.copytree(rt, cache / rt.name, dirs_exist_ok=True)
    src = assets.minilm_model_dir()
    model = AutoModel.from_pretrained(src, dtype=torch.bfloat16)
    model.save_pretrained(target / "minilm-bf16")
    AutoTokenizer.from_pretrained(src).save_pretrained(target / "minilm-bf16")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"{target}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".gpu")
