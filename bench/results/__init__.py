"""Results: the typed result schema (:mod:`~bench.results.schema`), the results file on disk
(:mod:`~bench.results.store`), report tables (:mod:`~bench.results.report`, the built-in ``report``
plugin) and the accuracy-against-cost plot (:mod:`~bench.results.plot`)."""
