"""The training library: the shared loop (:mod:`~bench.training.loop`), the classification recipe
(:mod:`~bench.training.classify`) and the sft building blocks and recipe (:mod:`~bench.training.sft`,
:mod:`~bench.training.sft_recipe`). Strategies (built-in and third-party) build on these through
:mod:`bench.api`."""
