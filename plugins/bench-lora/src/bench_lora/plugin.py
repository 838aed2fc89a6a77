"""The bench-lora plugin: the module the ``finetune_bench`` entry point names.

It only declares hooks; the strategies live in their own modules. peft is imported when a strategy
runs, so ``bench list`` works (and says what to install) where peft is missing.
"""

from __future__ import annotations

from typing import Any

from bench.api import hookimpl

from bench_lora.classification import Lora
from bench_lora.sft import LoraSft


@hookimpl
def bench_addoption(parser: Any) -> None:
    parser.addoption("--lora-save-adapter", type=bool, default=True,
                     help="lora, lora-sft: save the trained adapter (save_pretrained) into the run folder and "
                          "report its file size (true|false)")


@hookimpl
def bench_register_strategies() -> list[Any]:
    return [Lora(), LoraSft()]
