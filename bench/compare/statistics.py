"""The significance level of ``bench compare``'s tests (McNemar on per-example outcomes, Welch's t over
repeats). The time verdicts use 95% intervals (:mod:`bench.compare.paired`); the statistics themselves
live in :mod:`bench.results.stats` and :mod:`bench.compare.paired`, tested on synthetic samples."""

DEFAULT_ALPHA = 0.05
