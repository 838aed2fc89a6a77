"""Models: loading from a hub id or a folder (:mod:`~bench.models.loading`) and choosing what
trains, ``--train-layers`` (:mod:`~bench.models.layers`)."""
