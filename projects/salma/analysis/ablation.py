"""Ablations over seeds (``tools/ablate.py``): train and evaluate every config x seed, then report
mean ± 95 % CI per config and metric and the paired difference to the first config.

Each run is two commands, exactly what a user would type::

    python tools/train.py CFG --work-dir ROOT/<config>/seed<s>/train --cfg-options ... randomness.seed=<s>
    python tools/test.py  CFG --checkpoint <its last checkpoint> --work-dir ROOT/<config>/seed<s>/eval ...

Locally they run in this process through the tools' own ``main(argv)`` (:class:`InProcess`); with
``--gpus N`` through ``tools/dist_train.sh`` / ``tools/dist_test.sh`` as subprocesses
(:class:`Launcher`). ``--dry-run`` prints them.

Resumable: a run's ``result.json`` says ``done`` (with its metrics) or ``failed`` (stage, error);
done runs are skipped, failed ones reported (and retried with ``retry_failed``), never averaged.
A finished run made with another config (the fingerprint of the merged config, seed included) is an
error, not silently reused. A training that stopped midway resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import math
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mmengine.config import DictAction

from ..engine.runner import REPO_ROOT, load_config
from ..evaluation.writers import atomic_write_text
from ..fingerprint import digest
from .stats import mean_ci, paired_difference

RESULT_FILE = "result.json"
TRAIN_DONE_FILE = "train_done.json"


@dataclass(frozen=True)
class AblationRun:
    """One config trained and evaluated with one seed, in ``work_dir``."""

    config: str
    label: str  # the config's name in the report (its file stem)
    seed: int
    work_dir: str

    @property
    def train_dir(self) -> str:
        return os.path.join(self.work_dir, "train")

    @property
    def eval_dir(self) -> str:
        return os.path.join(self.work_dir, "eval")

    @property
    def result_path(self) -> str:
        return os.path.join(self.work_dir, RESULT_FILE)


def plan_runs(configs: Sequence[str], seeds: Sequence[int], root: str, *, seed_major: bool = False) -> list[AblationRun]:
    """Config-major order (all seeds of the first config first), or seed-major (every config with the
    first seed first: a partial sweep covers every config). Labels are the file stems."""
    labels = [os.path.splitext(os.path.basename(c))[0] for c in configs]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"configs with the same file name {duplicates}: their runs would share a work dir")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {list(seeds)}: a seed is repeated")
    runs = [AblationRun(c, label, int(s), os.path.join(root, label, f"seed{s}"))
            for c, label in zip(configs, labels) for s in seeds]
    return sorted(runs, key=lambda r: seeds.index(r.seed)) if seed_major else runs


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One command of a run: ``tool`` ('train' | 'test') with its arguments (after the script)."""

    tool: str
    args: list[str]
    log: str


def seed_options(run: AblationRun, cfg_options: Sequence[str]) -> list[str]:
    """The user's ``k=v`` overrides, then the run's seed (last, so it wins)."""
    return [*cfg_options, f"randomness.seed={run.seed}"]


def train_step(run: AblationRun, cfg_options: Sequence[str], *, resume: bool = False) -> Step:
    args = [run.config, "--work-dir", run.train_dir, "--cfg-options", *seed_options(run, cfg_options)]
    return Step("train", args + (["--resume"] if resume else []), os.path.join(run.work_dir, "train.log"))


def test_step(run: AblationRun, checkpoint: str, cfg_options: Sequence[str], *,
              datasets: Sequence[str] | None = None, test_args: Sequence[str] = ()) -> Step:
    args = [run.config, "--checkpoint", checkpoint, "--work-dir", run.eval_dir]
    if datasets:
        args += ["--dataset", *datasets]
    if cfg_options:
        args += ["--cfg-options", *cfg_options]
    return Step("test", args + list(test_args), os.path.join(run.work_dir, "test.log"))


def command_line(step: Step, gpus: int) -> list[str]:
    """The shell command of a step: ``python tools/<tool>.py ...`` or ``tools/dist_<tool>.sh CFG N ...``."""
    if gpus > 0:
        script = os.path.relpath(os.path.join(REPO_ROOT, "tools", f"dist_{step.tool}.sh"))
        return [script, step.args[0], str(gpus), *step.args[1:]]
    script = os.path.relpath(os.path.join(REPO_ROOT, "tools", f"{step.tool}.py"))
    return ["python", script, *step.args]


class StepFailed(RuntimeError):
    pass


class InProcess:
    """Runs steps in this process through ``tools/train.py`` / ``tools/test.py``'s ``main(argv)``
    (one process: no interpreter and import start per step). Errors propagate as exceptions."""

    def __init__(self, mains: dict[str, Callable[[list[str]], object]]) -> None:
        self.mains = mains

    @staticmethod
    def command(step: Step) -> list[str]:
        return command_line(step, 0)

    def __call__(self, step: Step) -> None:
        result = self.mains[step.tool](list(step.args))
        del result  # the trained runner / the evaluation entries: free the model before the next step
        gc.collect()


class Launcher:
    """Runs steps as subprocesses (``tools/dist_*.sh`` with ``gpus`` processes, or ``python
    tools/*.py``), output to the step's log file. A non-zero exit raises :class:`StepFailed`."""

    def __init__(self, gpus: int) -> None:
        self.gpus = gpus

    def command(self, step: Step) -> list[str]:
        return command_line(step, self.gpus)

    def __call__(self, step: Step) -> None:
        cmd = command_line(step, self.gpus)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
        if cmd[0] == "python":
            cmd[0] = sys.executable
        with open(step.log, "a", encoding="utf-8") as log:
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            raise StepFailed(f"{shlex.join(cmd)} exited with {code}; log: {step.log}\n{_tail(step.log)}")


def _tail(path: str, lines: int = 20) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


# ---------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------
def parse_cfg_options(options: Sequence[str]) -> dict:
    """``k=v`` strings parsed as ``tools/train.py --cfg-options`` parses them (mmengine's DictAction)."""
    parser = argparse.ArgumentParser(prog="cfg-options", exit_on_error=False)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    for item in options:
        if "=" not in item:
            raise ValueError(f"--cfg-options {item!r}: expected key=value")
    return parser.parse_args(["--cfg-options", *options]).cfg_options if options else {}


def run_fingerprint(run: AblationRun, cfg_options: Sequence[str]) -> str:
    """What a run's numbers depend on besides the code: its config as merged (environment variables
    substituted, overrides and seed applied)."""
    return digest(load_config(run.config, parse_cfg_options(seed_options(run, cfg_options))).to_dict())


def read_result(run: AblationRun) -> dict | None:
    if not os.path.isfile(run.result_path):
        return None
    with open(run.result_path, encoding="utf-8") as f:
        return json.load(f)


def flatten_metrics(summary: dict, datasets: Sequence[str] | None = None) -> dict[str, float]:
    """``tools/test.py``'s summary -> {'<run>/<metric>': value}: finite numeric metrics only (counts
    ``n``, ``n_*`` left out; NaN, e.g. a lenient score with no ``[SEG]`` at all, is no value to
    average), nested dicts joined with '/'. ``datasets``: keep these entries."""
    out: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "n" and not k.startswith("n_"):
                    walk(f"{prefix}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    for name, entry in summary.items():
        if datasets and name.split("/")[0] not in datasets:
            continue
        walk(name, entry.get("metrics", {}))
    return out


def execute_run(run: AblationRun, execute: Callable[[Step], None], *, cfg_options: Sequence[str] = (),
                datasets: Sequence[str] | None = None, test_args: Sequence[str] = (),
                fingerprint: str | None = None) -> dict:
    """Train (or resume, or reuse a finished training), evaluate, write ``result.json``; a failing
    step is recorded there (stage, error) and returned, not raised."""
    os.makedirs(run.work_dir, exist_ok=True)
    commands: list[str] = []
    base = {"config": run.config, "label": run.label, "seed": run.seed, "fingerprint": fingerprint,
            "commands": commands}

    def run_step(step: Step) -> None:
        if hasattr(execute, "command"):
            commands.append(shlex.join(execute.command(step)))
        execute(step)

    stage, started = "train", time.time()
    try:
        done_path = os.path.join(run.work_dir, TRAIN_DONE_FILE)
        if os.path.isfile(done_path):
            with open(done_path, encoding="utf-8") as f:
                checkpoint = json.load(f)["checkpoint"]
        else:
            resume = os.path.isfile(os.path.join(run.train_dir, "last_checkpoint"))
            run_step(train_step(run, cfg_options, resume=resume))
            checkpoint = _last_checkpoint(run)
            atomic_write_text(done_path, json.dumps({"checkpoint": checkpoint}, indent=2))
        train_seconds = time.time() - started
        stage = "test"
        run_step(test_step(run, checkpoint, cfg_options, datasets=datasets, test_args=test_args))
        with open(os.path.join(run.eval_dir, "summary.json"), encoding="utf-8") as f:
            metrics = flatten_metrics(json.load(f), datasets)
        if not metrics:
            raise StepFailed(f"{run.eval_dir}/summary.json has no numeric metric")
        result = {**base, "status": "done", "checkpoint": checkpoint, "metrics": metrics,
                  "seconds": {"train": train_seconds, "total": time.time() - started}}
    except Exception as err:  # noqa: BLE001 -- recorded in result.json and reported, never averaged
        result = {**base, "status": "failed", "stage": stage, "error": f"{type(err).__name__}: {err}",
                  "traceback": traceback.format_exc()}
    atomic_write_text(run.result_path, json.dumps(result, indent=2, sort_keys=True))
    return result


def _last_checkpoint(run: AblationRun) -> str:
    path = os.path.join(run.train_dir, "last_checkpoint")
    if not os.path.isfile(path):
        raise StepFailed(f"training of {run.label} seed {run.seed} saved no checkpoint ({path} missing)")
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


# ---------------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------------
def run_ablation(runs: Sequence[AblationRun], execute: Callable[[Step], None], *, cfg_options: Sequence[str] = (),
                 datasets: Sequence[str] | None = None, test_args: Sequence[str] = (), retry_failed: bool = False,
                 max_runs: int | None = None, log: Callable[[str], None] = print) -> dict[AblationRun, dict]:
    """Execute the runs not done yet (at most ``max_runs`` of them); return every run's result
    (None for those still pending)."""
    results: dict[AblationRun, dict | None] = {}
    executed = 0
    for run in runs:
        try:
            fingerprint = run_fingerprint(run, cfg_options)
        except Exception as err:  # noqa: BLE001 -- a config that does not load fails its runs, not the sweep
            log(f"[FAILED] {run.label} seed {run.seed} (config): {type(err).__name__}: {err}")
            results[run] = {"config": run.config, "label": run.label, "seed": run.seed, "status": "failed",
                            "stage": "config", "error": f"{type(err).__name__}: {err}"}
            continue
        result = read_result(run)
        if result is not None and result["status"] == "done":
            if result.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{run.result_path}: finished with another config than {run.config} with seed {run.seed} and "
                    f"these --cfg-options (or another environment): use another --work-dir, or delete {run.work_dir}")
            log(f"[skip] {run.label} seed {run.seed}: done ({run.result_path})")
        elif result is not None and not retry_failed:
            log(f"[failed earlier] {run.label} seed {run.seed} ({result['stage']}): {result['error'][:200]}")
        elif max_runs is not None and executed >= max_runs:
            result = None
        else:
            log(f"[run] {run.label} seed {run.seed} -> {run.work_dir}")
            result = execute_run(run, execute, cfg_options=cfg_options, datasets=datasets, test_args=test_args,
                                 fingerprint=fingerprint)
            executed += 1
            if result["status"] == "failed":
                log(f"[FAILED] {run.label} seed {run.seed} ({result['stage']}): {result['error'][:2000]}")
            else:
                log(f"[done] {run.label} seed {run.seed}: {result['seconds']['total']:.0f} s")
        results[run] = result
    return results


def dry_run_commands(runs: Sequence[AblationRun], *, gpus: int, cfg_options: Sequence[str] = (),
                     datasets: Sequence[str] | None = None, test_args: Sequence[str] = ()) -> list[str]:
    """The shell commands of every run (the test step reads the checkpoint its training writes)."""
    lines = []
    for run in runs:
        lines.append(shlex.join(command_line(train_step(run, cfg_options), gpus)))
        checkpoint = f"$(cat {shlex.quote(os.path.join(run.train_dir, 'last_checkpoint'))})"
        test = shlex.join(command_line(test_step(run, "CHECKPOINT", cfg_options, datasets=datasets,
                                                 test_args=test_args), gpus))
        lines.append(test.replace("CHECKPOINT", f'"{checkpoint}"'))
    return lines


# ---------------------------------------------------------------------------------------------------
# statistics and reports
# ---------------------------------------------------------------------------------------------------
def summarize(runs: Sequence[AblationRun], results: dict, metrics: Sequence[str] | None = None) -> dict:
    """Per config and metric: per-seed values, mean ± CI; paired difference to the first config.

    ``metrics``: fnmatch patterns selecting metric names (default: every metric of a done run)."""
    labels = list(dict.fromkeys(run.label for run in runs))
    configs = {run.label: run.config for run in runs}
    values: dict[str, dict[str, dict[int, float]]] = {label: {} for label in labels}
    names: list[str] = []
    failures, pending = [], []
    for run in runs:
        result = results.get(run)
        if result is None:
            pending.append({"config": run.label, "seed": run.seed})
            continue
        if result["status"] != "done":
            failures.append({"config": run.label, "seed": run.seed, "stage": result["stage"],
                             "error": result["error"], "result": run.result_path})
            continue
        for name, value in result["metrics"].items():
            if metrics and not any(fnmatch.fnmatchcase(name, p) for p in metrics):
                continue
            if name not in names:
                names.append(name)
            values[run.label].setdefault(name, {})[run.seed] = value
    reference = labels[0]
    rows = []
    for label in labels:
        row = {"config": label, "path": configs[label], "metrics": {}}
        for name in names:
            by_seed = values[label].get(name, {})
            if not by_seed:
                continue
            seeds = sorted(by_seed)
            entry = {"values": {str(s): by_seed[s] for s in seeds},
                     "mean": mean_ci([by_seed[s] for s in seeds], seeds=seeds).as_dict()}
            ref = values[reference].get(name, {})
            if label != reference and set(ref) & set(by_seed):
                entry["diff"] = paired_difference(by_seed, ref).as_dict()
            row["metrics"][name] = entry
        rows.append(row)
    return {"reference": reference, "metrics": names, "rows": rows, "failures": failures, "pending": pending,
            "seeds": sorted({run.seed for run in runs}), "confidence": 0.95}


def _pm(stat: dict | None, signed: bool = False) -> str:
    if stat is None:
        return "-"
    mean = f"{stat['mean']:+.2f}" if signed else f"{stat['mean']:.2f}"
    ci = "n/a" if stat["ci"] is None else f"{stat['ci']:.2f}"
    return f"{mean} ± {ci}"


def markdown(summary: dict) -> str:
    """One table per metric: mean ± CI (n seeds) and the paired difference to the reference row."""
    ref = summary["reference"]
    lines = ["# Ablation", "",
             f"Mean ± {int(summary['confidence'] * 100)} % confidence half-width over seeds {summary['seeds']} "
             "(Student t, n - 1 degrees of freedom); Δ: the paired difference to "
             f"`{ref}` (per seed, then mean ± CI over the seeds both finished). Failed runs are listed below, "
             "never averaged.", ""]
    for name in summary["metrics"]:
        lines += [f"## {name}", "", f"| config | mean ± CI | n | per seed | Δ vs {ref} ± CI |", "|---|---|---|---|---|"]
        for row in summary["rows"]:
            entry = row["metrics"].get(name)
            if entry is None:
                lines.append(f"| {row['config']} | - | 0 | - | - |")
                continue
            per_seed = ", ".join(f"{v:.2f}" for v in entry["values"].values())
            diff = "(reference)" if row["config"] == ref else _pm(entry.get("diff"), signed=True)
            lines.append(f"| {row['config']} | {_pm(entry['mean'])} | {entry['mean']['n']} | {per_seed} | {diff} |")
        lines.append("")
    if summary["failures"]:
        lines += ["## Failed runs", "", "| config | seed | stage | error |", "|---|---|---|---|"]
        for f in summary["failures"]:
            error = f["error"].splitlines()[0][:160].replace("|", "\\|")
            lines.append(f"| {f['config']} | {f['seed']} | {f['stage']} | {error} |")
        lines.append("")
    if summary["pending"]:
        lines += ["## Not run yet", "", ", ".join(f"{p['config']} seed {p['seed']}" for p in summary["pending"]), ""]
    return "\n".join(lines)


def bar_chart(summary: dict, path: str) -> None:
    """One panel per metric: a bar per config at its mean, the CI as an error bar, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = summary["metrics"]
    labels = [row["config"] for row in summary["rows"]]
    fig, axes = plt.subplots(len(names), 1, figsize=(max(6.0, 1.3 * len(labels)), 2.8 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        for x, row in enumerate(summary["rows"]):
            entry = row["metrics"].get(name)
            if entry is None:
                continue
            stat = entry["mean"]
            err = 0.0 if stat["ci"] is None else stat["ci"]
            ax.bar(x, stat["mean"], color="C0" if x == 0 else "C1", alpha=0.7)
            ax.errorbar(x, stat["mean"], yerr=err, color="black", capsize=4)
            seeds = list(entry["values"].values())
            ax.scatter([x + 0.15] * len(seeds), seeds, s=10, color="black", zorder=3)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{name}: mean ± {int(summary['confidence'] * 100)} % CI, dots: seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(summary: dict, out_dir: str) -> dict[str, str]:
    """``ablation.json``, ``ablation.md`` and ``ablation.png`` (when there is a metric) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, "ablation.json"), "md": os.path.join(out_dir, "ablation.md")}
    atomic_write_text(paths["json"], json.dumps(summary, indent=2, allow_nan=False, default=_no_nan))
    atomic_write_text(paths["md"], markdown(summary))
    if summary["metrics"]:
        paths["png"] = os.path.join(out_dir, "ablation.png")
        bar_chart(summary, paths["png"])
    return paths


def _no_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {value!r}")


__all__ = ["AblationRun", "InProcess", "Launcher", "Step", "dry_run_commands", "execute_run",
           "flatten_metrics", "markdown", "plan_runs", "run_ablation", "summarize", "write_reports"]
