"""``shipa fraud ...``: the investigators' tools.

``worklist`` ranks a day's claims. ``decide`` records an investigator's decision on a claim (the next
``features@fraud`` run uses it as a label) and ``reveal`` maps a claim pseudonym back to the Fund's claim: both are
for investigators only and audited like a service request. The caller proves who they are with their service token
in the environment variable ``SHIPA_TOKEN`` (never an option: it would show in the shell history and in ``ps``),
checked against the service's token store (``SHIPA_SERVICE_*`` settings, or ``--database-url``); the role must be
investigator (admin passes, as in the service). Every run that reaches the command, refusals included, appends one
record to the service's prediction log, whose hash chain ``shipa audit verify`` checks. Libraries are imported
inside the commands, so mounting these costs ``shipa`` nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipelines.cli.common import (
    DatabaseUrlOpt,
    JsonOpt,
    ModelsOpt,
    ParamsOpt,
    ProcessedOpt,
    guard,
    params_file,
    print_summary,
)
from pipelines.errors import ShipaError

if TYPE_CHECKING:
    from pipelines.fraud.reveal import RevealedClaim
    from pipelines.predictionlog.entry import LogEntry
    from pipelines.predictionlog.log import AuditOutcome, PredictionLog

app = typer.Typer(help="Claims fraud: investigators' tools.", no_args_is_help=True)

TOKEN_ENV = "SHIPA_TOKEN"
# Who a refused caller was when no valid token named them (the log's token_name and role must not be empty).
ANONYMOUS = "unauthenticated"
NO_ROLE = "none"
# The FHIR ActReason an investigator's command is recorded under, whoever calls it.
PURPOSE = "FRAUD"
DEFAULT_DECISIONS_OPTION = Path("decisions/fraud_decisions.csv")  # = pipelines.fraud.decisions.DEFAULT_DECISIONS

DecisionsOpt = Annotated[
    Path, typer.Option("--decisions", help="the investigators' decisions file (append-only CSV, in git)")
]


class AccessRefusedError(ShipaError):
    """The caller has no valid investigator token; exits 77 (EX_NOPERM)."""

    exit_code = 77


@app.command("worklist")
def worklist(
    date: Annotated[datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="the day whose claims to review")],
    k: Annotated[int, typer.Option("--k", min=1, help="cases the investigators can review that day")] = 20,
    processed: ProcessedOpt = Path("data/processed"),
    models: ModelsOpt = Path("models"),
    out: Annotated[Path | None, typer.Option("--out", help="folder for the worklist files", show_default=False)] = None,
    cutoff: Annotated[
        float | None,
        typer.Option(
            "--cutoff", min=0.0, max=1.0, help="lowest probability the model lists (default: the moderate band)"
        ),
    ] = None,
    params: ParamsOpt = None,
) -> None:
    """Write the worklist of DATE: every rule hit, then at most K claims the model scores at or above the cut-off,
    each with its probability, risk band, money at stake and reasons (kk/ru/en).

    Writes OUT/worklist-DATE.{parquet,csv} and the per-provider summary OUT/worklist-DATE-providers.{parquet,csv},
    with pseudonymous ids only (default OUT: MODELS/fraud/worklists). The risk bands are register.fraud.risk_bands.
    """

    def go() -> dict[str, Any]:
        from pipelines.config import RegisterParams, load_section
        from pipelines.stages import worklist as stage

        bands = load_section(RegisterParams, "register", params_file(params)).fraud.risk_bands
        folder = out if out is not None else models / "fraud" / "worklists"
        return stage.run(
            date.date(),
            k,
            processed / "fraud",
            models / "fraud" / "train" / "model",
            folder,
            cutoff=cutoff,
            bands=bands,
        )

    print_summary(guard(go))


@dataclass
class _Audit:
    """One investigator command's audit record, appended once the outcome is known."""

    log: PredictionLog
    command: str
    input_sha256: str
    started: float
    token_name: str = ANONYMOUS
    role: str = NO_ROLE

    def record(self, output: dict[str, Any], outcome: AuditOutcome | None = None, desc: str | None = None) -> LogEntry:
        from importlib.metadata import PackageNotFoundError, version

        from pipelines.predictionlog.log import AuditOutcome, PredictionRecord

        try:
            shipa_version = version("shipa")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
            shipa_version = "unknown"
        return self.log.append(
            PredictionRecord(
                token_name=self.token_name,
                role=self.role,
                endpoint=f"shipa fraud {self.command}",
                # Not a model: the command answered. Its own name keeps it out of every model's usage counts.
                model_name=f"fraud-{self.command}",
                model_version=shipa_version,
                model_alias="cli",
                input_sha256=self.input_sha256,
                output=output,
                latency_ms=(time.perf_counter() - self.started) * 1000,
                outcome=outcome or AuditOutcome.success,
                purpose_of_use=PURPOSE,
                outcome_desc=desc,
            )
        )

    def refuse(self, reason: str, message: str) -> AccessRefusedError:
        """Record a refusal (``reason``: a short code in the output) and return the error to raise."""
        from pipelines.predictionlog.log import AuditOutcome

        self.record({"refused": reason}, AuditOutcome.minor_failure, message)
        return AccessRefusedError(message)

    def invalid(self, exc: ShipaError) -> ShipaError:
        """Record a refusal of malformed input (the message never repeats the input) and return ``exc``."""
        from pipelines.predictionlog.log import AuditOutcome

        self.record({"refused": "invalid input"}, AuditOutcome.minor_failure, str(exc)[:500])
        return exc


def _request_hash(command: str, request: dict[str, Any]) -> str:
    from pipelines.predictionlog.log import compact_json, sha256_hex

    return sha256_hex(compact_json({"command": f"shipa fraud {command}", **request}).encode("utf-8"))


@contextlib.contextmanager
def _investigator(command: str, request: dict[str, Any], database_url: str | None) -> Iterator[_Audit]:
    """The audit of an investigator-only command, after the caller's token was checked.

    Opens the service database (tokens and prediction log), authenticates ``SHIPA_TOKEN`` and requires the
    investigator role; a refusal is recorded, then raised as :class:`AccessRefusedError`.

    Raises:
        ServiceConfigError: invalid ``SHIPA_SERVICE_*`` settings (nothing can be recorded then).
        InputError: the service database (an SQLite file) does not exist.
        AccessRefusedError: no token, an unknown or revoked one, or one of another role.
    """
    from sqlalchemy.engine import make_url

    from pipelines.errors import InputError
    from pipelines.predictionlog.db import make_engine
    from pipelines.predictionlog.log import PredictionLog
    from pipelines.predictionlog.roles import Role, role_allows
    from pipelines.service.settings import load_service_settings
    from pipelines.service.tokens import TokenStore

    started = time.perf_counter()
    settings = load_service_settings(**({"database_url": database_url} if database_url else {}))
    url = make_url(settings.database_url)
    file_backed = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if file_backed and not Path(str(url.database)).expanduser().is_file():
        raise InputError(
            f"no service database at {url.render_as_string(hide_password=True)}: set SHIPA_SERVICE_DATABASE_URL "
            "(or --database-url) to the service's; tokens are made with `shipa tokens add`"
        )
    engine = make_engine(settings.database_url)
    try:
        tokens = TokenStore(engine, settings.pepper())
        audit = _Audit(
            PredictionLog(
                engine,
                observer=settings.service_name,
                key=settings.audit_key_bytes(),
                checkpoints=settings.audit_checkpoints,
            ),
            command,
            _request_hash(command, request),
            started,
        )
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise audit.refuse("no token", f"set {TOKEN_ENV} to your investigator token (from `shipa tokens add`)")
        info = tokens.authenticate(token)
        if info is None:
            raise audit.refuse("unknown or revoked token", f"the token in {TOKEN_ENV} is unknown or revoked")
        audit.token_name, audit.role = info.name, info.role.value
        if not role_allows(info.role, (Role.investigator,)):
            raise audit.refuse(
                "role",
                f"token {info.name!r} has the {info.role.value} role; `shipa fraud {command}` needs the investigator "
                "role",
            )
        yield audit
    finally:
        engine.dispose()


@app.command("decide")
def decide(
    claim: Annotated[str, typer.Argument(help="the claim's pseudonymous id, as the worklist shows it (32 hex digits)")],
    confirmed: Annotated[bool, typer.Option("--confirmed", help="the claim is fraud (label 1)")] = False,
    cleared: Annotated[bool, typer.Option("--cleared", help="the claim is not fraud (label 0)")] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="the investigator's name (required)", show_default=False)
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="a one-line note", show_default=False)] = None,
    decisions: DecisionsOpt = DEFAULT_DECISIONS_OPTION,
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Record an investigator's decision on CLAIM: --confirmed (fraud) or --cleared (not fraud).

    Needs an investigator token in SHIPA_TOKEN. The decision is appended to DECISIONS and becomes the claim's
    label in the next `shipa features fraud` run (the latest decision per claim wins over the audit findings).
    Every call, refused or not, is recorded in the service's prediction log (exit 77 when refused).
    """
    request = {"claim_id": claim, "confirmed": confirmed, "cleared": cleared, "by": by, "note": note}

    def go() -> dict[str, Any]:
        from pipelines.errors import InputError
        from pipelines.fraud.decisions import Decision, append_decision, new_decision
        from pipelines.predictionlog.log import AuditOutcome

        with _investigator("decide", request, database_url) as audit:
            try:
                if confirmed == cleared:
                    raise InputError("give exactly one of --confirmed and --cleared")
                if by is None:
                    raise InputError("--by NAME is required: the investigator who decided")
                record = new_decision(claim, Decision.confirmed if confirmed else Decision.cleared, by, note=note)
            except InputError as exc:
                raise audit.invalid(exc) from None
            done = {"claim_id": record.claim_id, "decision": record.decision.value, "by": record.by}
            try:
                append_decision(decisions, record)
            except (InputError, OSError) as exc:
                text = str(exc) if isinstance(exc, InputError) else f"{decisions}: cannot write: {exc.strerror}"
                audit.record({**done, "written": False}, AuditOutcome.serious_failure, text[:500])
                raise InputError(text) from None
            decided_at = record.row()[3]
            entry = audit.record({**done, "decided_at": decided_at, "written": True})
        return {**done, "decided_at": decided_at, "file": str(decisions), "audit_event": entry.seq}

    print_summary(guard(go))


def _reveal_lines(found: dict[str, list[RevealedClaim]]) -> list[str]:
    lines = []
    for pseudonym, matches in found.items():
        for m in matches:
            numbers = ", ".join(m.claim_numbers) or "-"
            lines.append(f"{pseudonym}\tclaim {m.claim_id}\tnumber {numbers}\t{m.source} {m.location}")
    return lines


@app.command("reveal")
def reveal(
    claims: Annotated[list[str], typer.Argument(help="claim pseudonyms, as the worklist shows them (32 hex digits)")],
    raw: Annotated[Path, typer.Option("--raw", help="the Fund's raw export that ingest read")] = Path("data/raw"),
    database_url: DatabaseUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Map claim pseudonyms back to the Fund's claims: claim id, claim number and the raw file it came from.

    Needs an investigator token in SHIPA_TOKEN and the pseudonymisation key ingest used (SHIPA_PSEUDONYM_KEY; the
    demo key when unset, built-in cohort only). The answer goes to stdout only; the prediction log records the
    pseudonyms asked for and found, never the revealed ids. Exits 1 when a pseudonym matches no claim.
    """
    request = {"claim_ids": list(claims), "raw": str(raw)}

    def go() -> tuple[dict[str, list[RevealedClaim]], list[str]]:
        from pipelines.config import get_settings
        from pipelines.fhir.pseudonym import Pseudonymizer
        from pipelines.fraud.decisions import check_claim_id
        from pipelines.fraud.reveal import reveal_claims
        from pipelines.predictionlog.log import AuditOutcome
        from pipelines.stages.ingest import resolve_key

        with _investigator("reveal", request, database_url) as audit:
            try:
                wanted = [check_claim_id(c) for c in claims]
                key = resolve_key(get_settings().pseudonym_key, raw)
                found = reveal_claims(raw, wanted, Pseudonymizer(key))
            except ShipaError as exc:
                raise audit.invalid(exc) from None
            missing = [p for p, m in found.items() if not m]
            output = {"claim_ids": list(found), "found": [p for p, m in found.items() if m], "not_found": missing}
            desc = f"{len(missing)} of {len(found)} pseudonyms match no claim" if missing else None
            # Recorded before anything is shown: an answer that could not be audited is never given.
            audit.record(output, AuditOutcome.minor_failure if missing else None, desc)
        return found, missing

    found, missing = guard(go)
    if as_json:
        typer.echo(json.dumps({p: [asdict(m) for m in matches] for p, matches in found.items()}, indent=2))
    else:
        for line in _reveal_lines(found):
            typer.echo(line)
    if missing:
        typer.echo(
            f"shipa: error: no claim in {raw} has the pseudonym {', '.join(missing)} (a mistyped id, another export, "
            "or a SHIPA_PSEUDONYM_KEY other than the one ingest used)",
            err=True,
        )
        raise typer.Exit(1)
