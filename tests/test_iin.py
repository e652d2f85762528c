from __future__ import annotations

import datetime as dt

import pytest

from pipelines.iin import IINError, agreement_problem, check_digit, make_iin, parse_iin


def test_check_digit_first_weights() -> None:
    # 9 0 0 1 0 1 3 0 0 0 0: sum(a_i * i) = 9 + 0 + 0 + 4 + 0 + 6 + 21 = 40 -> 40 mod 11 = 7
    assert check_digit("90010130000") == 7


def test_check_digit_second_weights_and_never_issued() -> None:
    # Find an 11-digit prefix whose first sum is 10: the second weights decide, or it is never issued.
    seen_second, seen_none = False, False
    for serial in range(10000):
        first11 = f"8503154{serial:04d}"
        s1 = sum(int(c) * w for c, w in zip(first11, range(1, 12), strict=True)) % 11
        if s1 != 10:
            continue
        s2 = sum(int(c) * w for c, w in zip(first11, (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2), strict=True)) % 11
        if s2 == 10:
            assert check_digit(first11) is None
            seen_none = True
        else:
            assert check_digit(first11) == s2
            seen_second = True
    assert seen_second and seen_none


@pytest.mark.parametrize(
    ("birth", "sex", "digit7"),
    [
        (dt.date(1899, 12, 31), "male", "1"),
        (dt.date(1899, 1, 1), "female", "2"),
        (dt.date(1985, 3, 15), "male", "3"),
        (dt.date(1985, 3, 15), "female", "4"),
        (dt.date(2003, 7, 1), "male", "5"),
        (dt.date(2010, 2, 28), "female", "6"),
    ],
)
def test_make_and_parse_roundtrip(birth: dt.date, sex: str, digit7: str) -> None:
    iin = next(i for s in range(100) if (i := make_iin(birth, sex, s)) is not None)
    assert iin[6] == digit7
    assert iin[:6] == birth.strftime("%y%m%d")
    info = parse_iin(iin)
    assert (info.birth_date, info.sex) == (birth, sex)
    assert agreement_problem(iin, birth, sex) is None


def test_wrong_check_digit_is_named_without_the_number() -> None:
    iin = next(i for s in range(100) if (i := make_iin(dt.date(1990, 5, 20), "female", s)) is not None)
    bad = iin[:11] + str((int(iin[11]) + 1) % 10)
    with pytest.raises(IINError, match="check digit") as err:
        parse_iin(bad)
    assert bad not in str(err.value)


def test_disagreements() -> None:
    iin = next(i for s in range(100) if (i := make_iin(dt.date(1990, 5, 20), "female", s)) is not None)
    assert "birthDate" in (agreement_problem(iin, dt.date(1990, 5, 21), "female") or "")
    assert "gender" in (agreement_problem(iin, dt.date(1990, 5, 20), "male") or "")
    assert agreement_problem("12345", None, None) == "IIN must be exactly 12 digits"
    assert "century" in (agreement_problem("900101700001", None, None) or "")
