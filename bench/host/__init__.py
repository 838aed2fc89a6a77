"""The host: hook specifications, plugin discovery and the strategy registry, options and config
resolution, the object that owns setup (:class:`~bench.host.harness.Harness`), run folders, the worker
that runs one strategy, and the ``bench`` command line."""
