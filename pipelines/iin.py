"""The Kazakh individual identification number (IIN / ЖСН / ИИН).

Twelve digits: YYMMDD birth date, one digit for century and sex, a four-digit serial and a check digit
(see shared DOMAIN notes). Used by the synthetic cohort to make valid numbers and by ingest to check them.
This module holds only arithmetic on digits; it never stores or logs an IIN.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_WEIGHTS_1 = tuple(range(1, 12))
_WEIGHTS_2 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2)

# Digit 7: (century start, sex) for each code.
_CENTURY_SEX = {
    1: (1800, "male"),
    2: (1800, "female"),
    3: (1900, "male"),
    4: (1900, "female"),
    5: (2000, "male"),
    6: (2000, "female"),
}


class IINError(ValueError):
    """An IIN that is malformed or disagrees with the data it was recorded with."""


def check_digit(first11: str) -> int | None:
    """Return the check digit for the first eleven digits, or None when no digit is valid (never issued)."""
    digits = [int(c) for c in first11]
    s = sum(d * w for d, w in zip(digits, _WEIGHTS_1, strict=True)) % 11
    if s == 10:
        s = sum(d * w for d, w in zip(digits, _WEIGHTS_2, strict=True)) % 11
        if s == 10:
            return None
    return s


def century_sex_digit(birth_date: dt.date, sex: str) -> int:
    """Return digit 7 for a birth date and an administrative sex ('male' or 'female')."""
    century = (birth_date.year // 100) * 100
    for code, (start, code_sex) in _CENTURY_SEX.items():
        if start == century and code_sex == sex:
            return code
    raise IINError(f"no IIN century/sex digit for year {birth_date.year} and sex {sex!r}")


def make_iin(birth_date: dt.date, sex: str, serial: int) -> str | None:
    """Build an IIN; returns None when this serial gives no valid check digit (try the next serial)."""
    if not 0 <= serial <= 9999:
        raise IINError(f"serial {serial} out of range 0-9999")
    first11 = f"{birth_date:%y%m%d}{century_sex_digit(birth_date, sex)}{serial:04d}"
    cd = check_digit(first11)
    return None if cd is None else first11 + str(cd)


@dataclass(frozen=True)
class IINInfo:
    """What an IIN encodes."""

    birth_date: dt.date
    sex: str


def parse_iin(iin: str) -> IINInfo:
    """Check format and check digit and decode birth date and sex.

    Raises:
        IINError: naming what is wrong (length, digits, century digit, date, check digit). The message never
            repeats the number itself, so it is safe to log.
    """
    if len(iin) != 12 or not iin.isdigit():
        raise IINError("IIN must be exactly 12 digits")
    code = int(iin[6])
    if code not in _CENTURY_SEX:
        raise IINError(f"IIN century/sex digit {code} is not one of 1-6")
    start, sex = _CENTURY_SEX[code]
    try:
        birth = dt.date(start + int(iin[0:2]), int(iin[2:4]), int(iin[4:6]))
    except ValueError as exc:
        raise IINError("IIN digits 1-6 are not a valid date") from exc
    expected = check_digit(iin[:11])
    if expected is None or expected != int(iin[11]):
        raise IINError("IIN check digit is wrong")
    return IINInfo(birth_date=birth, sex=sex)


def agreement_problem(iin: str, birth_date: dt.date | None, sex: str | None) -> str | None:
    """Return a reason when the IIN is invalid or disagrees with the recorded birth date / sex, else None."""
    try:
        info = parse_iin(iin)
    except IINError as exc:
        return str(exc)
    if birth_date is not None and info.birth_date != birth_date:
        return "IIN birth date (digits 1-6 and 7) disagrees with Patient.birthDate"
    if sex in ("male", "female") and info.sex != sex:
        return "IIN sex (digit 7) disagrees with Patient.gender"
    return None


_TWELVE_DIGITS = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def iin_shaped(text: str) -> bool:
    """Whether ``text`` holds twelve digits in a row whose last is the IIN check digit of the first eleven.

    Only the check digit is tested, not the date: a number an IIN could be is never repeated to the caller.
    """
    for match in _TWELVE_DIGITS.finditer(text):
        digits = match.group()
        if check_digit(digits[:11]) == int(digits[11]):
            return True
    return False
