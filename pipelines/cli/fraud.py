"""``shipa fraud ...``: the investigators' tools."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.common import ModelsOpt, ProcessedOpt, guard, print_summary

app = typer.Typer(help="Claims fraud: investigators' tools.", no_args_is_help=True)


@app.command("worklist")
def worklist(
    date: Annotated[datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="the day whose claims to review")],
    k: Annotated[int, typer.Option("--k", min=1, help="cases the investigators can review that day")] = 20,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    out: Annotated[Path | None, typer.Option("--out", help="folder for the worklist files", show_default=False)] = None,
) -> None:
    """Write the ranked worklist of DATE: claim, provider, score, money at stake and reasons (kk/ru/en).

    Writes OUT/worklist-DATE.parquet and .csv with pseudonymous ids only (default OUT: MODELS/fraud/worklists).
    """

    def go() -> dict[str, Any]:
        from pipelines.stages import worklist as stage

        folder = out if out is not None else models / "fraud" / "worklists"
        return stage.run(date.date(), k, processed / "fraud", models / "fraud" / "train" / "model", folder)

    print_summary(guard(go))
