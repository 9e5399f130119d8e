"""What every process of a cmva TrainJob runs (cmva.trainjob): one training stage, under torchrun.

$ torchrun -m cmva.trainjob_node train-agent '{"kwargs": {"value": "care", ...},
      "inputs": {"base": "s3://cmva/trainjobs/inputs/…", "rewards": "s3://cmva/trainjobs/inputs/…"},
      "output": "s3://cmva/trainjobs/<job>/output"}'

Each process fetches the inputs from S3 (verified against their manifests; processes of a node share one cached
copy), runs the stage as the single-node component does (`cmva.kfp_ops.run_stage`) into a scratch directory, and rank 0
publishes that directory as the output. The TRL trainers inside run data-parallel over every process (torchrun's
RANK / WORLD_SIZE / MASTER_ADDR, from the PET_* variables Kubeflow Trainer sets).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def _split(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix/name` → (store URI, artifact name)."""
    store, _, name = uri.rstrip("/").rpartition("/")
    if not uri.startswith("s3://") or not name:
        raise ValueError(f"not an s3:// artifact URI: {uri!r}")
    return store, name


def run(stage: str, spec: dict, rank: int) -> None:
    """Run `stage` with `spec` (kwargs, inputs, output); rank 0 publishes the output."""
    from cmva import kfp_ops
    from cmva.stages import DISTRIBUTED
    from cmva.storage import S3Store

    if stage not in DISTRIBUTED:
        raise ValueError(f"stage {stage!r} does not run in a TrainJob; stages that do: {', '.join(DISTRIBUTED)}")
    paths = {k: str(S3Store(_split(u)[0]).get(_split(u)[1])) for k, u in spec["inputs"].items()}
    with tempfile.TemporaryDirectory(prefix=f"cmva-{stage}-") as out:
        kfp_ops.run_stage(stage, out, paths, **spec["kwargs"])
        if rank == 0:
            store, name = _split(spec["output"])
            S3Store(store).publish(Path(out), name, overwrite=True)
            log.info("published %s", spec["output"])


def main(argv: list[str] | None = None) -> None:
    """`<stage> <spec JSON>`, as `cmva.trainjob.launch_stage` writes them into the TrainJob."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit("usage: torchrun -m cmva.trainjob_node <stage> <spec JSON>")
    run(args[0], json.loads(args[1]), int(os.environ.get("RANK", "0")))


if __name__ == "__main__":
    main()
