"""The pipeline stage commands: one per DVC stage, same name as its stage module.

Each command imports its stage module inside the function (``shipa train fraud`` imports only
``pipelines.stages.train.fraud``), so ``shipa --help`` stays fast. Every path a stage writes follows the command's
options; without ``--params`` and without ./params.yaml the built-in defaults of :mod:`pipelines.config` apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.common import (
    InterimOpt,
    ModelArg,
    ModelName,
    ModelsOpt,
    ParamsOpt,
    ProcessedOpt,
    ProgressOpt,
    RootOpt,
    TrackingUriOpt,
    deprecated_alias,
    guard,
    params_file,
    print_summary,
)
from pipelines.config import (
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


def synthesize(
    out: Annotated[Path, typer.Option("--out", help="folder to write the raw export into")] = Path("data/raw"),
    params: ParamsOpt = None,
    n_patients: Annotated[int | None, typer.Option("--n-patients", help="override synthesize.n_patients")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="override synthesize.seed")] = None,
    progress: ProgressOpt = True,
) -> None:
    """Generate the built-in synthetic national cohort (FHIR R4, DICOM, audit findings, manifests) into OUT.

    Reads the `synthesize` section of the params file. The same seed and params give byte-identical output.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(SynthesizeParams, "synthesize", params_file(params))
        from pipelines.stages import synthesize as stage

        overrides = {k: v for k, v in {"n_patients": n_patients, "seed": seed}.items() if v is not None}
        if overrides:
            cfg = SynthesizeParams.model_validate({**cfg.model_dump(), **overrides})
        return stage.run(cfg, out, progress=progress)

    print_summary(guard(go))


def ingest(
    ctx: typer.Context,
    input_dir: Annotated[Path, typer.Option("--input", help="raw export: FHIR NDJSON/Bundles and DICOM")] = Path(
        "data/raw"
    ),
    out: Annotated[Path, typer.Option("--out", help="folder for tables, images, quarantine")] = Path("data/interim"),
    params: ParamsOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", help="override ingest.workers (0 = cores)")] = None,
    progress: ProgressOpt = True,
    output: Annotated[Path | None, typer.Option("--output", hidden=True, help="deprecated: --out")] = None,
) -> None:
    """Validate, de-identify and flatten a FHIR R4 + DICOM export into Parquet tables, quarantining bad records.

    The pseudonymisation key comes from the environment variable SHIPA_PSEUDONYM_KEY. Without it, the documented
    demo key is used, which is accepted only for the built-in synthetic cohort.
    """
    out = deprecated_alias(ctx, "out", "--out", "--output", output, out)

    def go() -> dict[str, Any]:
        cfg = load_section(IngestParams, "ingest", params_file(params))
        from pipelines.stages import ingest as stage

        if workers is not None:
            cfg = IngestParams.model_validate({**cfg.model_dump(), "workers": workers})
        return stage.run(cfg, input_dir, out, key=get_settings().pseudonym_key, progress=progress)

    report = guard(go)
    print_summary(
        {
            "resources": report["fhir"]["resources"],
            "dicom": report["dicom"],
            "quarantined_total": report["quarantined_total"],
            "report": str(out / "ingest_report.json"),
        }
    )


def features(
    model: ModelArg,
    interim: InterimOpt = Path("data/interim"),
    processed: ProcessedOpt = Path("data/processed"),
    params: ParamsOpt = None,
    decisions: Annotated[
        Path | None,
        typer.Option(
            "--decisions",
            help="fraud: investigators' decisions (`shipa fraud decide`), labels that override the audit findings "
            "[default: decisions/fraud_decisions.csv if present]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Build the model-ready dataset and its saved split under PROCESSED/MODEL from the ingest tables.

    Reads `features.<model>` of the params file. A diagnosis split_file of source Patient.ids or IINs is
    pseudonymised with SHIPA_PSEUDONYM_KEY, the key ingest used (the demo key when unset). Fraud labels come from
    the Fund's audit findings, overridden claim by claim by the investigators' latest decisions.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(FeaturesParams, "features", params_file(params))
        out = processed / model.value
        if model is ModelName.diagnosis:
            from pipelines.stages.features import diagnosis

            if decisions is not None:
                from pipelines.errors import InputError

                raise InputError("--decisions applies to `shipa features fraud` only")
            return diagnosis.run(cfg.diagnosis, interim, out, key=get_settings().pseudonym_key)
        from pipelines.stages.features import fraud

        return fraud.run(cfg.fraud, interim, out, decisions=decisions)

    print_summary(guard(go))


def train(
    model: ModelArg,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    params: ParamsOpt = None,
    tracking_uri: TrackingUriOpt = None,
    progress: ProgressOpt = True,
) -> None:
    """Train MODEL on its processed dataset into MODELS/MODEL/train (diagnosis: one model per mode).

    Reads `train.<model>`. A killed run resumes from its last epoch checkpoint (MODELS/MODEL/.checkpoints).
    """

    def go() -> dict[str, Any]:
        cfg = load_section(TrainParams, "train", params_file(params))
        data, out = processed / model.value, models / model.value / "train"
        if model is ModelName.diagnosis:
            from pipelines.stages.train import diagnosis

            return diagnosis.run(cfg.diagnosis, data, out, progress=progress, tracking_uri=tracking_uri)
        from pipelines.stages.train import fraud

        return fraud.run(cfg.fraud, data, out, tracking_uri=tracking_uri)

    print_summary(guard(go))


def evaluate(
    model: ModelArg,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    raw: Annotated[Path, typer.Option("--raw", help="raw export (fraud: the cohort's ground truth)")] = Path(
        "data/raw"
    ),
    interim: InterimOpt = Path("data/interim"),
    params: ParamsOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Evaluate MODEL on its test split: metrics with CIs, calibration, subgroups or review-queue metrics, plots.

    Writes MODELS/MODEL/metrics.json (DVC metrics) and MODELS/MODEL/eval/. Reads `evaluate`.
    """

    def go() -> dict[str, Any]:
        cfg = load_section(EvaluateParams, "evaluate", params_file(params))
        root = models / model.value
        args = (cfg, processed / model.value, root / "train", root / "eval", root / "metrics.json")
        if model is ModelName.diagnosis:
            from pipelines.stages.evaluate import diagnosis

            metrics = diagnosis.run(*args, tracking_uri=tracking_uri)
        else:
            from pipelines.stages.evaluate import fraud

            key = get_settings().pseudonym_key
            metrics = fraud.run(*args, raw=raw, tables=interim / "tables", key=key, tracking_uri=tracking_uri)
        return {"metrics": str(root / "metrics.json"), "comparison": metrics.get("comparison")}

    print_summary(guard(go))


def register(
    model: ModelArg,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    params: ParamsOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Log MODEL as an MLflow pyfunc, register it (alias challenger), run the promotion gate, write its card.

    Reads `register.<model>`. Writes MODELS/MODEL/registered.json and model_card.{json,md}; `champion` moves
    only when every gate check passes.
    """

    def go() -> dict[str, Any]:
        path = params_file(params)
        cfg = load_section(RegisterParams, "register", path)
        data, root = processed / model.value, models / model.value
        if model is ModelName.diagnosis:
            from pipelines.stages.register import diagnosis

            return diagnosis.run(cfg.diagnosis, data, root, tracking_uri=tracking_uri)
        from pipelines.stages.register import fraud

        options = load_section(FeaturesParams, "features", path).fraud.model_dump(mode="json", exclude={"split"})
        return fraud.run(cfg.fraud, data, root, feature_options=options, tracking_uri=tracking_uri)

    print_summary(guard(go))


def results(root: RootOpt = Path(".")) -> None:
    """Print the headline numbers of the last pipeline run (ingest counts, test metrics with 95 % CIs)."""
    from pipelines.stages.results import summary_lines

    for line in summary_lines(root) or ["no results yet: run `make run` (dvc repro)"]:
        typer.echo(line)


def check_params(params: ParamsOpt = None) -> None:
    """Validate every section of the params file and print the effective values (built-in defaults without one)."""

    def go() -> dict[str, Any]:
        return {name: model.model_dump() for name, model in validate_all(params_file(params)).items()}

    print_summary(guard(go))


def mount(app: typer.Typer) -> None:
    """Add the stage commands to ``app`` in pipeline order."""
    for command in (synthesize, ingest, features, train, evaluate, register):
        app.command()(command)
    app.command()(results)
    app.command("check-params")(check_params)
