"""``--mlflow``: the report logged to the MLflow tracking server of ``MLFLOW_TRACKING_URI``.

Into the run of ``MLFLOW_RUN_ID`` when set (its status left alone), else into a new run
(named ``evalloss``, ended FINISHED) of ``--mlflow-experiment`` (created if missing),
``MLFLOW_EXPERIMENT_NAME``, ``MLFLOW_EXPERIMENT_ID`` or the default experiment:

- metrics: every model's figures, keyed ``<model>.<figure>`` (``bs10.loss_per_item``,
  ``bs10.vs_baseline.delta``); a name is made a valid key (`keys`);
- params: ``evalloss.<option>`` for every option given, the run's settings, and
  ``evalloss.sha256.<model>`` / ``evalloss.sha256.data`` (a model folder: one per file,
  ``evalloss.sha256.<model>.<file>``); values cut to 500 characters, older servers' limit;
- tags: ``evalloss.verdict`` (``passed``, ``failed`` or ``none``), ``evalloss.verdict_line``
  and ``evalloss.winner``;
- artifacts, under ``evalloss/``: the JSON report, the ``--plot`` file and an HTML ``-o``.

mlflow is imported only here, only with ``--mlflow`` (``pip install 'evalloss[mlflow]'``).
A server that cannot be reached or refuses a value is one warning line: the report has been
written and the exit code stands. Unless set, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is 2 and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` 20 s while logging: a server that is down costs seconds, not
the minutes of mlflow's defaults.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalloss.errors import EvallossWarning, OptionError
from evalloss.report import ModelResult, Report

INSTALL = "pip install 'evalloss[mlflow]'"
PARAM_LIMIT = 500  # characters: older MLflow servers refuse longer values (newer: 6000)
KEY_LIMIT = 250  # MLflow's longest metric or param key
_BAD = re.compile(r"[^A-Za-z0-9_.\- ]")  # MLflow also allows / and :, which we avoid
_FIGURES = ("rank", "loss_per_item", "loss_sum", "items", "accuracy", "nonfinite_items",
            "seconds", "tokens", "loss_per_token", "perplexity", "bits_per_byte")  # fmt: skip
_PAIRED = ("delta", "relative", "p_value", "wins")
_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def check() -> None:
    """Before the pass: mlflow installed (else one exit-2 line naming the extra)."""
    if importlib.util.find_spec("mlflow") is None:
        raise OptionError(f"needs mlflow, which is not installed: {INSTALL}", key="--mlflow")


def log(
    report: Report,
    *,
    experiment: str | None,
    options: dict[str, Any],
    artifacts: Sequence[str] = (),
) -> str | None:
    """Log ``report`` (and the files ``artifacts``) to MLflow; the run's id, or None after a
    warning when the server or its artifact store could not take it."""
    from evalloss import render

    record = _Record(
        metrics_of(report), params_of(report, options), tags_of(report),
        render.render(report, "json"), list(artifacts),
    )  # fmt: skip
    try:
        # mlflow prints the run's address on stdout: stdout carries the report alone
        with _quick_failure(), contextlib.redirect_stdout(sys.stderr):
            return _send(record, experiment)
    except Exception as exc:  # mlflow's, requests' or an artifact store's: never the report's
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        uri = os.environ.get("MLFLOW_TRACKING_URI", "mlflow's default")
        warnings.warn(
            _redacted(f"--mlflow: cannot log to {uri} ({first[:300]}); the report stands"),
            EvallossWarning,
            stacklevel=2,
        )
        return None


@dataclass(frozen=True)
class _Record:
    """What one report logs, computed before any request (a bug of ours is never a warning)."""

    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    report_json: str
    artifacts: list[str]


def _send(record: _Record, experiment: str | None) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient()
    run_id = os.environ.get("MLFLOW_RUN_ID") or ""
    new = not run_id
    if new:
        experiment_id = _experiment_id(client, experiment)
        run_id = client.create_run(experiment_id, run_name="evalloss").info.run_id
    stamp = _now_ms()
    metrics = [Metric(k, v, stamp, 0) for k, v in record.metrics.items()]
    params = [Param(k, v) for k, v in record.params.items()]
    tags = [RunTag(k, v) for k, v in record.tags.items()]
    try:
        for start in range(0, max(len(metrics), len(params), len(tags)), 100):
            client.log_batch(run_id, metrics[start : start + 100], params[start : start + 100],
                             tags[start : start + 100])  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="evalloss-mlflow-") as folder:
            report_json = Path(folder) / "evalloss-report.json"
            report_json.write_text(record.report_json, encoding="utf-8")
            for path in [str(report_json), *record.artifacts]:
                client.log_artifact(run_id, path, artifact_path="evalloss")
    except BaseException:
        if new:  # our own run does not stay RUNNING forever
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
        raise
    if new:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def _redacted(text: str) -> str:
    """``https://user:token@host`` -> ``https://***@host``: no credential reaches a CI log."""
    return re.sub(r"//[^/@\s]+@", "//***@", text)


def _experiment_id(client: Any, name: str | None) -> str:
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if not name:
        return os.environ.get("MLFLOW_EXPERIMENT_ID") or "0"
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id if found is not None else client.create_experiment(name))


def keys(names: Sequence[str]) -> dict[str, str]:
    """Each model name -> a valid, unique MLflow key prefix: characters besides letters,
    digits, ``_ . -`` and space become ``_``, at most 200 characters, ``_2``, ``_3``... on a
    clash, never ``.`` or ``..`` alone."""
    out: dict[str, str] = {}
    for name in names:
        key = _BAD.sub("_", name)[:200].strip() or "_"
        key = "_" + key if key.strip(".") == "" else key
        base, n = key, 2
        while key in out.values():
            key, n = f"{base}_{n}", n + 1
        out[name] = key
    return out


def metrics_of(report: Report) -> dict[str, float]:
    """``<model key>.<figure>`` -> value, for every finite figure of every model."""
    prefixes = keys([m.name for m in report.models])
    out: dict[str, float] = {}
    for m in report.models:
        for name, value in _figures(m).items():
            if value is not None and math.isfinite(value):
                out[f"{prefixes[m.name]}.{name}"[:KEY_LIMIT]] = float(value)
    return out


def _figures(m: ModelResult) -> dict[str, float | int | None]:
    figures: dict[str, float | int | None] = {f: getattr(m, f) for f in _FIGURES}
    vs = m.vs_baseline
    if vs is not None:
        figures.update({f"vs_baseline.{f}": getattr(vs, f) for f in _PAIRED})
        if vs.ci95 is not None:
            figures["vs_baseline.ci95_low"], figures["vs_baseline.ci95_high"] = vs.ci95
    return figures


def params_of(report: Report, options: dict[str, Any]) -> dict[str, str]:
    """``evalloss.<name>`` -> text: the options given, the run's settings, the sha256."""
    values: dict[str, Any] = {k: v for k, v in options.items() if v not in (None, False, ())}
    values.update({
        "version": report.evalloss_version, "data": report.data.path, "items": report.data.items,
        "loss": report.loss, "device": report.device, "precision": report.precision,
        "batch_size": report.batch_size, "world_size": report.world_size,
        "checkpoints": " ".join(m.path for m in report.models),
    })  # fmt: skip
    hashes = (report.provenance.sha256 if report.provenance is not None else None) or {}
    for path, digest in hashes.items():
        values[f"sha256.{_file_key(path, report)}"] = digest
    return {_BAD.sub("_", f"evalloss.{k}")[:KEY_LIMIT]: _text(v) for k, v in values.items()}


def _file_key(path: str, report: Report) -> str:
    """A hashed file's key: ``data``, the model's key, or for a file of a model folder the
    model's key and the file's path in it (``bert.model.safetensors``)."""
    if path == report.data.path:
        return "data"
    prefixes = keys([m.name for m in report.models])
    for m in report.models:
        if path == m.path:
            return prefixes[m.name]
        if Path(path).is_relative_to(m.path):
            return f"{prefixes[m.name]}.{Path(path).relative_to(m.path).as_posix()}"
    return Path(path).name or "_"


def tags_of(report: Report) -> dict[str, str]:
    from evalloss.render.cells import verdict

    gate = report.gate
    state = "none" if gate is None else ("passed" if gate.passed else "failed")
    tags = {"evalloss.verdict": state, "evalloss.verdict_line": verdict(report) or ""}
    if gate is not None and gate.winner is not None:
        tags["evalloss.winner"] = gate.winner
    return {k: v[:5000] for k, v in tags.items()}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = " ".join(map(str, value))
    elif isinstance(value, dict):
        value = " ".join(f"{k}={v}" for k, v in value.items())
    text = str(value)
    return text if len(text) <= PARAM_LIMIT else text[: PARAM_LIMIT - 1] + "…"


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@contextlib.contextmanager
def _quick_failure() -> Iterator[None]:
    """mlflow's retry settings at our defaults unless the user set them, for this call only."""
    unset = [k for k in _DEFAULTS if k not in os.environ]
    os.environ.update({k: _DEFAULTS[k] for k in unset})
    try:
        yield
    finally:
        for k in unset:
            os.environ.pop(k, None)
