"""finetune-bench's built-in strategies, each a plugin registered through the ``finetune_bench``
entry-point group exactly like a third-party one."""
