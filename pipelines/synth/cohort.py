"""Generate the whole synthetic cohort into a folder (the ``data/raw/`` layout of docs/raw-data.md).

Patients are made one at a time and streamed to open writers, so memory does not grow with the cohort. The
provider directory is made first; COHORT.json is written last, so a folder without it is not a finished cohort.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from pipelines.synth.datasheet import render_datasheet
from pipelines.synth.images import RadiographWriter
from pipelines.synth.patient import PatientFactory
from pipelines.synth.providers import Directory, build_directory
from pipelines.synth.spec import CohortSpec
from pipelines.synth.stats import CohortStats
from pipelines.synth.writers import BundleSink, Manifests, NdjsonSink

log = logging.getLogger(__name__)

GENERATOR = "shipa-synthesize"
GENERATOR_VERSION = "1.0"
_GC_EVERY = 50


def directory_for(spec: CohortSpec) -> Directory:
    """The providers of the cohort ``spec`` describes: who commits which fraud pattern, who is audited."""
    return build_directory(
        seed=spec.seed,
        n_organizations=spec.n_organizations,
        practitioners_per_organization=spec.practitioners_per_organization,
        fraud_provider_share=spec.fraud_provider_share,
        fraud_rates=spec.fraud,
        n_patients=spec.n_patients,
        start_day=spec.start_date.toordinal(),
        end_day=spec.end_date.toordinal(),
        bundle=spec.format == "bundle",
        audited_provider_share=spec.audited_provider_share,
    )


def generate(spec: CohortSpec, root: Path, *, progress: bool = True) -> dict[str, Any]:
    """Write a cohort into ``root`` (created; should be empty) and return its counts.

    Args:
        spec: what to generate.
        root: destination folder.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The counts also stored under ``counts`` in ``COHORT.json``.
    """
    root.mkdir(parents=True, exist_ok=True)
    start, end = spec.start_date.toordinal(), spec.end_date.toordinal()
    directory = directory_for(spec)
    sink: NdjsonSink | BundleSink = (
        BundleSink(root, compress=spec.gzip) if spec.format == "bundle" else NdjsonSink(root, compress=spec.gzip)
    )
    manifests = Manifests(root)
    writer = RadiographWriter(root, seed=spec.seed, size=spec.image_size, defect_rates=spec.dirty)
    factory = PatientFactory(spec, directory, writer)
    stats = CohortStats(start, end, len(directory.orgs))
    provider_id = [o.identifier for o in directory.orgs]
    log.info(
        "synthesizing %d patients (%s%s) with %d providers into %s",
        spec.n_patients,
        spec.format,
        ", gzip" if spec.gzip else "",
        len(directory.orgs),
        root,
    )
    gc_was_enabled = gc.isenabled()
    # Automatic collection would rescan millions of short-lived dicts that reference counting frees anyway; only
    # pydicom leaves small cycles, collected from the young generation every few patients.
    gc.disable()
    try:
        directory_resources = directory.resources()
        sink.write_directory(directory_resources)
        for r in directory_resources:
            stats.resources[r["resourceType"]] += 1
        for index in tqdm(range(spec.n_patients), disable=not progress, unit="patient", desc="synthesize"):
            record = factory.make(index)
            places = sink.write_patient(index, record.recs)
            for rec, (file, location) in zip(record.recs, places, strict=True):
                if rec.defect is not None:
                    manifests.dirty.writerow([rec.defect, rec.rtype, rec.rid, file, location, rec.field])
            for defect, sop_uid, rel, field in record.dicom_defects:
                manifests.dirty.writerow([defect, "DICOM", sop_uid, rel, 0, field])
            for claim in record.claims:
                if claim.pattern is None:
                    continue
                org_id = provider_id[claim.org]
                manifests.truth.writerow([claim.id, org_id, claim.pattern, "true" if claim.labelled else "false"])
                if claim.labelled and claim.finding_day is not None:
                    finding = dt.date.fromordinal(claim.finding_day).isoformat()
                    manifests.audit.writerow([claim.id, org_id, claim.pattern, finding])
            stats.add(record)
            if index % _GC_EVERY == _GC_EVERY - 1:
                gc.collect(0)
    finally:
        sink.close()
        manifests.close()
        if gc_was_enabled:
            gc.enable()
    counts = stats.counts()
    (root / "datasheet.md").write_text(render_datasheet(spec, directory, stats), encoding="utf-8")
    marker = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": spec.seed,
        "params_sha256": spec.sha256(),
        "format": spec.format,
        "gzip": spec.gzip,
        "counts": counts,
    }
    (root / "COHORT.json").write_bytes(orjson.dumps(marker, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    log.info(
        "wrote %d patients, %d claims (%d fraudulent), %d radiographs, %d dirty records",
        counts["patients"],
        counts["claims"],
        counts["fraud_claims"],
        counts["radiographs"],
        counts["dirty_records"],
    )
    return counts
