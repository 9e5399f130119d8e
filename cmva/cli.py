"""`cmva`: one subcommand per stage, plus `run` (the whole pipeline).

$ cmva import-base --out runs/cpu/base
$ cmva check-data
$ cmva run --profile smoke --out runs/smoke
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

ValuesOpt = Annotated[
    str | None, typer.Option(help="comma-separated moral values (default: care,fairness,loyalty,authority,sanctity)")
]


def _values(values: str | None):
    from cmva.values import resolve_values

    return resolve_values(values.split(",") if values else None)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command("import-base")
def import_base_cmd(
    out: Annotated[Path, typer.Option(help="directory for the safetensors checkpoint")],
    source: Annotated[
        str | None, typer.Option(help="a .gguf file, a Hugging Face directory or an s3:// URI (default: SmolLM2)")
    ] = None,
    tiny: Annotated[bool, typer.Option(help="write a tiny random model (tests, smoke profile) instead")] = False,
) -> None:
    """Import a base model into a plain safetensors checkpoint (GGUF-loaded models refuse training)."""
    from cmva.models import import_base, tiny_model

    path = tiny_model(out) if tiny else import_base(out, source)
    typer.echo(f"base model checkpoint: {path}")


@app.command("check-data")
def check_data_cmd(
    mic: Annotated[Path | None, typer.Option(help="MIC-schema CSV (default: bundled sample)")] = None,
    socialchem: Annotated[Path | None, typer.Option(help="SocialChem-schema TSV (default: bundled sample)")] = None,
    values: ValuesOpt = None,
) -> None:
    """Validate the data files and print what would be used per value and split."""
    from cmva.data import SAMPLE_MIC, SAMPLE_SOCIALCHEM, DataError, load_mic, load_socialchem

    vals = _values(values)
    try:
        mic_ds, mic_rep = load_mic(mic or SAMPLE_MIC, vals)
        sc_ds, sc_rep = load_socialchem(socialchem or SAMPLE_SOCIALCHEM)
    except DataError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(mic_rep.summary())
    typer.echo(sc_rep.summary())
    for v in vals:
        mic_n = sum(v.name in m for m in mic_ds["moral"])
        rows = [lab for lab, f in zip(sc_ds["label"], sc_ds["foundations"], strict=True) if v.name in f]
        neg = rows.count(0)
        typer.echo(
            f"{v.name:10s} MIC rows {mic_n:4d} | SocialChem rows {len(rows):5d} ({neg} negative, {len(rows) - neg} positive)"
        )
    splits = {s: mic_ds["split"].count(s) for s in sorted(set(mic_ds["split"]))}
    typer.echo(f"MIC splits: {splits}; aggregator targets: {sum(bool(t) for t in mic_ds['target'])}")


if __name__ == "__main__":
    app()
