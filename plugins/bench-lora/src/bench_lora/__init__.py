"""bench-lora: LoRA fine-tuning strategies for finetune-bench, on Hugging Face peft.

``lora`` (sequence classification) and ``lora-sft`` (causal LM instruction tuning), registered
through the ``finetune_bench`` entry-point group by :mod:`bench_lora.plugin`.
"""

__version__ = "0.1.0"
