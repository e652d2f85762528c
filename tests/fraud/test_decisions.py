"""Investigators' decisions: the append-only file, its validation, and how decisions override the findings' labels."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from pipelines.config import FraudFeaturesParams
from pipelines.errors import InputError
from pipelines.features.fraud_labels import label_claims, override_labels
from pipelines.fraud.decisions import (
    DEFAULT_DECISIONS,
    HEADER,
    Decision,
    DecisionsFileError,
    append_decision,
    check_claim_id,
    check_name,
    decision_labels,
    init_decisions_file,
    latest_decisions,
    new_decision,
    read_decisions,
)
from pipelines.stages.features import fraud as features_fr

REPO = Path(__file__).resolve().parents[2]
A, B, C = "a" * 32, "b" * 32, "c" * 32


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, 7, hour, minute, tzinfo=UTC)


def test_append_writes_the_header_once_then_one_line_per_decision(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "decisions.csv"
    append_decision(path, new_decision(A, "confirmed", "Aigerim Nurlanova", decided_at=_at(9)))
    append_decision(path, new_decision(B.upper(), Decision.cleared, "O'Brien-Smith Jr.", note="ok", decided_at=_at(10)))
    assert path.read_text(encoding="utf-8") == (
        "claim_id,decision,by,decided_at,note\n"
        f"{A},confirmed,Aigerim Nurlanova,2026-12-07T09:00:00Z,\n"
        f"{B},cleared,O'Brien-Smith Jr.,2026-12-07T10:00:00Z,ok\n"
    )
    records = read_decisions(path)
    assert [(r.claim_id, r.decision, r.by, r.decided_at, r.note) for r in records] == [
        (A, Decision.confirmed, "Aigerim Nurlanova", _at(9), None),
        (B, Decision.cleared, "O'Brien-Smith Jr.", _at(10), "ok"),
    ]


def test_a_note_with_commas_and_quotes_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    note = 'called the clinic, "no such visit"; Қазақ тілі'
    append_decision(path, new_decision(A, "confirmed", "Әлия Серікқызы", note=note, decided_at=_at(9)))
    (record,) = read_decisions(path)
    assert record.note == note and record.by == "Әлия Серікқызы"


def test_the_committed_file_is_in_git_and_well_formed() -> None:
    committed = REPO / DEFAULT_DECISIONS
    assert committed.read_text(encoding="utf-8").startswith(HEADER)
    read_decisions(committed)  # raises on any malformed line
    ignored = subprocess.run(["git", "check-ignore", "-q", str(DEFAULT_DECISIONS)], cwd=REPO, check=False)
    assert ignored.returncode == 1, f"{DEFAULT_DECISIONS} must not be git-ignored: DVC depends on it"


def test_two_processes_appending_at_once_lose_no_line(tmp_path: Path) -> None:
    path = tmp_path / "decisions.csv"
    init_decisions_file(path)
    script = textwrap.dedent(
        """
        import sys
        from pipelines.fraud.decisions import append_decision, new_decision
        path, digit = sys.argv[1], sys.argv[2]
        for i in range(150):
            claim = f"{digit}{i:031x}"
            append_decision(path, new_decision(claim, "confirmed", f"Investigator {digit}", note="x" * 400))
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), d], cwd=REPO) for d in ("1", "2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    records = read_decisions(path)
    assert len(records) == 300
    assert len({r.claim_id for r in records}) == 300
    assert {r.by for r in records} == {"Investigator 1", "Investigator 2"}
    assert path.read_text(encoding="utf-8").count(HEADER) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the header is missing"),
        ("claim,decision\n", "line 1: header must be claim_id,decision,by,decided_at,note (got claim,decision)"),
        (f"{HEADER}{A},confirmed,Ann,2026-12-07T09:00:00Z,\nORG0015,cleared,Ann,2026-12-07T09:00:00Z,\n",
         "line 3: field claim_id: must be 32 lowercase hex digits"),
        (f"{HEADER}{A},fraud,Ann,2026-12-07T09:00:00Z,\n", "line 2: field decision: must be one of: confirmed"),
        (f"{HEADER}{A},cleared,Ann;drop,2026-12-07T09:00:00Z,\n", "line 2: field by: must be 1-64 letters"),
        (f"{HEADER}{A},cleared,Ann,yesterday,\n", "line 2: field decided_at: must be an ISO 8601 UTC time"),
        (f"{HEADER}{A},cleared,Ann,2026-12-07T09:00:00,\n", "line 2: field decided_at: must carry its time zone"),
        (f"{HEADER}{A},cleared,Ann,2026-12-07T09:00:00Z\n", "line 2: 4 fields where the header has 5"),
        (f"{HEADER}{A},cleared,Ann,2026-12-07T09:00:00Z,ok\n{B},confirmed,An", "line 3: 3 fields where the header"),
        (f"{HEADER}{A},cleared,Ann,2026-12-07T09:00:00Z,ok", "line 2: the last line is incomplete"),
    ],
)  # fmt: skip
def test_a_malformed_file_names_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "decisions.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DecisionsFileError) as err:
        read_decisions(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert isinstance(err.value, InputError)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DecisionsFileError, match=r"nope\.csv: decisions file not found"):
        read_decisions(tmp_path / "nope.csv")


def test_append_refuses_a_torn_or_foreign_file(tmp_path: Path) -> None:
    torn = tmp_path / "torn.csv"
    torn.write_text(f"{HEADER}{A},confirmed,Ann,2026-12-0", encoding="utf-8")
    with pytest.raises(DecisionsFileError, match="the last line is incomplete"):
        append_decision(torn, new_decision(B, "cleared", "Ann"))
    assert torn.read_text(encoding="utf-8") == f"{HEADER}{A},confirmed,Ann,2026-12-0"
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b,c\n", encoding="utf-8")
    with pytest.raises(DecisionsFileError, match="line 1: header must be"):
        append_decision(foreign, new_decision(B, "cleared", "Ann"))


@pytest.mark.parametrize("claim", ["ORG0015", "a" * 31, "a" * 33, "g" * 32, " " + "a" * 31, "a" * 31 + "\n"])
def test_only_a_claim_pseudonym_is_accepted(claim: str) -> None:
    with pytest.raises(InputError, match="32 hex digits") as err:
        check_claim_id(claim)
    assert claim.strip() not in str(err.value)  # never echoed: it may be a real claim number


@pytest.mark.parametrize("name", ["", "x" * 65, "Ann\nBob", "Ann,Bob", 'Ann "B"', "Ann\tBob", "=cmd()"])
def test_an_unusable_name_is_refused(name: str) -> None:
    with pytest.raises(InputError, match="--by must be 1-64"):
        check_name(name)


def test_the_latest_decision_per_claim_wins(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    for claim, decision, when in [
        (A, "confirmed", _at(9)),
        (B, "confirmed", _at(12)),
        (A, "cleared", _at(10)),  # later: A is cleared
        (B, "cleared", _at(11)),  # written later but decided earlier: B stays confirmed
        (C, "cleared", _at(8)),
        (C, "confirmed", _at(8)),  # same second: the later line wins
    ]:
        append_decision(path, new_decision(claim, decision, "Ann", decided_at=when))
    latest = latest_decisions(read_decisions(path))
    assert {c: r.decision.value for c, r in latest.items()} == {A: "cleared", B: "confirmed", C: "confirmed"}
    labels = decision_labels(read_decisions(path))
    assert labels.rows() == [(A, 0, "cleared"), (B, 1, "confirmed"), (C, 1, "confirmed")]


def test_decisions_override_the_findings_for_their_claims_only() -> None:
    claims = pl.Series("claim_id", [A, B, C, "d" * 32])
    findings = pl.DataFrame({"claim_id": [A, C], "finding_date": ["2024-01-01", "2024-01-01"]})
    base = label_claims(claims, findings)
    assert base.to_list() == [1, 0, 1, 0]
    decided = decision_labels(
        [
            new_decision(A, "cleared", "Ann", decided_at=_at(9)),  # a finding the investigator overturned
            new_decision(B, "confirmed", "Ann", decided_at=_at(9)),  # fraud the Fund had not found
            new_decision(C, "confirmed", "Ann", decided_at=_at(9)),  # agrees with the finding
            new_decision("e" * 32, "confirmed", "Ann", decided_at=_at(9)),  # not in this frame
        ]
    )
    label, from_decision = override_labels(claims, base, decided)
    assert label.name == "label" and label.dtype == pl.Int8
    assert label.to_list() == [0, 1, 1, 0]
    assert from_decision.to_list() == [True, True, True, False]


def test_the_stage_refuses_a_malformed_decisions_file_before_building_anything(tmp_path: Path) -> None:
    bad = tmp_path / "decisions.csv"
    bad.write_text(f"{HEADER}{A},maybe,Ann,2026-12-07T09:00:00Z,\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"decisions\.csv: line 2: field decision"):
        features_fr.run(FraudFeaturesParams(), tmp_path / "no-interim", tmp_path / "out", decisions=bad)
    with pytest.raises(InputError, match="decisions file not found"):
        features_fr.run(FraudFeaturesParams(), tmp_path / "no-interim", tmp_path / "out", decisions=tmp_path / "x")
    assert not (tmp_path / "out").exists()
