"""Measurement: the meter that times phases and steps and reads peak memory
(:mod:`~bench.measure.meter`), counted FLOPs and device peaks (:mod:`~bench.measure.flops`), and the
built-in plugins that profile (``profiler``), describe the machine (``machine``) and write
TensorBoard scalars (``tensorboard``)."""
