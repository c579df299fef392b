"""Run under torchrun by tests/test_distributed.py: many CLI invocations in the same processes.

``torchrun ... torchrun_driver.py CASES.json``: CASES.json maps a name to CLI arguments. Each
process runs every case through the real CLI entry point (exit code, stdout and stderr
captured) and writes them to ``CASES.json.<rank>.out``. Starting torch once for all cases keeps
the test fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from evalloss.cli import cli


def main() -> None:
    path = sys.argv[1]
    endpoints = os.environ.get("EVALLOSS_TEST_ENDPOINTS")  # tests/test_remote_torchrun.py
    if endpoints:  # each rank its own port of the local S3 server: its requests counted apart
        os.environ["AWS_ENDPOINT_URL"] = endpoints.split(",")[int(os.environ["RANK"])]
    grows = os.environ.get("EVALLOSS_TEST_GROWS")  # tests/test_distributed.py
    if grows and os.environ["RANK"] == "0":
        _grows_after_the_pass(grows)
    with open(path) as f:
        cases = json.load(f)
    results = {}
    for name, args in cases.items():
        out, err = io.StringIO(), io.StringIO()
        code: object = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(args, prog_name="evalloss")
            except SystemExit as exit_:
                code = exit_.code
        results[name] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
    results["gloo threads after destroy"] = _gloo_threads_after_destroy()
    with open(f"{path}.{os.environ['RANK']}.out", "w") as f:
        json.dump(results, f)


def _gloo_threads_after_destroy() -> int:
    """The gloo worker threads still alive once the process group is destroyed (as at exit):
    any left can take the GIL while Python finalizes, and abort the process (SIGABRT)."""
    from evalloss.run import distributed

    distributed._destroy()
    count = 0
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as f:
            count += f.read().startswith("pt_gloo")
    return count


def launch(cases: dict[str, list[str]], cwd: Path, processes: int = 2) -> dict[str, Any]:
    """Run ``cases`` under torchrun from a test: rank 0's results, by name (its exit code,
    stdout and stderr)."""
    listed = cwd / "cases.json"
    listed.write_text(json.dumps(cases))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", __file__, str(listed)]  # fmt: skip
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads((cwd / "cases.json.0.out").read_text())
    return found


def _grows_after_the_pass(data: str) -> None:
    """The data file grows after the pass, while rank 0 alone builds the report (and hashes
    the data): as a job still writing it would, late."""
    from evalloss.run import ranking

    collect = ranking.collect_provenance

    def grown(**kwargs: object) -> object:
        with open(data, "a") as f:
            f.write("0.5,0.5,0.5,1\n")
        return collect(**kwargs)  # type: ignore[arg-type]

    ranking.collect_provenance = grown  # type: ignore[assignment]


if __name__ == "__main__":
    main()
