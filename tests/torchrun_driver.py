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
import sys

from evalloss.cli import cli


def main() -> None:
    path = sys.argv[1]
    endpoints = os.environ.get("EVALLOSS_TEST_ENDPOINTS")  # tests/test_remote_torchrun.py
    if endpoints:  # each rank its own port of the local S3 server: its requests counted apart
        os.environ["AWS_ENDPOINT_URL"] = endpoints.split(",")[int(os.environ["RANK"])]
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
    with open(f"{path}.{os.environ['RANK']}.out", "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
