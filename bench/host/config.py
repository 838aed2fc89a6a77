"""The resolved configuration of one invocation, and how each strategy's config is derived from it.

Precedence, lowest first: the strategy's dataclass defaults, the preset, the config file
(``bench.toml`` or ``[tool.bench]``), the command line; within each source a per-strategy value
(``[tool.bench.strategy.NAME]`` / ``-o NAME.field=value``) beats a common one (``epochs = 3`` /
``--epochs 3``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.core.config import DEFAULT_PRESET, BenchConfig, LaunchSettings, PluginSpec
from bench.core.errors import UsageError
from bench.core.fields import bounds_problem, field_bounds, field_types
from bench.core.markers import hookimpl
from bench.core.text import did_you_mean
from bench.host.options import OptionParser, coerce, find_config_file, read_config_file
from bench.host.processes import parse_size

if TYPE_CHECKING:
    from bench.core.strategy import Strategy

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
WEIGHTS = ("pretrained", "random")


# -------------------------------------------------------------------------------------------------
# Core options, declared through the same hook plugins use.
# -------------------------------------------------------------------------------------------------


@hookimpl
def bench_addoption(parser: OptionParser) -> None:
    parser.addoption("-s", "--strategy", dest="strategies", action="append", type=str,
                     help="strategy to run (repeatable; default: the built-in ones for the task)")
    parser.addoption("--device", choices=DEVICES, default="auto", help="auto: cuda when available, else cpu")
    parser.addoption("--precision", choices=PRECISIONS, default="auto",
                     help="auto: bf16 autocast where the device supports it (CUDA bf16, CPU avx512_bf16/AMX)")
    parser.addoption("--seed", type=int, default=0, ge=0, help="random seed for data order and initialisation")
    parser.addoption("--out", type=str, default=None,
                     help="output folder (default: a new timestamped folder under .bench/)")
    parser.addoption("--model", type=str, default=None,
                     help="Hugging Face model id or local model folder (default: the task's embedded model)")
    parser.addoption("--dataset", type=str, default=None,
                     help="hub dataset id or a CSV/JSONL file (default: the task's embedded data)")
    parser.addoption("--text-column", type=str, default="text", help="text column of a --dataset file")
    parser.addoption("--label-column", type=str, default="label", help="label column of a --dataset file")
    parser.addoption("--weights", choices=WEIGHTS, default="pretrained",
                     help="pretrained: load the model's weights; random: build it from its config alone (a "
                          "shape: --model shape:llama-1b, a folder or a hub id), train on synthetic batches "
                          "shaped like the task's data, measure time, throughput, memory and MFU, no accuracy")
    parser.addoption("--seq-len", type=int, default=0, ge=0,
                     help="with --weights random: every synthetic example this many tokens (default: the "
                          "lengths of the default data)")
    parser.addoption("--repeats", type=int, default=1, ge=1,
                     help="run each selected strategy N times with seeds seed..seed+N-1, interleaved (A B C A B C); "
                          "tables show the mean and 95% interval per strategy (bench report --raw: every run)")
    parser.addoption("--speed-index", dest="speed_index", type=bool, default=True,
                     help="time a small reference matmul after every timed step (outside it), so that bench "
                          "compare can divide a change of the machine's load out of the step times (true|false)")
    parser.addoption("--remeasure-peak", dest="remeasure_peak", action="store_true",
                     help="probe the device's matmul peak again instead of reusing this machine's cached one")
    parser.addoption("--preset", type=str, default=DEFAULT_PRESET,
                     help="bundle of defaults: smoke (seconds), default, full (best accuracy)")
    parser.addoption("--no-isolate", dest="no_isolate", action="store_true",
                     help="run strategies in this process instead of one child process each")
    parser.addoption("--warmup-steps", type=int, default=2, ge=0,
                     help="training steps excluded from throughput at the start of training")
    parser.addoption("-o", "--option", dest="overrides", action="append", type=str,
                     help="per-strategy option: STRATEGY.FIELD=VALUE (e.g. -o last-layers.n_last=2)")
    parser.addoption("--nproc-per-node", type=int, default=0,
                     help="run each strategy that has a parallel option as a torch.distributed job of this many "
                          "processes per node (torch's elastic launcher; nccl on CUDA, one GPU each; gloo on the CPU); "
                          "0: one process, no torch.distributed")
    parser.addoption("--nnodes", type=int, default=1, help="nodes in each job (run bench on each, same options)")
    parser.addoption("--node-rank", type=int, default=0, help="this node's rank, 0 to nnodes-1 (several nodes)")
    parser.addoption("--rdzv-endpoint", type=str, default="",
                     help="HOST:PORT of node 0 where the nodes meet (several nodes; one node: a free local port)")
    parser.addoption("--dist-timeout", type=float, default=300.0,
                     help="seconds a collective, the rendezvous or the exchange after a run may wait for a rank "
                          "before the job fails (a rank that hung)")
    parser.addoption("--no-scaling-reference", dest="no_scaling_reference", action="store_true",
                     help="with --nproc-per-node N > 1 on one node: skip the one-process run of each strategy that "
                          "the report's scaling efficiency is measured against")
    parser.addoption("--timeout", type=float, default=0.0, ge=0,
                     help="seconds each strategy may run (its process start included); past it the strategy and "
                          "everything it started are stopped and its row says timeout (0: no limit)")
    parser.addoption("--max-memory", type=parse_size, default=None,
                     help="cap each CPU run process's memory (address space, RLIMIT_AS; e.g. 4GiB): a run that "
                          "needs more gets an 'out of memory' row instead of the machine swapping or the "
                          "kernel's OOM killer choosing")


# -------------------------------------------------------------------------------------------------
# Where plugins come from: -p arguments and the config file.
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSettings:
    """The config file of an invocation (``--config FILE``, else ``./bench.toml``, else ``[tool.bench]`` in
    ``./pyproject.toml``): its option values, and the plugins it names, kept apart."""

    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    plugins_dir: str | None = None


def file_settings(explicit: str | Path | None, start: Path) -> FileSettings:
    """Read the invocation's config file (``explicit``, else the one found in ``start``), if any."""
    path = Path(explicit) if explicit else find_config_file(start)
    if path is None:
        return FileSettings()
    values = dict(read_config_file(path))
    plugins = values.pop("plugins", []) or []
    if isinstance(plugins, str):
        plugins = [plugins]
    plugins_dir = values.pop("plugins_dir", None)
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise UsageError(f"config file {path}: key 'plugins' must be a list of module names")
    if plugins_dir is not None and not isinstance(plugins_dir, str):
        raise UsageError(f"config file {path}: key 'plugins_dir' must be a folder name")
    return FileSettings(path, values, tuple(plugins), plugins_dir or None)


ENV_TRUST_CONFIG_PLUGINS = "BENCH_TRUST_CONFIG_PLUGINS"


def trusted_by_env() -> bool:
    """``BENCH_TRUST_CONFIG_PLUGINS=1``: the opt-in of ``--trust-config-plugins``, for CI files."""
    return os.environ.get(ENV_TRUST_CONFIG_PLUGINS, "") not in ("", "0")


def spec_with_config_plugins(settings: FileSettings, plugin_args: Sequence[str], plugins_dir: str | Path | None,
                             *, trusted: bool) -> PluginSpec:
    """The plugins of a ``bench run`` / ``bench plan``: ``-p`` and ``--plugins-dir`` from the command line,
    and those a config file names (``plugins``, ``plugins_dir``) only when the user trusts it
    (``--trust-config-plugins`` or ``BENCH_TRUST_CONFIG_PLUGINS=1``): a config file in a cloned folder
    must not run code by being there. Untrusted, a config file that names plugins stops the command
    with one line saying how to allow them."""
    named = [*settings.plugins, *([f"plugins_dir = {settings.plugins_dir!r}"] if settings.plugins_dir else [])]
    if named and not trusted:
        raise UsageError(f"config file {settings.path} names plugins to load ({', '.join(named)}), and a config file "
                         "runs no code unless you allow it: add --trust-config-plugins (or set "
                         f"{ENV_TRUST_CONFIG_PLUGINS}=1) if you trust that folder, or give -p / --plugins-dir yourself")
    return plugin_spec([*settings.plugins, *plugin_args], plugins_dir or settings.plugins_dir)


def plugin_spec(plugin_args: Sequence[str], plugins_dir: str | Path | None) -> PluginSpec:
    """``-p NAME`` loads a plugin module, ``-p no:NAME`` blocks a plugin; ``plugins_dir`` adds a folder."""
    return PluginSpec(
        enable=tuple(a for a in plugin_args if not a.startswith("no:")),
        disable=tuple(a[3:] for a in plugin_args if a.startswith("no:")),
        plugins_dir=str(Path(plugins_dir).resolve()) if plugins_dir else None,
    )


# -------------------------------------------------------------------------------------------------
# Building the config.
# -------------------------------------------------------------------------------------------------


def make_config(
    parser: OptionParser,
    cli_values: Mapping[str, Any],
    file_values: Mapping[str, Any],
    *,
    strategy_fields: Mapping[str, Any],
    plugins: PluginSpec,
    config_file: Path | None,
    resolve_device: bool = True,
    quiet: bool = False,
    debug: bool = False,
) -> BenchConfig:
    """Merge declared-option defaults < config file < command line into a :class:`BenchConfig`.

    ``strategy_fields`` maps every strategy config field name to its type (the union over the
    registered strategies), so common strategy options are recognised in the config file.
    """
    where = f"config file {config_file}" if config_file else "config file"
    file_common: dict[str, Any] = {}
    file_per_strategy: dict[str, dict[str, Any]] = {}
    options: dict[str, Any] = {o.dest: o.default for o in parser.options}
    for key, value in file_values.items():
        if key == "strategy" and isinstance(value, Mapping):
            for sname, table in value.items():
                if not isinstance(table, Mapping):
                    raise UsageError(f"{where}: [strategy.{sname}] must be a table of options")
                file_per_strategy[str(sname)] = {str(k).replace("-", "_"): v for k, v in table.items()}
            continue
        option = parser.get(key)
        if option is not None:
            if option.dest == "strategies" and isinstance(value, str):
                value = [value]
            options[key] = _coerce_option(option, value, f"{where}: key {key!r}")
        elif key in strategy_fields:
            file_common[key] = value
        else:
            known = [o.dest for o in parser.options] + list(strategy_fields)
            raise UsageError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")
    cli_common: dict[str, Any] = {}
    for key, value in cli_values.items():
        option = parser.get(key)
        if option is not None:
            options[key] = _coerce_option(option, value, f"option --{key.replace('_', '-')}")
        elif key in strategy_fields:
            cli_common[key] = value
    cli_per_strategy = _parse_overrides(options.get("overrides") or ())
    per_strategy = {k: dict(v) for k, v in file_per_strategy.items()}
    for sname, values in cli_per_strategy.items():
        per_strategy.setdefault(sname, {}).update(values)
    device = str(options["device"])
    precision = str(options["precision"])
    if resolve_device:
        device = resolve_device_name(device)
        precision = resolve_precision(precision, device)
    else:  # planning for a device that may not be here: auto is this machine's; cuda plans bf16 by default
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        precision = ("bf16" if device == "cuda" else resolve_precision("auto", device)) if precision == "auto" else \
            precision
    isolate = not options.get("no_isolate", False)
    for key in ("timeout", "max_memory"):
        if options.get(key) and not isolate:
            raise UsageError(f"--{key.replace('_', '-')} applies to isolated run processes; drop --no-isolate")
    if options.get("max_memory") and device == "cuda":
        raise UsageError("--max-memory caps a CPU run (RLIMIT_AS); CUDA reserves address space far beyond it: use it "
                         "with --device cpu")
    out = options.get("out")
    launch = launch_settings(options)
    return BenchConfig(
        strategies=tuple(options.get("strategies") or ()),
        device=device,
        precision=precision,
        seed=int(options["seed"]),
        out_dir=Path(out) if out else default_out_dir(),
        model=options.get("model"),
        dataset=options.get("dataset"),
        preset=str(options["preset"]),
        isolate=isolate,
        warmup_steps=int(options["warmup_steps"]),
        options=options,
        strategy_values={**file_common, **cli_common},
        strategy_overrides=per_strategy,
        plugins=plugins,
        config_file=config_file,
        weights=str(options.get("weights") or "pretrained"),
        repeats=int(options.get("repeats") or 1),
        seq_len=int(options.get("seq_len") or 0),
        quiet=quiet,
        debug=debug,
        launch=launch,
    )


OUTER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launch_settings(options: Mapping[str, Any]) -> LaunchSettings:
    """The torch.distributed settings of the options, checked; ``outer`` when this process is a rank of a job an
    outer launcher started (``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    import os

    nproc, nnodes = int(options.get("nproc_per_node") or 0), int(options.get("nnodes") or 1)
    node_rank, endpoint = int(options.get("node_rank") or 0), str(options.get("rdzv_endpoint") or "")
    timeout = float(options.get("dist_timeout") or 300.0)
    outer = all(k in os.environ for k in OUTER_ENV)
    if outer and nproc:
        raise UsageError(f"--nproc-per-node {nproc}: this bench run is already rank {os.environ['RANK']} of a "
                         f"torch.distributed job of {os.environ['WORLD_SIZE']} (RANK/WORLD_SIZE/LOCAL_RANK are set, "
                         "e.g. by torchrun); drop --nproc-per-node, or run bench outside the launcher")
    if nproc < 0 or nnodes < 1 or timeout <= 0:
        raise UsageError("--nproc-per-node must be >= 0, --nnodes >= 1 and --dist-timeout > 0")
    if not 0 <= node_rank < nnodes:
        raise UsageError(f"--node-rank {node_rank}: must be 0 to {nnodes - 1} (--nnodes {nnodes})")
    if nnodes > 1 and not nproc:
        raise UsageError(f"--nnodes {nnodes}: give --nproc-per-node too (processes on each node)")
    if nnodes > 1 and ":" not in endpoint:
        raise UsageError(f"--nnodes {nnodes}: give --rdzv-endpoint HOST:PORT, an address of node 0 every node reaches")
    return LaunchSettings(nproc, nnodes, node_rank, endpoint, timeout,
                          scaling_reference=not options.get("no_scaling_reference", False), outer=outer)


def _coerce_option(option: Any, value: Any, what: str) -> Any:
    if option.action == "append":
        items = value if isinstance(value, (list, tuple)) else [value]
        return [coerce(v, option.type, what=what) if option.type is not str else str(v) for v in items]
    if option.type in (int, float, str, bool):
        coerced = coerce(value, option.type, what=what)
    else:
        try:
            coerced = option.type(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{what}: {exc}") from None
    if option.choices and coerced not in option.choices:
        raise UsageError(f"{what}: {coerced!r} is not one of {', '.join(map(str, option.choices))}")
    problem = bounds_problem(coerced, option.bounds)
    if problem:
        raise UsageError(f"{what}: {coerced!r} {problem}")
    return coerced


def _parse_overrides(items: Any) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        sname, dot, fname = key.partition(".")
        if not sep or not dot or not sname or not fname:
            raise UsageError(f"option -o {item!r}: expected STRATEGY.FIELD=VALUE, e.g. -o last-layers.n_last=2")
        out.setdefault(sname.strip(), {})[fname.strip().replace("-", "_")] = value.strip()
    return out


def default_out_dir() -> Path:
    import datetime

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(".bench") / stamp
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = Path(f"{base}-{n}")
    return candidate


def resolve_device_name(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return device


def resolve_precision(precision: str, device: str) -> str:
    if precision != "auto":
        return precision
    return "bf16" if bf16_supported(device) else "fp32"


def bf16_supported(device: str) -> bool:
    """Native bf16 arithmetic: CUDA compute capability >= 8, or a CPU with avx512_bf16 / AMX."""
    if device == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# -------------------------------------------------------------------------------------------------
# Per-strategy config resolution.
# -------------------------------------------------------------------------------------------------


def strategy_config(strategy: Strategy, config: BenchConfig) -> Any:
    """Build ``strategy.config_class`` from defaults < preset < common values < per-strategy values."""
    types = field_types(strategy.config_class)
    values: dict[str, Any] = {}
    presets: Mapping[str, Mapping[str, Any]] = getattr(strategy, "presets", {}) or {}
    if config.preset != DEFAULT_PRESET:
        if config.preset not in presets:
            known = sorted({DEFAULT_PRESET, *presets})
            raise UsageError(
                f"--preset {config.preset!r}: strategy {strategy.name!r} has no such preset "
                f"(it has: {', '.join(known)}){did_you_mean(config.preset, known)}"
            )
        values.update(presets[config.preset])
    for key, value in config.strategy_values.items():
        if key in types:
            values[key] = value
    for key, value in config.strategy_overrides.get(strategy.name, {}).items():
        if key not in types:
            raise UsageError(
                f"strategy {strategy.name!r} has no option {key!r}{did_you_mean(key, types)} "
                f"(its options: {', '.join(types)})"
            )
        values[key] = value
    kwargs = {
        key: coerce(value, types[key], what=f"option {key!r} of strategy {strategy.name!r}")
        for key, value in values.items()
    }
    bounds = field_bounds(strategy.config_class)
    for key, value in kwargs.items():
        problem = bounds_problem(value, bounds.get(key, {}))
        if problem:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise UsageError(f"strategy {strategy.name!r}: --{key.replace('_', '-')} {shown}: {problem}")
    try:
        return strategy.config_class(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"strategy {strategy.name!r}: invalid options: {exc}") from None


def unknown_override_strategies(config: BenchConfig, known: list[str]) -> None:
    """Raise for ``-o NAME.x=y`` naming a strategy that does not exist."""
    for sname in config.strategy_overrides:
        if sname not in known:
            raise UsageError(f"option for unknown strategy {sname!r}{did_you_mean(sname, known)}")
