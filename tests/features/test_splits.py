"""A hospital's split file in its own terms: pseudonyms, source ``Patient.id`` or IIN (``split_ids``).

The patients table is built here the way ingest fills it (``patient_id = Pseudonymizer.id("Patient", id)``,
``patient_pseudo_id = Pseudonymizer.id("iin", IIN)``), with a real :class:`Pseudonymizer`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
import pytest

from pipelines.errors import InputError
from pipelines.features.splits import SplitIds, read_split_table, split_from_file
from pipelines.fhir.pseudonym import Pseudonymizer

KEY = "split-test-key-0123456789"
# Source Patient.id -> (IIN, split); the IIN with a leading zero must survive the CSV read as text.
HOSPITAL = {
    "pat-a": ("050101500001", "train"),
    "pat-b": ("880128315422", "val"),
    "pat-c": ("530714364682", "test"),
    "pat-d": ("770707311444", "train"),
}


def _patients(key: str = KEY) -> pl.DataFrame:
    p = Pseudonymizer(key)
    return pl.DataFrame(
        {
            "patient_id": [p.id("Patient", pid) for pid in HOSPITAL],
            "patient_pseudo_id": [p.id("iin", iin) for iin, _ in HOSPITAL.values()],
        }
    )


def _expected(key: str = KEY) -> dict[str, str]:
    p = Pseudonymizer(key)
    return {p.id("Patient", pid): split for pid, (_, split) in HOSPITAL.items()}


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_pseudonym_ids_are_taken_as_they_are(tmp_path: Path) -> None:
    rows = [f"{pid},{split}" for pid, split in _expected().items()] + ["0" * 32 + ",train"]  # an older cohort's
    f = _csv(tmp_path / "s.csv", "patient_id,split", rows)
    assert split_from_file(f, "pseudonym", key="unused-for-pseudonyms", patients=_patients()) == _expected()
    table = read_split_table(f)
    assert dict(zip(table["id"].to_list(), table["split"].to_list(), strict=True))["0" * 32] == "train"


def test_source_ids_are_pseudonymised_with_the_ingest_key(tmp_path: Path) -> None:
    rows = [f" {pid} ,{split}" for pid, (_, split) in HOSPITAL.items()]  # stray spaces around an id are not part of it
    f = _csv(tmp_path / "s.csv", "patient_id,split", rows)
    assert split_from_file(f, "source_id", key=KEY, patients=_patients()) == _expected()


def test_iins_from_patient_iin_column_else_patient_id(tmp_path: Path) -> None:
    both = _csv(
        tmp_path / "both.csv",
        "patient_id,patient_iin,split",
        [f"{pid},{iin},{split}" for pid, (iin, split) in HOSPITAL.items()],
    )
    assert split_from_file(both, "iin", key=KEY, patients=_patients()) == _expected()
    only = _csv(tmp_path / "only.csv", "patient_id,split", [f"{iin},{split}" for iin, split in HOSPITAL.values()])
    assert split_from_file(only, "iin", key=KEY, patients=_patients()) == _expected()


def test_an_iin_on_two_patient_records_puts_both_in_its_split(tmp_path: Path) -> None:
    p = Pseudonymizer(KEY)
    iin, split = HOSPITAL["pat-b"]
    patients = pl.concat(
        [
            _patients(),
            pl.DataFrame({"patient_id": [p.id("Patient", "pat-b-dup")], "patient_pseudo_id": [p.id("iin", iin)]}),
        ]
    )
    f = _csv(tmp_path / "s.csv", "patient_id,split", [f"{i},{s}" for i, s in HOSPITAL.values()])
    got = split_from_file(f, "iin", key=KEY, patients=patients)
    assert got == {**_expected(), p.id("Patient", "pat-b-dup"): split}


@pytest.mark.parametrize("ids", ["source_id", "iin"])
def test_wrong_key_says_so_and_names_no_identifier(tmp_path: Path, ids: SplitIds) -> None:
    f = _csv(
        tmp_path / "s.csv",
        "patient_id,patient_iin,split",
        [f"{pid},{iin},{split}" for pid, (iin, split) in HOSPITAL.items()],
    )
    with pytest.raises(InputError) as err:
        split_from_file(f, ids, key="another-key-0123456789", patients=_patients())
    text = str(err.value)
    assert text == (
        f"none of the 4 patients of {f} is in the ingested tables: is SHIPA_PSEUDONYM_KEY the key ingest used?"
    )
    assert not any(pid in text or iin in text for pid, (iin, _) in HOSPITAL.items())


def test_pseudonym_file_of_source_ids_points_at_split_ids(tmp_path: Path) -> None:
    f = _csv(tmp_path / "s.csv", "patient_id,split", [f"{pid},{s}" for pid, (_, s) in HOSPITAL.items()])
    with pytest.raises(InputError, match=r"none of the 4 patients .* is split_ids right"):
        split_from_file(f, "pseudonym", key=KEY, patients=_patients())


def test_an_unknown_iin_is_left_out_and_reported_by_row_not_by_value(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [f"{iin},{split}" for iin, split in HOSPITAL.values()] + ["991231123456,test"]
    f = _csv(tmp_path / "s.csv", "patient_id,split", rows)
    with caplog.at_level(logging.WARNING, logger="pipelines.features.splits"):
        split = split_from_file(f, "iin", key=KEY, patients=_patients())
    assert len(split) == len(HOSPITAL)
    assert "1 of 5 rows match no ingested patient" in caplog.text and "first is row 6" in caplog.text
    assert "991231123456" not in caplog.text


def test_an_unknown_source_id_is_left_out_and_reported_by_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = ["pat-x,train", *[f"{pid},{s}" for pid, (_, s) in HOSPITAL.items()]]
    f = _csv(tmp_path / "s.csv", "patient_id,split", rows)
    with caplog.at_level(logging.WARNING, logger="pipelines.features.splits"):
        split = split_from_file(f, "source_id", key=KEY, patients=_patients())
    assert len(split) == len(HOSPITAL)
    assert "first is row 2" in caplog.text and "pat-x" not in caplog.text


def test_bad_rows_of_an_iin_file_name_the_row_never_the_iin(tmp_path: Path) -> None:
    iin = HOSPITAL["pat-c"][0]
    cases = {
        "holdout": ([f"{iin},holdout"], r"row 2: split 'holdout' is not one of"),
        "twice": (
            [f"{iin},train", "880128315422,val", f"{iin},test"],
            r"row 2 is listed more than once \(again in row 4\)",
        ),
        "empty": (["880128315422,val", ",train"], r"row 3: no patient_id"),
    }
    for name, (rows, message) in cases.items():
        f = _csv(tmp_path / f"{name}.csv", "patient_id,split", rows)
        with pytest.raises(InputError, match=message) as err:
            split_from_file(f, "iin", key=KEY, patients=_patients())
        assert iin not in str(err.value) and "880128315422" not in str(err.value), name


def test_iin_ids_without_ingested_iins_name_the_iin_systems_param(tmp_path: Path) -> None:
    patients = _patients().with_columns(pl.lit(None, dtype=pl.String).alias("patient_pseudo_id"))
    f = _csv(tmp_path / "s.csv", "patient_id,split", [f"{i},{s}" for i, s in HOSPITAL.values()])
    with pytest.raises(InputError, match=r"no ingested patient has an IIN pseudonym: does ingest\.iin_systems"):
        split_from_file(f, "iin", key=KEY, patients=patients)


def test_short_key_and_missing_columns_are_input_errors(tmp_path: Path) -> None:
    f = _csv(tmp_path / "s.csv", "patient_id,split", ["pat-a,train"])
    with pytest.raises(InputError, match=r"SHIPA_PSEUDONYM_KEY: pseudonymisation key must be at least 16 bytes"):
        split_from_file(f, "source_id", key="short", patients=_patients())
    g = _csv(tmp_path / "g.csv", "patient_iin,fold", ["050101500001,train"])
    with pytest.raises(InputError, match=r"g\.csv: missing column\(s\) split"):
        split_from_file(g, "iin", key=KEY, patients=_patients())
    with pytest.raises(InputError, match=r"h\.csv: no patients listed"):
        split_from_file(_csv(tmp_path / "h.csv", "patient_id,split", []), "iin", key=KEY, patients=_patients())
