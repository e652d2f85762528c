"""``shipa watch``: poll the hospital PACS for new chest radiograph studies and have the service score each once.

Every ``--interval`` seconds a QIDO-RS search lists the studies with a CR or DX series (``--modality``), within
``--since``/``--until`` when given; each study not in the state file is sent to the service's
``POST /diagnosis/{task}/studies/{StudyInstanceUID}`` (which pulls it, scores it and stores the Structured
Report and the saliency capture back). The PACS is the service's (``SHIPA_SERVICE_DICOMWEB_*``); the service
token is ``SHIPA_WATCH_TOKEN`` (a clinician token). The state file (default
``<SHIPA_SERVICE_STATE_DIR>/watch-processed.json``, mode 0600) names studies by the SHA-256 of their UID, so a
study is processed once across restarts; ``--once`` makes a single pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from pydantic_settings import SettingsConfigDict

from pipelines.cli.common import guard, print_summary
from pipelines.errors import ShipaError
from pipelines.service.settings import DEFAULT_STATE_DIR, ENV_PREFIX, DicomWebSettings

log = logging.getLogger("shipa.watch")

TOKEN_ENV = "SHIPA_WATCH_TOKEN"
STATE_NAME = "watch-processed.json"


class WatchSettings(DicomWebSettings):
    """The PACS and the state folder of ``shipa watch`` (``SHIPA_SERVICE_*``; no service secret needed)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    state_dir: Path = DEFAULT_STATE_DIR


class WatchError(ShipaError):
    """``shipa watch`` cannot go on (no PACS or token configured, the token refused)."""


@dataclass
class PassSummary:
    """What one polling pass did."""

    found: int = 0
    scored: int = 0
    refused: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"found": self.found, "scored": self.scored, "refused": self.refused, "failed": self.failed}


def watch_pass(
    settings: WatchSettings,
    state: Path,
    *,
    service: str,
    token: str,
    task: str,
    modalities: tuple[str, ...],
    study_dates: str | None,
    timeout_s: float,
) -> PassSummary:
    """One pass: the new studies sent to the service one by one, the state file saved after each.

    Raises:
        WatchError: no PACS configured, or the service refused the token.
        PacsError: the PACS search failed; ShipaError subclasses all.
    """
    import httpx

    from pipelines.pacs.client import PacsClient
    from pipelines.pacs.watch import FINAL_STATUSES, ProcessedStudies, new_studies, study_key

    config = settings.dicomweb_config()
    if config is None:
        raise WatchError(f"no PACS is configured: set {ENV_PREFIX}DICOMWEB_URL to the PACS's DICOMweb root")
    processed = ProcessedStudies.load(state)
    with PacsClient(config) as pacs:
        studies = new_studies(pacs, processed, modalities=modalities, study_dates=study_dates)
    summary = PassSummary(found=len(studies))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=service.rstrip("/"), headers=headers, timeout=timeout_s) as client:
        for uid in studies:
            name = study_key(uid)[:12]  # logs name the study by its hash prefix, never its UID
            try:
                response = client.post(f"/diagnosis/{task}/studies/{uid}")
            except httpx.HTTPError as exc:
                summary.failed += 1
                log.warning(
                    "the service could not be reached (%s); the rest waits for the next pass", type(exc).__name__
                )
                break
            status = response.status_code
            if status in (401, 403):
                raise WatchError(f"the service refused {TOKEN_ENV} (HTTP {status}): a clinician token is needed")
            if status == 200:
                summary.scored += 1
            elif status in FINAL_STATUSES:
                summary.refused += 1
            else:
                summary.failed += 1
                log.warning("study %s: the service answered %d; tried again next pass", name, status)
                continue
            log.info("study %s: the service answered %d", name, status)
            processed.mark(uid, status)
            processed.save()
    return summary


def watch(
    service: Annotated[str, typer.Option("--service", help="the Shipa service's base URL")] = "http://127.0.0.1:8000",
    task: Annotated[str, typer.Option("--task", help="the diagnosis task to score")] = "pneumonia",
    interval: Annotated[float, typer.Option("--interval", min=1.0, help="seconds between polls")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False,
    since: Annotated[
        dt.datetime | None, typer.Option("--since", formats=["%Y-%m-%d"], help="oldest StudyDate (YYYY-MM-DD)")
    ] = None,
    until: Annotated[
        dt.datetime | None, typer.Option("--until", formats=["%Y-%m-%d"], help="newest StudyDate (YYYY-MM-DD)")
    ] = None,
    modality: Annotated[
        list[str] | None, typer.Option("--modality", help="ModalitiesInStudy to look for [default: CR and DX]")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help=f"processed-studies file [default: <state dir>/{STATE_NAME}]", show_default=False),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="seconds the service may take per study")
    ] = 300.0,
) -> None:
    """Poll the PACS (SHIPA_SERVICE_DICOMWEB_*) for new CR/DX studies and have the service score each once.

    The service token comes from SHIPA_WATCH_TOKEN. Each pass prints a JSON summary (found, scored, refused,
    failed); a study that failed is tried again on the next pass.
    """
    from pipelines.pacs.watch import DEFAULT_MODALITIES, date_range

    def run() -> None:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise WatchError(f"{TOKEN_ENV} is not set: give the watcher a clinician token (shipa tokens add)")
        try:
            settings = WatchSettings()
        except ValueError as exc:
            raise WatchError(f"invalid {ENV_PREFIX}DICOMWEB_* settings: {type(exc).__name__}") from None
        modalities = tuple(m.strip().upper() for m in modality or DEFAULT_MODALITIES if m.strip())
        dates = date_range(since.date() if since else None, until.date() if until else None)
        where = state or settings.state_dir / STATE_NAME
        while True:
            try:
                summary = watch_pass(
                    settings, where, service=service, token=token, task=task, modalities=modalities,
                    study_dates=dates, timeout_s=timeout,
                )  # fmt: skip
            except WatchError:
                raise
            except ShipaError as exc:
                if once:
                    raise
                log.warning("pass failed, trying again in %.0f s: %s", interval, exc)
            else:
                print_summary(summary.as_dict())
            if once:
                return
            time.sleep(interval)

    guard(run)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(watch)
