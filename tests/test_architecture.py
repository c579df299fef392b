"""The architecture stays as docs/architecture.md draws it: layers (import-linter, in .ci/run),
one concern per module (a module past 500 lines is two), click in cli/ only, tabulate in render/ only, CLI options
that mirror the API's keywords and registries, a new data source that is one module plus
one registry line, and a new loss that is one row of the loss table."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import click
import pytest
import tomllib
import torch

import evalloss
from evalloss import api, losses, render, sources
from evalloss.cli import cli
from evalloss.explainer import table as explainer
from evalloss.options import PRECISIONS, RunKeywords
from evalloss.sources import tabular
from evalloss.sources.tabular import Tabular
from tests import nets

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "evalloss"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (relative imports as ``.``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." if node.level else (node.module or "").split(".")[0])
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_one_concern_per_module(path: Path) -> None:
    """Modules are split by concern, never by a line count; past 500 lines a module holds
    two concerns (docs/architecture.md)."""
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500


def test_click_only_in_cli_and_tabulate_only_in_render() -> None:
    for path in MODULES:
        part = path.relative_to(PACKAGE).parts[0]
        names = _imports(path)
        assert part == "cli" or "click" not in names, path
        assert part == "render" or "tabulate" not in names, path


def test_every_module_is_in_a_layer() -> None:
    """A new top-level module must be placed in the layers contract, or it escapes it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = config["tool"]["importlinter"]["contracts"][0]
    layered = {m.strip() for layer in contract["layers"] for m in layer.split("|")}
    top = {
        f"evalloss.{p.relative_to(PACKAGE).parts[0].removesuffix('.py')}"
        for p in MODULES
        if p.name != "__init__.py" or p.parent != PACKAGE
    }
    assert top - {"evalloss.__main__"} == layered


def _options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize(
    ("name", "function"), [("compare", api.compare), ("explain", explainer.explain)]
)
def test_cli_options_mirror_the_api_keywords(name: str, function: object) -> None:
    """Every option of a command is a keyword of its library function (or an output of the
    command itself), spelled the same: --batch-size is batch_size."""
    keywords = set(inspect.signature(function).parameters) | set(RunKeywords.__annotations__)
    # what the command writes, and where
    command_only = {"fmt", "output", "no_progress", "junit_xml", "mlflow", "mlflow_experiment"}
    options = _options(cli.commands[name])  # type: ignore[arg-type]
    assert set(options) - command_only <= keywords
    for dest, option in options.items():
        if dest not in command_only and dest != "batch_sizes":
            assert option.opts[-1] == "--" + dest.replace("_", "-"), option.opts


def test_cli_choices_are_the_registries() -> None:
    for command in (cli.commands["compare"], cli.commands["explain"]):
        options = _options(command)  # type: ignore[arg-type]
        assert list(options["loss"].type.choices) == list(losses.NAMES)  # type: ignore[attr-defined]
        assert list(losses.NAMES) == list(losses.ROWS)  # the loss table's names
        assert list(options["fmt"].type.choices) == list(render.FORMATS)  # type: ignore[attr-defined]
        assert list(options["precision"].type.choices) == list(PRECISIONS)  # type: ignore[attr-defined]


# -- a hypothetical data source: one module, one registry line -----------------------------


class _Jsonl:
    """What docs/architecture.md's recipe writes as evalloss/sources/jsonl.py: JSON Lines of
    numbers, read by pyarrow, blocks made by the tabular helpers."""

    @staticmethod
    def accepts(path: str, options: object) -> bool:
        return path.endswith(".jsonl")

    @staticmethod
    def open_source(path: str, options: evalloss.options.Options) -> Tabular:
        import pyarrow.json as pajson

        table = pajson.read_json(path)
        columns = tabular.resolve(path, table.column_names, options.target, options.feature)

        class JsonlFile(Tabular):
            def blocks(self, dtype, *, rank=0, world=1, gather=None):  # type: ignore[no-untyped-def]
                batch = table.slice(len(table) * rank // world, len(table) // world)
                yield self._to_block(batch, len(table) * rank // world, dtype)

        return JsonlFile.of(path, columns, options)


def test_a_new_data_source_is_one_module_and_one_registry_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "SOURCES", (_Jsonl, *sources.SOURCES))
    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    evalloss.save(nets.mlp(), ckpt, loss="cross-entropy")
    rows = [[0.5 * i, 1.0 - i, 0.25 * i, float(i % 3)] for i in range(20)]
    names = ["a", "b", "c", "y"]
    (tmp_path / "d.jsonl").write_text(
        "".join(
            "{" + ", ".join(f'"{n}": {v}' for n, v in zip(names, r, strict=True)) + "}\n"
            for r in rows
        )
    )
    (tmp_path / "d.csv").write_text(
        ",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    jsonl = evalloss.compare([ckpt], data=tmp_path / "d.jsonl", precision="float64")
    csv = evalloss.compare([ckpt], data=tmp_path / "d.csv", precision="float64")
    assert jsonl.models[0].loss_sum == csv.models[0].loss_sum
    assert jsonl.models[0].items == 20


# -- a hypothetical loss: one row of the loss table ------------------------------------------


def test_a_new_loss_is_one_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Poisson negative log-likelihood (log rates against counts), registered by one row: a
    checkpoint names it, `compare` runs it, and its loss_sum is an independent float64 sum."""
    import torch.nn.functional as F

    row = losses.Row("poisson-nll", F.poisson_nll_loss, losses.Target.VALUES)
    monkeypatch.setitem(losses.ROWS, row.name, row)
    torch.manual_seed(0)
    net = torch.nn.Sequential(nets.linear())  # an allow-listed layer: no --model
    ckpt = tmp_path / "m.safetensors"
    evalloss.save(net, ckpt, loss="poisson-nll", target="y")
    rows = [[0.5 * i, 1.0 - 0.1 * i, 0.25 * (i % 5), float(i % 4)] for i in range(20)]
    (tmp_path / "d.csv").write_text(
        "a,b,c,y\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    )
    report = evalloss.compare([ckpt], data=tmp_path / "d.csv", precision="float64")
    (model,) = report.models
    assert report.loss == "poisson-nll" and model.items == 20 and model.accuracy is None
    net = net.double()
    with torch.no_grad():  # one item at a time: exp(log rate) - count x log rate
        rates = [float(net(torch.tensor([r[:3]], dtype=torch.float64))[0, 0]) for r in rows]
    want = math.fsum(math.exp(o) - r[3] * o for o, r in zip(rates, rows, strict=True))
    assert model.loss_sum == pytest.approx(want, rel=1e-12)


def test_no_import_loop_at_run_time() -> None:
    """No module imports itself through others, type-checking imports aside (grimp, which
    ships with import-linter): each module can be read knowing only what is below it."""
    import grimp

    graph = grimp.build_graph("evalloss", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    loops: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in modules:
        if module not in order:
            visit(module)
    assert loops == []
