"""Kazakh and Russian names (Cyrillic with their passport Latin forms), regions, addresses and phone numbers."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

from pipelines.codes import REGIONS
from pipelines.synth.draws import Draws

# (Cyrillic, Latin) given names.
_KZ_MALE = (
    ("Айдос", "Aidos"), ("Нурлан", "Nurlan"), ("Ерлан", "Erlan"), ("Асхат", "Askhat"), ("Бауыржан", "Bauyrzhan"),
    ("Даулет", "Daulet"), ("Ержан", "Erzhan"), ("Самат", "Samat"), ("Арман", "Arman"), ("Алибек", "Alibek"),
    ("Жандос", "Zhandos"), ("Мейрам", "Meiram"), ("Нұрсұлтан", "Nursultan"), ("Ермек", "Ermek"),
    ("Дамир", "Damir"), ("Асылбек", "Assylbek"), ("Қайрат", "Kairat"), ("Серік", "Serik"),
)  # fmt: skip
_KZ_FEMALE = (
    ("Айгерим", "Aigerim"), ("Динара", "Dinara"), ("Гүлнара", "Gulnara"), ("Айжан", "Aizhan"), ("Әсел", "Assel"),
    ("Жанар", "Zhanar"), ("Мадина", "Madina"), ("Сәуле", "Saule"), ("Әлия", "Aliya"), ("Камила", "Kamila"),
    ("Жұлдыз", "Zhuldyz"), ("Назерке", "Nazerke"), ("Аружан", "Aruzhan"), ("Дана", "Dana"), ("Бота", "Bota"),
    ("Әсем", "Assem"), ("Гүлмира", "Gulmira"), ("Ақерке", "Akerke"),
)  # fmt: skip
# Surname stems; the masculine form adds -ов/-ев (Latin -ov/-yev), the feminine -ова/-ева.
_KZ_SURNAME = (
    ("Нурлан", "Nurlan", "ов", "ov"), ("Сейткали", "Seitkali", "ев", "yev"), ("Ахмет", "Akhmet", "ов", "ov"),
    ("Жумаба", "Zhumaba", "ев", "yev"), ("Касым", "Kassym", "ов", "ov"), ("Абдрахман", "Abdrakhman", "ов", "ov"),
    ("Тулеген", "Tulegen", "ов", "ov"), ("Омар", "Omar", "ов", "ov"), ("Искак", "Iskak", "ов", "ov"),
    ("Садык", "Sadyk", "ов", "ov"), ("Есен", "Yessen", "ов", "ov"), ("Мукаш", "Mukash", "ев", "ev"),
    ("Ибра", "Ibra", "ев", "yev"), ("Кенжеба", "Kenzheba", "ев", "yev"), ("Сулеймен", "Suleimen", "ов", "ov"),
    ("Бекмухамбет", "Bekmukhambet", "ов", "ov"),
)  # fmt: skip
# Russian given names with patronymic stems: (Cyrillic, Latin, patronymic stem Cyrillic, Latin).
_RU_MALE = (
    ("Александр", "Aleksandr", "Александров", "Aleksandrov"), ("Сергей", "Sergei", "Сергеев", "Sergeev"),
    ("Андрей", "Andrei", "Андреев", "Andreev"), ("Дмитрий", "Dmitrii", "Дмитриев", "Dmitriev"),
    ("Алексей", "Aleksei", "Алексеев", "Alekseev"), ("Владимир", "Vladimir", "Владимиров", "Vladimirov"),
    ("Николай", "Nikolai", "Николаев", "Nikolaev"), ("Евгений", "Evgenii", "Евгеньев", "Evgenev"),
    ("Игорь", "Igor", "Игорев", "Igorev"), ("Михаил", "Mikhail", "Михайлов", "Mikhailov"),
)  # fmt: skip
_RU_FEMALE = (
    ("Елена", "Elena"), ("Ольга", "Olga"), ("Наталья", "Natalia"), ("Татьяна", "Tatiana"), ("Ирина", "Irina"),
    ("Светлана", "Svetlana"), ("Анна", "Anna"), ("Мария", "Mariia"), ("Екатерина", "Ekaterina"), ("Юлия", "Iuliia"),
)  # fmt: skip
_RU_SURNAME = (
    ("Иванов", "Ivanov"), ("Петров", "Petrov"), ("Смирнов", "Smirnov"), ("Кузнецов", "Kuznetsov"),
    ("Попов", "Popov"), ("Васильев", "Vasilev"), ("Соколов", "Sokolov"), ("Михайлов", "Mikhailov"),
    ("Новиков", "Novikov"), ("Фёдоров", "Fedorov"), ("Морозов", "Morozov"), ("Волков", "Volkov"),
)  # fmt: skip

# Approximate population in thousands (2024), used as region weights, and the administrative centre.
_REGION_INFO: dict[str, tuple[int, str]] = {
    "AST": (1400, "Астана"), "ALA": (2200, "Алматы"), "SHY": (1200, "Шымкент"), "ABA": (600, "Семей"),
    "AKM": (790, "Кокшетау"), "AKT": (930, "Актобе"), "ALM": (1500, "Конаев"), "ATY": (700, "Атырау"),
    "VOS": (720, "Усть-Каменогорск"), "ZHA": (1200, "Тараз"), "ZHT": (700, "Талдыкорган"),
    "KAR": (1130, "Караганда"), "KUS": (830, "Костанай"), "KZY": (830, "Кызылорда"), "MAN": (770, "Актау"),
    "SEV": (530, "Петропавловск"), "PAV": (750, "Павлодар"), "YUZ": (2100, "Туркестан"),
    "ULY": (220, "Жезказган"), "ZAP": (690, "Уральск"),
}  # fmt: skip
# Share of Russian names by region (higher in the north); others use 0.1.
_RUSSIAN_SHARE = {"SEV": 0.5, "KUS": 0.4, "PAV": 0.35, "VOS": 0.35, "KAR": 0.3, "AKM": 0.3, "AST": 0.15, "ALA": 0.25}
_STREETS = (
    "Абая",
    "Достык",
    "Толе би",
    "Сейфуллина",
    "Жибек жолы",
    "Кунаева",
    "Ауэзова",
    "Назарбаева",
    "Республики",
    "Гагарина",
    "Пушкина",
    "Байтурсынова",
)
_MOBILE_PREFIXES = ("700", "701", "702", "705", "707", "708", "747", "771", "775", "776", "777", "778")

REGION_CODES: tuple[str, ...] = tuple(REGIONS)
_REGION_CUM = tuple(accumulate(_REGION_INFO[c][0] for c in REGION_CODES))


@dataclass(frozen=True)
class PersonName:
    """A full name in Cyrillic and in its Latin (passport) form; ``lang`` is ``kk`` or ``ru``."""

    family: str
    given: str
    patronymic: str
    family_latin: str
    given_latin: str
    patronymic_latin: str
    lang: str

    def dicom(self) -> str:
        """DICOM PN in Latin: ``Family^Given^Patronymic``."""
        return f"{self.family_latin}^{self.given_latin}^{self.patronymic_latin}"

    def fhir(self) -> list[dict[str, object]]:
        """FHIR HumanName list: the Cyrillic official name first, then the Latin form."""
        return [
            {
                "use": "official",
                "text": f"{self.family} {self.given} {self.patronymic}",
                "family": self.family,
                "given": [self.given, self.patronymic],
                "extension": [{"url": _LANG_EXT, "valueCode": self.lang}],
            },
            {
                "use": "official",
                "text": f"{self.given_latin} {self.family_latin}",
                "family": self.family_latin,
                "given": [self.given_latin, self.patronymic_latin],
                "extension": [{"url": _LANG_EXT, "valueCode": f"{self.lang}-Latn"}],
            },
        ]


_LANG_EXT = "http://hl7.org/fhir/StructureDefinition/language"


def pick_region(d: Draws) -> str:
    """A region code, weighted by population."""
    return d.pick_weighted(REGION_CODES, _REGION_CUM)


def region_centre(region: str) -> str:
    """The administrative centre of a region (Russian spelling)."""
    return _REGION_INFO[region][1]


def make_name(d: Draws, sex: str, region: str) -> PersonName:
    """A Kazakh or Russian full name for this sex, with the regional mix of languages."""
    if d.chance(_RUSSIAN_SHARE.get(region, 0.1)):
        family, family_lat = d.pick(_RU_SURNAME)
        _, _, patronymic, patronymic_lat = d.pick(_RU_MALE)
        if sex == "female":
            given, given_lat = d.pick(_RU_FEMALE)
            return PersonName(
                family + "а", given, patronymic + "на", family_lat + "a", given_lat, patronymic_lat + "na", "ru"
            )
        given, given_lat, _, _ = d.pick(_RU_MALE)
        return PersonName(family, given, patronymic + "ич", family_lat, given_lat, patronymic_lat + "ich", "ru")
    stem, stem_lat, suffix, suffix_lat = d.pick(_KZ_SURNAME)
    father, father_lat = d.pick(_KZ_MALE)
    if sex == "female":
        given, given_lat = d.pick(_KZ_FEMALE)
        return PersonName(
            stem + suffix + "а",
            given,
            father + "қызы",
            stem_lat + suffix_lat + "a",
            given_lat,
            father_lat + "kyzy",
            "kk",
        )
    given, given_lat = d.pick(_KZ_MALE)
    return PersonName(stem + suffix, given, father + "ұлы", stem_lat + suffix_lat, given_lat, father_lat + "uly", "kk")


def make_phone(d: Draws) -> str:
    """A Kazakh mobile number in E.164 form (+7 7xx ...)."""
    return f"+7{d.pick(_MOBILE_PREFIXES)}{d.below(10_000_000):07d}"


def make_address(d: Draws, region: str, region_extension: str) -> dict[str, object]:
    """A home address in the region; ``state`` and the region extension carry the region code."""
    return {
        "extension": [{"url": region_extension, "valueCode": region}],
        "use": "home",
        "line": [f"ул. {d.pick(_STREETS)}, д. {d.between(1, 180)}, кв. {d.between(1, 120)}"],
        "city": region_centre(region),
        "state": region,
        "country": "KZ",
    }
