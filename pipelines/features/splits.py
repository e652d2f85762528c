"""Patient-grouped, stratified, seeded splits, or splits taken from a given file.

A split file is a CSV with a ``patient_id`` and a ``split`` column. Its ids are of one kind, the ``split_ids`` of
the params: the tables' own patient pseudonyms (``pseudonym``), the export's own ``Patient.id`` (``source_id``) or
IINs (``iin``; read from a ``patient_iin`` column when there is one, else from ``patient_id``). Source ids and IINs
are pseudonymised here with the ingest key exactly as ingest does (``Pseudonymizer.id("Patient", id)`` is the
tables' ``patient_id``; ``Pseudonymizer.id("iin", IIN)`` is ``patients.patient_pseudo_id``), so a hospital's split
needs no translation by hand. Errors about such a file name its row (the header is row 1, as in a spreadsheet),
never the id itself, because a source id or an IIN is personal data.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from pipelines.errors import InputError
from pipelines.fhir.deid import patient_pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SplitIds = Literal["pseudonym", "source_id", "iin"]
IIN_COLUMN = "patient_iin"
_WHAT: dict[SplitIds, str] = {"pseudonym": "patient pseudonym", "source_id": "Patient.id", "iin": "IIN"}


def grouped_split(patient_ids: pl.Series, labels: pl.Series, *, val: float, test: float, seed: int) -> dict[str, str]:
    """Assign each patient to train/val/test, stratified by whether the patient has any positive sample.

    Every sample of a patient lands in the same split, so no patient's images leak across splits.

    Args:
        patient_ids: patient id per sample.
        labels: 0/1 label per sample.
        val: share of patients for validation.
        test: share of patients for test.
        seed: the split's seed.

    Returns:
        patient id -> split name.
    """
    per_patient = (
        pl.DataFrame({"patient_id": patient_ids, "label": labels})
        .group_by("patient_id")
        .agg(pl.col("label").max())
        .sort("patient_id")  # group_by order is not deterministic
    )
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for stratum in (0, 1):
        ids = per_patient.filter(pl.col("label") == stratum)["patient_id"].to_list()
        order = rng.permutation(len(ids))
        n_test = round(len(ids) * test)
        n_val = round(len(ids) * val)
        for rank, idx in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            assignment[ids[idx]] = split
    return assignment


def _where(path: Path, row: dict[str, object], ids: SplitIds) -> str:
    """Where a row's problem is: the pseudonym itself for a file of pseudonyms, else only the row number."""
    if ids == "pseudonym":
        return f"{path}: patient {row['id']}"
    return f"{path} row {row['row']}"


def read_split_table(path: Path, ids: SplitIds = "pseudonym") -> pl.DataFrame:
    """Read a split file and check it: every row has an id and a known split name, and no id comes twice.

    Args:
        path: the CSV.
        ids: what its ids are (see the module docstring); ``iin`` reads ``patient_iin`` when the file has it.

    Returns:
        Columns ``row`` (the spreadsheet row number, header = 1), ``id`` (stripped) and ``split``, in file order.

    Raises:
        InputError: missing file or columns, an empty id, an unknown split name, or a patient listed twice.
    """
    if not path.exists():
        raise InputError(f"{path}: split file not found")
    df = pl.read_csv(path, infer_schema=False)  # all strings: IINs keep their leading zeros
    column = IIN_COLUMN if ids == "iin" and IIN_COLUMN in df.columns else "patient_id"
    missing = {column, "split"} - set(df.columns)
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    table = df.select(
        pl.int_range(2, df.height + 2, dtype=pl.Int64).alias("row"),
        pl.col(column).str.strip_chars().alias("id"),
        pl.col("split").str.strip_chars(),
    )
    if not table.height:
        raise InputError(f"{path}: no patients listed")
    empty = table.filter(pl.col("id").is_null() | (pl.col("id") == ""))
    if empty.height:
        raise InputError(f"{path} row {empty['row'][0]}: no {column}")
    bad = table.filter(~pl.col("split").is_in(SPLITS) | pl.col("split").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(f"{_where(path, row, ids)}: split '{row['split']}' is not one of {SPLITS}")
    dup = table.filter(pl.col("id").is_duplicated())
    if dup.height:
        first = dup.row(0, named=True)
        again = dup.filter(pl.col("id") == first["id"])["row"][1]
        raise InputError(f"{_where(path, first, ids)} is listed more than once (again in row {again})")
    return table


def _pseudonymizer(key: str) -> Pseudonymizer:
    try:
        return Pseudonymizer(key)
    except ValueError as exc:  # too short: ingest refused such a key too
        raise InputError(f"SHIPA_PSEUDONYM_KEY: {exc}") from None


def _patient_ids(table: pl.DataFrame, ids: SplitIds, key: str, patients: pl.DataFrame) -> pl.DataFrame:
    """Each row's ingested ``patient_id``: none, one, or several for an IIN shared by several Patient records.

    Returns:
        Columns ``row``, ``split``, ``patient_id`` (null where no ingested patient matches).
    """
    column = "patient_pseudo_id" if ids == "iin" else "patient_id"
    lookup = patients.select(pl.col(column).alias("pseudonym"), "patient_id").drop_nulls()
    if ids == "pseudonym":
        pseudonyms = table["id"]
    else:
        pseudonyms = pl.Series(patient_pseudonyms(_pseudonymizer(key), table["id"].to_list(), ids), dtype=pl.String)
    keyed = table.select("row", "split").with_columns(pseudonyms.alias("pseudonym"))
    return keyed.join(lookup, on="pseudonym", how="left").drop("pseudonym").sort("row")


def split_from_file(path: Path, ids: SplitIds, *, key: str, patients: pl.DataFrame) -> dict[str, str]:
    """The ingested patients' splits from a split file whose ids are of kind ``ids``.

    Args:
        path: the CSV.
        ids: ``pseudonym``, ``source_id`` or ``iin`` (see the module docstring).
        key: the pseudonymisation key ingest used (unused for ``pseudonym``).
        patients: ingest's ``patients`` table (``patient_id``, ``patient_pseudo_id``).

    Returns:
        Tables' ``patient_id`` -> split name, for the rows that match an ingested patient.

    Raises:
        InputError: a malformed file (:func:`read_split_table`); no row matching an ingested patient (the key or
            the split_ids kind is wrong, or ingest found no IIN). Rows of a source id or IIN that match no ingested
            patient (quarantined at ingest) are left out with a warning that names their count and first row.
    """
    table = read_split_table(path, ids)
    if ids == "iin" and patients["patient_pseudo_id"].null_count() == patients.height:
        raise InputError(
            f"{path}: split_ids is 'iin' but no ingested patient has an IIN pseudonym: does ingest.iin_systems "
            "name the identifier system of the export's IINs?"
        )
    matched = _patient_ids(table, ids, key, patients)
    unmatched = matched.filter(pl.col("patient_id").is_null())
    n_rows = table.height
    if unmatched["row"].n_unique() == n_rows:
        hint = (
            "is split_ids right (a file of Patient.ids or IINs needs source_id or iin)?"
            if ids == "pseudonym"
            else "is SHIPA_PSEUDONYM_KEY the key ingest used?"
        )
        raise InputError(f"none of the {n_rows} patients of {path} is in the ingested tables: {hint}")
    if unmatched.height and ids != "pseudonym":
        # A patient ingest quarantined (or an export without them) must not stop the hospital's split: the rest
        # of it is honoured, and the count is said (by row, never by value).
        log.warning(
            "%s: %d of %d rows match no ingested patient (quarantined at ingest, or not in the export) and are "
            "left out; the first is row %d",
            path,
            unmatched.height,
            n_rows,
            unmatched["row"][0],
        )
    found = matched.drop_nulls("patient_id")
    return dict(zip(found["patient_id"].to_list(), found["split"].to_list(), strict=True))
