"""The ``shipa`` command line: one command per pipeline stage (same name as its DVC stage and module)."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pipelines.config import (
    DEFAULT_PARAMS,
    ConfigError,
    EvaluateParams,
    FeaturesParams,
    IngestParams,
    RegisterParams,
    SynthesizeParams,
    TrainParams,
    get_settings,
    load_section,
    validate_all,
)
from pipelines.errors import ShipaError
from pipelines.logging_setup import configure_logging

log = logging.getLogger("shipa")

app = typer.Typer(
    name="shipa",
    help="Shipa: FHIR R4 + DICOM to validated, de-identified tables, models, registry and service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params file with one section per stage")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")]


def _guard(fn: Callable[[], T]) -> T:
    """Run a stage; expected errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        return fn()
    except (ConfigError, ShipaError) as exc:
        typer.echo(f"shipa: error: {exc}", err=True)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None
    except KeyboardInterrupt:
        typer.echo("shipa: interrupted", err=True)
        raise typer.Exit(130) from None


@app.callback()
def _main() -> None:
    """Configure logging and the process environment shared by every command."""
    configure_logging(get_settings().log_level)
    # Sovereign by default: no telemetry leaves the machine.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _print_summary(summary: dict[str, Any]) -> None:
    typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


@app.command()
def synthesize(
    out: Annotated[Path, typer.Option("--out", help="folder to write the raw export into")] = Path("data/raw"),
    params: ParamsOpt = DEFAULT_PARAMS,
    n_patients: Annotated[int | None, typer.Option("--n-patients", help="override synthesize.n_patients")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override synthesize.seed")] = None,
    progress: ProgressOpt = True,
) -> None:
    """Generate the built-in synthetic national cohort (FHIR R4, DICOM, audit findings, manifests) into OUT.

    Reads the `synthesize` section of the params file. The same seed and params give byte-identical output.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(SynthesizeParams, "synthesize", params)
        from pipelines.stages import synthesize as stage

        overrides = {k: v for k, v in {"n_patients": n_patients, "seed": seed}.items() if v is not None}
        if overrides:
            cfg = SynthesizeParams.model_validate({**cfg.model_dump(), **overrides})
        return stage.run(cfg, out, progress=progress)

    _print_summary(_guard(go))


@app.command()
def ingest(
    input_dir: Annotated[Path, typer.Option("--input", help="raw export: FHIR NDJSON/Bundles and DICOM")] = Path(
        "data/raw"
    ),
    output_dir: Annotated[Path, typer.Option("--output", help="folder for tables, images, quarantine")] = Path(
        "data/interim"
    ),
    params: ParamsOpt = DEFAULT_PARAMS,
    workers: Annotated[int | None, typer.Option("--workers", help="override ingest.workers (0 = cores)")] = None,
    progress: ProgressOpt = True,
) -> None:
    """Validate, de-identify and flatten a FHIR R4 + DICOM export into Parquet tables, quarantining bad records.

    The pseudonymisation key comes from the environment variable SHIPA_PSEUDONYM_KEY. Without it, the documented
    demo key is used, which is accepted only for the built-in synthetic cohort.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(IngestParams, "ingest", params)
        from pipelines.stages import ingest as stage

        if workers is not None:
            cfg = IngestParams.model_validate({**cfg.model_dump(), "workers": workers})
        return stage.run(cfg, input_dir, output_dir, key=get_settings().pseudonym_key, progress=progress)

    report = _guard(go)
    _print_summary(
        {
            "resources": report["fhir"]["resources"],
            "dicom": report["dicom"],
            "quarantined_total": report["quarantined_total"],
            "report": str(output_dir / "ingest_report.json"),
        }
    )


class ModelName(StrEnum):
    """The models a per-model stage runs for (the DVC ``foreach`` items)."""

    diagnosis = "diagnosis"
    fraud = "fraud"


ModelArg = Annotated[ModelName, typer.Argument(help="which model: diagnosis or fraud")]
InterimOpt = Annotated[Path, typer.Option("--interim", help="ingest output folder")]
ProcessedOpt = Annotated[Path, typer.Option("--processed", help="features output root (one folder per model)")]
ModelsOpt = Annotated[Path, typer.Option("--models", help="models root (one folder per model)")]


@app.command()
def features(
    model: ModelArg,
    interim: InterimOpt = Path("data/interim"),
    processed: ProcessedOpt = Path("data/processed"),
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Build the model-ready dataset and its saved split under PROCESSED/MODEL from the ingest tables.

    Reads `features.<model>` of the params file.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(FeaturesParams, "features", params)
        from pipelines.stages import features as stage

        if model is ModelName.diagnosis:
            return stage.run_diagnosis(cfg.diagnosis, interim, processed / model.value)
        return stage.run_fraud(cfg.fraud, interim, processed / model.value)

    _print_summary(_guard(go))


@app.command()
def train(
    model: ModelArg,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    params: ParamsOpt = DEFAULT_PARAMS,
    progress: ProgressOpt = True,
) -> None:
    """Train MODEL on its processed dataset into MODELS/MODEL/train (diagnosis: one model per mode).

    Reads `train.<model>`. A killed run resumes from its last epoch checkpoint.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(TrainParams, "train", params)
        from pipelines.stages import train as stage

        if model is ModelName.diagnosis:
            return stage.run_diagnosis(
                cfg.diagnosis, processed / model.value, models / model.value / "train", progress=progress
            )
        return stage.run_fraud(cfg.fraud, processed / model.value, models / model.value / "train")

    _print_summary(_guard(go))


@app.command()
def evaluate(
    model: ModelArg,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    raw: Annotated[Path, typer.Option("--raw", help="raw export (fraud: the cohort's ground truth)")] = Path(
        "data/raw"
    ),
    interim: InterimOpt = Path("data/interim"),
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Evaluate MODEL on its test split: metrics with CIs, calibration, subgroups or review-queue metrics, plots.

    Writes MODELS/MODEL/metrics.json (DVC metrics) and MODELS/MODEL/eval/. Reads `evaluate`.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(EvaluateParams, "evaluate", params)
        from pipelines.stages import evaluate as stage

        root = models / model.value
        args = (cfg, processed / model.value, root / "train", root / "eval", root / "metrics.json")
        if model is ModelName.diagnosis:
            metrics = stage.run_diagnosis(*args)
        else:
            key = get_settings().pseudonym_key
            metrics = stage.run_fraud(*args, raw=raw, tables=interim / "tables", key=key)
        return {"metrics": str(root / "metrics.json"), "comparison": metrics.get("comparison")}

    _print_summary(_guard(go))


@app.command()
def register(
    model: ModelArg,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Log MODEL as an MLflow pyfunc, register it (alias challenger), run the promotion gate, write its card.

    Reads `register.<model>`. Writes MODELS/MODEL/registered.json and model_card.{json,md}; `champion` moves
    only when every gate check passes.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(RegisterParams, "register", params)
        options = load_section(FeaturesParams, "features", params).fraud.model_dump(mode="json", exclude={"split"})
        from pipelines.stages import register as stage

        return stage.run(model.value, cfg, processed=processed, models=models, feature_options=options)

    _print_summary(_guard(go))


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model, e.g. shipa-fraud")],
    version: Annotated[str, typer.Argument(help="the version to make champion")],
    person: Annotated[str, typer.Option("--person", help="who takes responsibility (recorded)")],
    reason: Annotated[str, typer.Option("--reason", help="why the gate is overridden (recorded)")],
) -> None:
    """Make VERSION the champion regardless of the gate, recorded as an override by a named person.

    The person, reason and time go to the version's tags and description and to a gate report artifact.
    """

    def go() -> dict[str, Any]:
        from pipelines.config import mlflow_tracking_uri
        from pipelines.tracking.promotion import override

        return override(name, version, tracking_uri=mlflow_tracking_uri(), person=person, reason=reason)

    _print_summary(_guard(go))


@app.command()
def reproduce(
    uri: Annotated[str, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>")],
    run: Annotated[bool, typer.Option("--run", help="rebuild it now in a scratch git worktree")] = False,
    workdir: Annotated[Path, typer.Option("--workdir", help="where --run puts the worktree")] = Path("reproductions"),
) -> None:
    """Print the git and DVC commands that rebuild a registered model version (with --run, execute them).

    The commit, data hashes and stage come from the version's MLflow lineage tags; --run checks the rebuilt data
    hashes against them and prints the reproduced metrics file.
    """

    def go() -> dict[str, Any]:
        from pipelines.config import mlflow_tracking_uri
        from pipelines.tracking.reproduce import reproduction_plan, run_reproduction

        tracking_uri = mlflow_tracking_uri()
        if not run:
            plan = reproduction_plan(uri, tracking_uri=tracking_uri)
            return {"commands": plan.commands, "commit": plan.commit, "data": plan.data, "notes": plan.notes}
        done = run_reproduction(uri, workdir=workdir, tracking_uri=tracking_uri)
        return {
            "commands": done.plan.commands,
            "worktree": str(done.worktree),
            "metrics": [str(p) for p in done.metrics_paths],
            "data_mismatches": done.data_mismatches,
            "log": str(done.log_file),
        }

    _print_summary(_guard(go))


fraud_app = typer.Typer(help="Claims fraud: investigators' tools.", no_args_is_help=True)
app.add_typer(fraud_app, name="fraud")


@fraud_app.command("worklist")
def fraud_worklist(
    date: Annotated[datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="the day whose claims to review")],
    k: Annotated[int, typer.Option("--k", min=1, help="cases the investigators can review that day")] = 20,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    out: Annotated[Path, typer.Option("--out", help="folder for the worklist files")] = Path("models/fraud/worklists"),
) -> None:
    """Write the ranked worklist of DATE: claim, provider, score, money at stake and reasons (kk/ru/en).

    Writes OUT/worklist-DATE.parquet and .csv with pseudonymous ids only.
    """

    def go() -> dict[str, Any]:
        from pipelines.stages import worklist as stage

        return stage.run(date.date(), k, processed / "fraud", models / "fraud" / "train" / "model", out)

    _print_summary(_guard(go))


@app.command()
def results(root: Annotated[Path, typer.Option("--root", help="project folder")] = Path(".")) -> None:
    """Print the headline numbers of the last pipeline run (ingest counts, test metrics with 95 % CIs)."""
    from pipelines.stages.results import summary_lines

    for line in summary_lines(root) or ["no results yet: run `make run` (dvc repro)"]:
        typer.echo(line)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="override SHIPA_SERVICE_HOST")] = None,
    port: Annotated[int | None, typer.Option("--port", help="override SHIPA_SERVICE_PORT")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="override SHIPA_SERVICE_TRACKING_URI")
    ] = None,
) -> None:
    """Serve the champion models (diagnosis, fraud) over HTTP: FHIR in and out, tokens and roles, audit log.

    Settings come from SHIPA_SERVICE_* (see pipelines/service/README.md); binds 127.0.0.1 unless told otherwise.
    """
    from pipelines.service.assemble import serve as run_service  # FastAPI is imported only when serving

    run_service(host=host, port=port, tracking_uri=tracking_uri)


def _mount_service_commands() -> None:
    """``shipa tokens ...`` and ``shipa audit verify`` (they read the same SHIPA_SERVICE_* settings as the service)."""
    from pipelines.audit.cli import audit_report, audit_trace
    from pipelines.service.cli import audit_verify, tokens_app

    app.add_typer(tokens_app, name="tokens")
    audit_app = typer.Typer(
        help="Auditors: verify the audit log, report on a model version, trace a prediction.", no_args_is_help=True
    )
    audit_app.command("verify")(audit_verify)
    audit_app.command("report")(audit_report)
    audit_app.command("trace")(audit_trace)
    app.add_typer(audit_app, name="audit")


_mount_service_commands()


@app.command("check-params")
def check_params(params: ParamsOpt = DEFAULT_PARAMS) -> None:
    """Validate every section of the params file and print the effective values."""
    sections = _guard(lambda: validate_all(params))
    _print_summary({name: model.model_dump() for name, model in sections.items()})


def main() -> None:  # pragma: no cover - entry point used by `python -m pipelines.cli`
    app(prog_name="shipa")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
