"""The ``bench`` command line: run, list, report, assets, compare.

Exit codes: 0 all good; 1 some strategy failed (``run``) or a regression (``compare``,
``run --compare-to``); 2 usage or input error (one line naming the culprit); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.config import BenchConfig, PluginSpec, make_config, strategy_config, unknown_override_strategies
from bench.errors import BenchError, UsageError
from bench.options import OptionParser, field_help, field_types, find_config_file, read_config_file
from bench.plugins import PluginHost
from bench.registry import StrategyRegistry

PROG = "bench"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BenchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _global_parser(add_help: bool) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, add_help=add_help, allow_abbrev=False,
                                 description="Benchmark fine-tuning strategies of pretrained transformers.")
    ap.add_argument("-p", dest="plugin_args", action="append", default=[], metavar="NAME",
                    help="load plugin module NAME; -p no:NAME disables plugin NAME (e.g. -p no:profiler)")
    ap.add_argument("--plugins-dir", default=None, metavar="DIR", help="load every *.py file in DIR as a plugin")
    ap.add_argument("--config", default=None, metavar="FILE",
                    help="config file (default: ./bench.toml, else [tool.bench] in ./pyproject.toml)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")
    return ap


def _main(argv: list[str]) -> int:
    # c10's warnings (e.g. the profiler's "memory block allocated before profiling") are noise here;
    # read by torch at import, inherited by run processes. Errors still show.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # Global options (-p, --plugins-dir, --config, -q) may stand anywhere: take them out first.
    pre, rest = _global_parser(add_help=False).parse_known_args(argv)
    from bench import progress

    if pre.quiet:
        progress.set_enabled(False)
        os.environ["BENCH_QUIET"] = "1"
    config_file = Path(pre.config) if pre.config else find_config_file(Path.cwd())
    file_values = read_config_file(config_file) if config_file else {}
    plugin_args = list(file_values.pop("plugins", []) or []) + pre.plugin_args
    plugins_dir = pre.plugins_dir or file_values.pop("plugins_dir", None)
    file_values.pop("plugins_dir", None)
    spec = PluginSpec(
        enable=tuple(a for a in plugin_args if not a.startswith("no:")),
        disable=tuple(a[3:] for a in plugin_args if a.startswith("no:")),
        plugins_dir=str(Path(plugins_dir).resolve()) if plugins_dir else None,
    )
    host = PluginHost().load(spec)
    registry = StrategyRegistry.from_host(host)
    parser = OptionParser()
    host.hook.bench_addoption.call_historic(kwargs={"parser": parser, "pluginmanager": host})
    fields = _strategy_fields(registry, parser)

    ap = _global_parser(add_help=True)
    ap.add_argument("--version", action="version", version=f"finetune-bench {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser("run", help="run strategies and report accuracy, throughput and memory")
    parser.add_to_argparse(run_p.add_argument_group("run options"))
    group = run_p.add_argument_group("strategy options (apply to every selected strategy that has them)")
    for name, (_type, help_text, owners) in fields.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS, metavar="VALUE",
                           help=f"{help_text} [{', '.join(owners)}]".strip())
    list_p = sub.add_parser("list", help="list strategies (or plugins) discovered")
    list_p.add_argument("--plugins", action="store_true", help="list loaded plugins and the hooks they implement")
    rep_p = sub.add_parser("report", help="render results files again (several: side by side)")
    rep_p.add_argument("results", nargs="+", metavar="RESULTS", help="results.json files or run folders")
    rep_p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    rep_p.add_argument("--plot", metavar="FILE", help="draw accuracy against training time (PNG/SVG/PDF)")
    rep_p.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    assets_p = sub.add_parser("assets", help="show or prefetch the embedded default models and data")
    assets_p.add_argument("action", choices=("list", "pull"), help="list: cache state; pull: fetch what is missing")
    assets_p.add_argument("names", nargs="*", help="assets to pull (default: all)")
    from bench import compare

    compare.add_arguments(sub.add_parser("compare", help="compare two runs (results or pytest-benchmark JSON); "
                                                         "exit 1 on a regression"))
    args = ap.parse_args(rest)

    if args.command == "list":
        return cmd_list(host, registry, args.plugins)
    if args.command == "report":
        return cmd_report(host, args.results, args.format, args.plot, args.output)
    if args.command == "assets":
        return cmd_assets(args.action, args.names)
    if args.command == "compare":
        return compare.cmd_compare(args)
    if args.command == "run":
        cli_values = {k: v for k, v in vars(args).items()
                      if k not in ("command", "plugin_args", "plugins_dir", "config", "quiet")}
        config = make_config(parser, cli_values, file_values, strategy_fields={k: v[0] for k, v in fields.items()},
                             plugins=spec, config_file=config_file)
        return cmd_run(host, registry, config)
    ap.print_help()
    return 2


def _strategy_fields(registry: StrategyRegistry, parser: OptionParser) -> dict[str, tuple[Any, str, list[str]]]:
    """Every strategy config field (union over strategies) not shadowed by a declared option."""
    fields: dict[str, tuple[Any, str, list[str]]] = {}
    for entry in registry:
        types = field_types(entry.strategy.config_class)
        helps = field_help(entry.strategy.config_class)
        for name, typ in types.items():
            if parser.get(name) is not None:
                continue
            if name in fields:
                fields[name][2].append(entry.name)
            else:
                fields[name] = (typ, helps.get(name, ""), [entry.name])
    return fields


def _version() -> str:
    from bench import __version__

    return __version__


# -------------------------------------------------------------------------------------------------
# Commands.
# -------------------------------------------------------------------------------------------------


def cmd_list(host: PluginHost, registry: StrategyRegistry, plugins: bool) -> int:
    from tabulate import tabulate

    if plugins:
        rows = [(i.name, i.source, i.distribution or "-", i.version or "-", ", ".join(i.hooks) or "-")
                for i in host.plugin_infos()]
        print(tabulate(rows, headers=["plugin", "source", "distribution", "version", "hooks"], tablefmt="simple"))
        return 0
    rows = [(e.name, e.strategy.task, e.plugin, f"{e.distribution or '-'} {e.version or ''}".strip(),
             e.strategy.description) for e in registry]
    print(tabulate(rows, headers=["strategy", "task", "plugin", "distribution", "description"], tablefmt="simple"))
    return 0


def cmd_run(host: PluginHost, registry: StrategyRegistry, config: BenchConfig) -> int:
    from bench.report import render
    from bench.runner import Session

    names = list(config.strategies) or registry.default_selection()
    if not names:
        raise UsageError("no strategy selected and no built-in strategy found; `bench list` shows what is installed")
    for name in names:
        registry.get(name)  # unknown names fail here, with a suggestion
    unknown_override_strategies(config, registry.names())
    resolved = {name: strategy_config(registry.get(name).strategy, config) for name in names}
    host.hook.bench_configure.call_historic(kwargs={"config": config})
    machine = host.hook.bench_generate_machine_info() or {}
    host.hook.bench_update_machine_info(config=config, machine_info=machine)

    out = _Printer()
    out.line(f"finetune-bench {_version()}: device {config.device}, precision {config.precision}, seed "
             f"{config.seed}, preset {config.preset}, {'isolated processes' if config.isolate else 'in-process'}")
    out.line(f"results: {config.out_dir / 'results.json'}")
    for name, cfg in resolved.items():
        out.line(f"  {name}: {_short_config(cfg)}")
    session = Session(config, host, machine)
    try:
        session.run(names, on_start=lambda n: out.status(f"running {n} ..."))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {sum(r.passed for r in session.results)} finished result(s) kept in "
              f"{session.path}", file=sys.stderr)
        return 130
    results = session.results
    sections = [s for group in host.hook.bench_report_sections(config=config, results=results) or [] for s in group]
    print()
    print(render(sections, "table", results))
    host.hook.bench_terminal_summary(config=config, results=results, write=print)
    failed = [r.strategy for r in results if not r.passed]
    print(f"results written to {session.path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    host.hook.bench_unconfigure(config=config)
    usage = [r for r in results if r.error is not None and r.error.usage]
    for r in usage:  # bad input, not a broken strategy: one line each, exit 2
        print(f"{PROG}: error: {r.strategy}: {r.error.message}", file=sys.stderr)
    return 2 if usage else 1 if failed else 0


def cmd_report(host: PluginHost, paths: Sequence[str], fmt: str, plot_path: str | None,
               output: str | None) -> int:
    import dataclasses

    from bench.report import plot, render
    from bench.results import load_results

    results = []
    files = [load_results(p) for p in paths]
    labels = _labels(paths) if len(paths) > 1 else [""] * len(paths)
    for label, loaded in zip(labels, files):
        results.extend(dataclasses.replace(r, label=label) for r in loaded.results)
    sections = [s for group in host.hook.bench_report_sections(config=None, results=results) or [] for s in group]
    text = render(sections, fmt, results)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"report written to {output}", file=sys.stderr)
    else:
        print(text, end="")
    if plot_path:
        print(f"plot written to {plot(results, Path(plot_path))}", file=sys.stderr)
    return 0


def _labels(paths: Sequence[str]) -> list[str]:
    """Short distinct labels for several results files: their run folder names."""
    labels = []
    for p in paths:
        path = Path(p)
        folder = path if path.is_dir() else path.parent
        labels.append(folder.name or str(path))
    if len(set(labels)) < len(labels):
        labels = [str(p) for p in paths]
    return labels


def cmd_assets(action: str, names: Sequence[str]) -> int:
    from tabulate import tabulate

    from bench import assets

    if action == "pull":
        for path in assets.pull_assets(list(names) or None):
            print(path)
        return 0
    rows = [(s.name, s.package, s.state, f"{(s.size_bytes or 0) / 2**20:,.1f}", s.path) for s in assets.asset_status()]
    print(tabulate(rows, headers=["asset", "package", "state", "MiB", "path"], tablefmt="simple"))
    return 0


def _short_config(cfg: Any) -> str:
    import dataclasses

    return ", ".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg))


class _Printer:
    """Status lines on stderr (quiet with -q); results on stdout."""

    def __init__(self) -> None:
        self.quiet = os.environ.get("BENCH_QUIET") == "1"

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def status(self, text: str) -> None:
        self.line(text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
