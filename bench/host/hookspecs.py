"""Hook specifications: the whole contract between the finetune-bench host and its plugins.

Every hook is prefixed ``bench_``. Plugins implement them with ``@bench.api.hookimpl`` (also
``bench.hookimpl``). A plugin may implement any subset, and may accept any subset of a hook's
arguments (pluggy passes them by name).

The hooks run in two processes: the *host* (the ``bench`` command, the pytest plugin or
``bench.testing.check_strategy``), which discovers plugins, parses options, starts runs and reports;
and each *run* process, a child started per strategy run (unless ``--no-isolate``), which loads the
same plugins again and runs one strategy.

Call order is pluggy's: implementations are called **last registered first** (so a plugin loaded
with ``-p`` runs before the entry-point plugins, and those before the built-in host plugins),
except that ``tryfirst=True`` implementations come before and ``trylast=True`` ones after the rest;
``wrapper=True`` implementations wrap the call (``result = yield``). Every hook below is called
through pluggy, so wrappers work on each of them. The docstring of each hook says where it runs
and how the results of several implementations combine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bench.core.markers import hookspec

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bench.core.config import BenchConfig
    from bench.core.context import RunContext
    from bench.core.strategy import Strategy, StrategyOutput
    from bench.host.options import OptionParser
    from bench.host.plugins import PluginHost
    from bench.measure.meter import Profiler
    from bench.results.report import Section
    from bench.results.schema import RunResult

__all__ = ["hookspec"]

# -------------------------------------------------------------------------------------------------
# Initialisation hooks: host and run processes, once plugins are loaded.
# -------------------------------------------------------------------------------------------------


@hookspec(historic=True)
def bench_addoption(parser: OptionParser, pluginmanager: PluginHost) -> None:
    """Declare command-line and config-file options.

    Runs in the host before the command line is parsed, once per plugin (historic: a plugin
    registered later still gets the call). Every option added here is accepted on the command line
    (``--name``) and in the config file (``[tool.bench]`` key ``name`` with dashes or underscores),
    and its value reaches the run process in ``config.options``. Two plugins declaring the same
    option is an error that names both.

    :param parser: call ``parser.addoption("--name", type=int, default=..., help=...)``.
    :param pluginmanager: the plugin host, to look up other plugins.
    """


@hookspec(historic=True)
def bench_configure(config: BenchConfig) -> None:
    """Perform initial configuration after options are resolved.

    Runs in the host and again in every run process (``config.in_run_process`` tells which), once
    per plugin (historic). Use it to check your options (raise :class:`bench.api.UsageError` naming
    the option) or set up state; ``bench_unconfigure`` is called afterwards in the same process, even
    when the run fails or is interrupted.

    :param config: the resolved, frozen configuration.
    """


@hookspec
def bench_unconfigure(config: BenchConfig) -> None:
    """Release what ``bench_configure`` set up.

    Runs in the host before it exits and in every run process after its strategy finished, always
    (in a ``finally``: after a failure, an error or Ctrl-C too). All implementations are called.
    """


# -------------------------------------------------------------------------------------------------
# Strategy registration hooks: host and run processes.
# -------------------------------------------------------------------------------------------------


@hookspec
def bench_register_strategies() -> Sequence[Strategy] | None:
    """Return the strategies this plugin provides.

    Called when the registry is built (host and run processes), once per plugin that implements it,
    through pluggy (a ``wrapper=True`` implementation wraps each plugin's call and sees its list), so
    that the registry knows which plugin and distribution gave each strategy. It rejects two
    strategies with the same name (naming both plugins) and checks each against the
    :class:`bench.api.Strategy` protocol.

    :return: a list of objects satisfying :class:`bench.api.Strategy`.
    """


# -------------------------------------------------------------------------------------------------
# Run hooks: the run process of one strategy.
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def bench_run_strategy(run: RunContext) -> StrategyOutput | None:
    """Run one strategy and return its output.

    Runs in the run process. Stops at the first non-None result. The built-in ``runner`` plugin
    implements it (``trylast``) by calling ``run.strategy.run(run)``; implement it as a wrapper
    (``@hookimpl(wrapper=True)``, then ``output = yield``) to observe or time the whole run, the way
    pytest's faulthandler wraps test calls. An exception raised here becomes a failed result row.

    :param run: the run context: strategy, its resolved config, device, meter, run folder.
    """


@hookspec(firstresult=True)
def bench_make_profiler(run: RunContext) -> Profiler | None:
    """Return the step profiler for this run, or None for none.

    Runs in the run process before the strategy starts. Stops at the first non-None result. The
    object must satisfy :class:`bench.api.Profiler`: ``start()``, ``step()``, ``stop()`` and an int
    attribute ``window_steps`` (how many training steps, after warm-up, it profiles; those steps are
    excluded from the timed window). The built-in ``profiler`` plugin (``-p no:profiler`` to disable)
    returns a torch.profiler wrapper writing to ``run.profile_dir``.
    """


@hookspec
def bench_run_finished(run: RunContext, result: RunResult) -> None:
    """Observe a finished run (passed or failed) in the run process: write extra artifacts.

    Called once per implementing plugin, through pluggy (wrappers wrap each call); an exception in
    one is reported on stderr with the plugin's name and neither fails the run nor stops the others.
    """


# -------------------------------------------------------------------------------------------------
# Machine information hooks (as pytest-benchmark's pair): host process.
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def bench_generate_machine_info() -> dict[str, Any] | None:
    """Return a dict describing the machine: CPU model and flags, cores, GPU, driver, versions.

    Runs in the host once per invocation. Stops at the first non-None result; the built-in
    ``machine`` plugin (``trylast``) provides the default.
    """


@hookspec
def bench_update_machine_info(config: BenchConfig, machine_info: dict[str, Any]) -> None:
    """Add to or change ``machine_info`` in place (e.g. a cluster's node name). All are called."""


# -------------------------------------------------------------------------------------------------
# Reporting hooks: host process.
# -------------------------------------------------------------------------------------------------


@hookspec
def bench_result_ready(config: BenchConfig, result: RunResult) -> None:
    """Observe one finished result in the host, right after it was saved to the results file.

    All implementations are called (last registered first).
    """


@hookspec
def bench_report_sections(config: BenchConfig | None, results: Sequence[RunResult],
                          raw: bool) -> list[Section] | None:
    """Return report sections (titled tables) for these results.

    Runs in the host for ``bench run`` and ``bench report``. All results are collected; sections are
    shown in pluggy's call order: the built-in ``report`` plugin's standard tables first (it is
    ``tryfirst``), then the other plugins, last registered first. Return None or [] to add nothing.

    :param config: the configuration, or None when re-rendering a results file.
    :param results: results in run order; with several files, labelled by ``result.label``. Each
        result's artifacts are in ``result.artifacts_dir()`` (its run folder), when it has one.
    :param raw: ``bench report --raw``: one row per run even where repeats (``--repeats``) would be
        summarised per strategy.
    """


@hookspec
def bench_terminal_summary(
    config: BenchConfig, results: Sequence[RunResult], write: Callable[[str], None]
) -> None:
    """Add text at the end of ``bench run``'s terminal output. All are called (last registered first).

    :param write: writes one line to the terminal.
    """
