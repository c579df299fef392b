"""Provenance: what a report was computed from, so a verdict can be traced to exact files.

The sha256 of every checkpoint and of the data file, and the software and hardware that ran.
The data is hashed during the pass that reads it (`DataSource.sha256`); checkpoints are
hashed after loading, while their bytes are still in the page cache.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss._version import __version__
from evalloss.errors import CheckpointError
from evalloss.io.hashing import sha256_of
from evalloss.report import Provenance
from evalloss.sources.base import changed

if TYPE_CHECKING:
    import torch

    from evalloss.sources import DataSource


def collect(
    *,
    checkpoints: Sequence[str],
    source: DataSource,
    device: torch.device,
    hashed: bool = True,
    folders: Mapping[str, Sequence[str]] | None = None,
) -> Provenance:
    """The provenance of a run over ``source`` with ``checkpoints`` (every file) on
    ``device``; each of the ``folders`` (a model folder -> its files) also gets one hash, of
    its manifest (`manifest`)."""
    import torch

    sha256: dict[str, str] | None = None
    if hashed:
        sha256 = dict(source.sha256())
        if source.stamp() != source.opened:  # under torchrun rank 0 hashes after the pass
            raise changed(source.path)
        for path in checkpoints:
            sha256[path] = _checkpoint_sha256(path)
        for folder, files in (folders or {}).items():
            sha256[folder] = manifest(folder, {f: sha256[f] for f in files})
    return Provenance(
        evalloss=__version__,
        python=platform.python_version(),
        torch=torch.__version__,
        platform=platform.platform(terse=True),
        device=str(device),
        device_name=_device_name(device),
        threads=torch.get_num_threads(),
        sha256=sha256,
    )


def manifest(folder: str, hashes: Mapping[str, str]) -> str:
    """One hash for a model folder: the sha256 of its files' ``sha256sum`` lines (``<hex>  <name
    in the folder>``, sorted by name), so ``sha256sum config.json model.safetensors ... |
    sha256sum`` in the folder, names in sorted order, gives the same."""
    lines = sorted((str(Path(f).relative_to(folder)), h) for f, h in hashes.items())
    text = "".join(f"{h}  {name}\n" for name, h in lines)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checkpoint_sha256(path: str) -> str:
    try:
        return sha256_of(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read to hash it ({exc.strerror or exc})", path=path) from exc


def _device_name(device: torch.device) -> str:
    """The accelerator's or CPU's model name, as the machine reports it."""
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return "Apple MPS"
    cpuinfo = Path("/proc/cpuinfo")
    if sys.platform.startswith("linux") and cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
