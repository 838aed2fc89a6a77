"""Results and comparison, the CI side: ``bench compare`` and saved baselines.

:mod:`~bench.compare.metrics` (what is judged and its thresholds), :mod:`~bench.compare.sources`
(what is read), :mod:`~bench.compare.statistics` (the tests), :mod:`~bench.compare.comparison` (the
verdicts), :mod:`~bench.compare.render` (tables), :mod:`~bench.compare.command` (the command) and
:mod:`~bench.compare.baseline` (the ``baseline`` plugin: ``--save-baseline``, ``--compare-to``).
"""
