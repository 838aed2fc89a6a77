"""Hook specifications: the whole contract between the finetune-bench host and its plugins.

Every hook is prefixed ``bench_``. Plugins implement them with ``@bench.hookimpl``. A plugin may
implement any subset, and may accept any subset of a hook's arguments (pluggy passes them by name).

The hooks run in two processes: the *host* (the ``bench`` command or the pytest plugin), which
discovers plugins, parses options, starts runs and reports; and each *run* process, a child started
per strategy (unless ``--no-isolate``), which loads the same plugins again and runs one strategy.
The docstring of each hook says where it runs and how the results of several implementations combine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bench.config import BenchConfig
    from bench.options import OptionParser
    from bench.plugins import PluginHost
    from bench.report import Section
    from bench.results import RunResult
    from bench.run import RunContext
    from bench.strategy import Strategy, StrategyOutput

hookspec = pluggy.HookspecMarker("bench")

# -------------------------------------------------------------------------------------------------
# Initialisation hooks: the host process, once plugins are loaded.
# -------------------------------------------------------------------------------------------------


@hookspec(historic=True)
def bench_addoption(parser: OptionParser, pluginmanager: PluginHost) -> None:
    """Declare command-line and config-file options.

    Runs in the host before the command line is parsed, once per plugin (historic: a plugin
    registered later still gets the call). Every option added here is accepted on the command line
    (``--name``) and in the config file (``[tool.bench]`` key ``name`` with dashes or underscores),
    and its value reaches the run process in ``config.options``.

    :param parser: call ``parser.addoption("--name", type=int, default=..., help=...)``.
    :param pluginmanager: the plugin host, to look up other plugins.
    """


@hookspec(historic=True)
def bench_configure(config: BenchConfig) -> None:
    """Perform initial configuration after options are resolved.

    Runs in the host and again in every run process, once per plugin (historic). Use it to check
    your options (raise :class:`bench.UsageError` naming the option) or set up state.

    :param config: the resolved, frozen configuration.
    """


@hookspec
def bench_unconfigure(config: BenchConfig) -> None:
    """Release what ``bench_configure`` set up. Runs in the host before it exits; all are called."""


# -------------------------------------------------------------------------------------------------
# Strategy registration hooks: host and run processes.
# -------------------------------------------------------------------------------------------------


@hookspec
def bench_register_strategies() -> Sequence[Strategy]:
    """Return the strategies this plugin provides.

    Called once per plugin when the registry is built (host and run processes). All results are
    collected; the registry remembers which plugin and distribution gave each strategy, rejects two
    strategies with the same name (naming both plugins), and checks each against the
    :class:`bench.Strategy` protocol.

    :return: a list of objects satisfying :class:`bench.Strategy`.
    """


# -------------------------------------------------------------------------------------------------
# Run hooks: the run process of one strategy.
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def bench_run_strategy(run: RunContext) -> StrategyOutput | None:
    """Run one strategy and return its output.

    Runs in the run process. Stops at the first non-None result. The built-in ``runner`` plugin
    implements it by calling ``run.strategy.run(run)``; implement it as a wrapper
    (``@hookimpl(wrapper=True)``, then ``result = yield``) to observe or time the whole run, the way
    pytest's faulthandler wraps test calls. An exception raised here becomes a failed result row.

    :param run: the run context: strategy, its resolved config, device, meter, output folder.
    """


@hookspec(firstresult=True)
def bench_make_profiler(run: RunContext) -> Any | None:
    """Return the step profiler for this run, or None for none.

    Runs in the run process before the strategy starts. Stops at the first non-None result. The
    object needs ``start()``, ``step()``, ``stop()`` and an int attribute ``window_steps`` (how many
    training steps, after warm-up, it profiles; those steps are excluded from the timed window). The
    built-in ``profiler`` plugin (``-p no:profiler`` to disable) returns a torch.profiler wrapper.
    """


@hookspec
def bench_run_finished(run: RunContext, result: RunResult) -> None:
    """Observe a finished run (passed or failed) in the run process: write extra artifacts.

    All implementations are called; exceptions are reported but do not fail the run.
    """


# -------------------------------------------------------------------------------------------------
# Machine information hooks (as pytest-benchmark's pair): host process.
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def bench_generate_machine_info() -> dict[str, Any] | None:
    """Return a dict describing the machine: CPU model and flags, cores, GPU, driver, versions.

    Runs in the host once per invocation. Stops at the first non-None result; the built-in
    ``machine`` plugin provides the default.
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

    All implementations are called, in registration order.
    """


@hookspec
def bench_report_sections(config: BenchConfig | None, results: Sequence[RunResult]) -> list[Section] | None:
    """Return report sections (titled tables) for these results.

    Runs in the host for ``bench run`` and ``bench report``. All results are collected and shown in
    plugin registration order (built-in reporters first). Return None or [] to add nothing.

    :param config: the configuration, or None when re-rendering a results file.
    :param results: results in run order; with several files, labelled by ``result.label``.
    """


@hookspec
def bench_terminal_summary(
    config: BenchConfig, results: Sequence[RunResult], write: Callable[[str], None]
) -> None:
    """Add text at the end of ``bench run``'s terminal output. All are called.

    :param write: writes one line to the terminal.
    """
