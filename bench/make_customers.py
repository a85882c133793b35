"""Seeded, labelled synthetic customers for the matching benchmark (``bench/matching_quality.py``).

    python bench/make_customers.py --golden 10000 --incoming 4000 --out var/bench/customers-10k

Writes ``golden.jsonl`` (the clean records a hub already holds, one per person) and
``incoming.jsonl`` (records that arrive later) as CIM Individuals, each line with its
labels: ``entity`` (the person it really is), ``group`` (household or twin pair),
``kind`` and, for duplicates, the ``perturbations`` applied.

The golden set is people as a CRM holds them: realistic, skewed name frequencies
(a few hundred US first names and surnames with census-like weights, then rarer first
names and a long tail of rarer surnames), birth dates, personal emails at real providers, US phones and
addresses. Households (one shared family email; only its owner carries it in the golden
set, as an email-keyed bulk load would otherwise fold them into one record) and twins
(same surname, birth date, address and email) are part of it.

Incoming records are, with a fixed design whatever the golden set's size:

- ``duplicate``: another source's record of a golden person: typos (transpositions,
  dropped and doubled letters), nicknames (``customers.nicknames.NAME_GROUPS``), a
  married name, email variants (case, Gmail dots, +tags, googlemail, a new email at
  another domain, the household email), phone formats (national, +1, punctuation) and
  new phones, moved addresses (new postcode), street and ZIP+4 spellings, and the
  missing values sources have (no birth date, gender, phone, address or email);
- hard negatives, new people who must not be auto-merged: ``household`` (another member
  of a golden household: same surname, the shared email, same address), ``twin`` (same
  surname, birth date, address and email, another first name; sometimes an alliterative
  or near-identical one), ``common_name`` (the same first and last name as a golden
  person, sometimes in the same postcode) and ``unrelated`` people.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import itertools
import json
import random
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from customers.nicknames import NAME_GROUPS  # noqa: E402


def _words(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------------------
# Reference data (hand-written, approximate US frequencies by rank)
# ---------------------------------------------------------------------------
MALE = _words(
    """James Robert John Michael David William Richard Joseph Thomas Christopher Charles Daniel Matthew Anthony
Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian George Timothy Ronald Jason Edward Jeffrey Ryan Jacob Gary
Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Patrick Frank Raymond Jack
Dennis Jerry Tyler Aaron Jose Adam Nathan Henry Zachary Douglas Peter Kyle Noah Ethan Jeremy Walter Christian Keith
Roger Terry Austin Sean Gerald Carl Harold Dylan Arthur Lawrence Jordan Jesse Bryan Billy Bruce Gabriel Joe Logan Alan
Juan Albert Willie Elijah Wayne Randy Vincent Mason Roy Ralph Bobby Russell Bradley Philip Eugene Louis Harry Howard
Carlos Luis Victor Martin Ernest Todd Craig Shawn Alfred Leonard Francis Frederick Theodore Nathaniel Liam Lucas Oliver
Caleb Isaac Owen Hunter Connor Evan Ian Cole Leo Jayden Aiden Miguel Antonio Jorge Diego Francisco Mohammed Ahmed Omar
Wei Raj Hiroshi Dmitri Marco Andre Tristan Dustin Derek Marcus Jaylen Jalen Colin Calvin Glenn Dale"""
)
FEMALE = _words(
    """Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Margaret Sandra
Ashley Kimberly Emily Donna Michelle Carol Amanda Dorothy Melissa Deborah Stephanie Rebecca Sharon Laura Cynthia
Kathleen Amy Angela Shirley Anna Brenda Pamela Emma Nicole Helen Samantha Katherine Christine Debra Rachel Carolyn
Janet Catherine Maria Heather Diane Ruth Julie Olivia Joyce Virginia Victoria Kelly Lauren Christina Joan Evelyn Judith
Megan Andrea Cheryl Hannah Jacqueline Martha Gloria Teresa Ann Sara Madison Frances Kathryn Janice Jean Abigail Alice
Judy Sophia Grace Denise Amber Doris Marilyn Danielle Beverly Isabella Theresa Diana Natalie Brittany Charlotte Marie
Kayla Alexis Lori Ava Mia Chloe Ella Zoe Lily Aaliyah Fatima Mei Priya Yuki Sofia Camila Valeria Gabriela Lucia Ana
Rosa Carmen Eleanor Josephine Alexandra Gabrielle Jane Erica Tiffany Crystal Vanessa Monica Erin Leah Allison Paige
Jasmine Morgan Brooke Holly Caroline Jenna Kristen Tara Dana Wendy Jill Tracy Jayla Jada Marissa"""
)
SURNAMES = _words(
    """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson
Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker
Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter
Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers
Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood
James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell
Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan
Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran
Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells
Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder
Mason Dixon Muñoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice
Schmidt Garza Daniels Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold
Pierce Vazquez Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley
Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Peña Richards Contreras Willis Carpenter Lawrence
Sandoval Guerrero George Chapman Rios Estrada Ortega Watkins Greene Nuñez Wheeler Valdez Harper Burke Larson Santiago
Maldonado Morrison Franklin Carlson Austin Dominguez Carr Lawson Jacobs O'Brien Lynch Singh Vega Bishop Montgomery
Oliver Jensen Harvey Williamson Gilbert Dean Sims Espinoza Howell Li Wong Reid Hanson Le McCoy Garrett Burton Fuller
Wang Weber Welch Rojas Lucas Marquez Fields Park Yang Little Banks Padilla Day Walsh Bowman Schultz Luna Fowler Mejia
Davidson Acosta Brewer May Holland Juarez Newman Pearson Curtis Cortez Douglas Schneider Joseph Barrett Navarro Figueroa
Keller Avila Wade Molina Stanley Hopkins Campos Barnett Bates Chambers Caldwell Beck Lambert Miranda Byrd Craig Ayala
Lowe Frazier Powers Neal Leonard Gregory Carrillo Sutton Fleming Rhodes Shelton Schwartz Norris Jennings Watts Duran
Walters Cohen McDaniel Moran Parks Steele Vaughn Becker Holt DeLeon Barker Terry Hale Leon Ng"""
)
# Rarer first names (together about 12% of people), equally likely.
MALE_TAIL = _words(
    """Abel Abram Ahmad Alden Alvin Amos Angel Archer Ari Armando Arturo Asher Barry Beau Bernard Boris Brady Brent
Brock Byron Cedric Cesar Chad Chester Clarence Clay Clifford Clyde Conrad Cornelius Curtis Dallas Damian Dante Darius
Darnell Darren Desmond Dominic Duane Easton Edgar Elias Elliot Emmett Enrique Ezra Felix Fernando Floyd Forrest Garrett
Gideon Grady Hector Herman Hugo Ivan Jasper Jerome Joel Julian Kendrick Kirk Lance Lionel Lorenzo Luther Malcolm Marvin
Maurice Milton Nolan Norman Otis Percy Quentin Rafael Ramon Reginald Rex Rodney Roland Rudy Rufus Salvador Silas Simon
Solomon Sterling Stuart Terrence Tobias Troy Ulysses Vernon Wesley Xavier Yusuf Zane"""
)
FEMALE_TAIL = _words(
    """Adele Adriana Agnes Alma Alyssa Amelia Annette Antoinette April Ariana Audrey Beatrice Bernice Bianca Blanche
Bonnie Caitlin Candice Cassandra Cecilia Celeste Clara Claudia Colleen Constance Daphne Darlene Delia Della Dolores
Edith Edna Elaine Eloise Elsie Esther Estelle Faith Felicia Fiona Flora Genevieve Georgia Gwendolyn Harriet Hazel Ida
Imogen Ingrid Irene Iris Ivy Jeanette Jocelyn Juanita June Kara Lillian Lorraine Lucille Lydia Mabel Marcia Margot Mavis
Maxine Mildred Miriam Muriel Nadia Naomi Nina Noreen Opal Pearl Penelope Phoebe Priscilla Ramona Regina Rhonda Rita
Rochelle Rosalind Roxanne Sabrina Selena Sheila Sonia Stella Sylvia Tamara Thelma Trudy Ursula Vera Viola Violet Wanda
Yolanda Yvonne Zelda"""
)
# A long tail of rarer surnames (about 60% of people), from stems and endings.
TAIL_STEMS = _words(
    """Ash Black Brad Brook Cald Chad Cran Dal Dun East Elling Fair Farn Gold Good Hart Hather Hol Kings Lang
Lind Mar Mid Mor New Nor Oak Pem Pres Rad Red Rock Roth Sher Shel Stan Sum Thorn Wake Wal Wat Wes Whit Win Wood Ames
Bran Cort Dray Ever Finch Gar Hal Kirk Lock Mont Pen Quin Rut Sal Tal Ul Ver Wynd Yar Ber Bow Carl Dorn Ed Fen Gran
Hens Iver Jar Kess Lor Mer Nash Orm Pratt Rams Sel Tre Van Wil"""
)
TAIL_ENDINGS = _words(
    """ford wood well ton field ley by worth man son er dale more land burn ham combe brook wick ridge holm
strom sen ing ston ler ner aker mann hardt berg stein ski"""
)

CITIES: list[tuple[str, str, tuple[str, ...], int, int]] = [
    # city, state, area codes, first ZIP, weight (number of ZIP codes it gets, roughly population)
    ("New York", "NY", ("212", "718", "917", "646"), 10001, 180),
    ("Los Angeles", "CA", ("213", "310", "323", "818"), 90001, 150),
    ("Chicago", "IL", ("312", "773", "872"), 60601, 110),
    ("Houston", "TX", ("713", "281", "832"), 77001, 100),
    ("Phoenix", "AZ", ("602", "480", "623"), 85001, 80),
    ("Philadelphia", "PA", ("215", "267"), 19101, 60),
    ("San Antonio", "TX", ("210",), 78201, 60),
    ("San Diego", "CA", ("619", "858"), 92101, 60),
    ("Dallas", "TX", ("214", "469", "972"), 75201, 60),
    ("San Jose", "CA", ("408", "669"), 95101, 40),
    ("Austin", "TX", ("512", "737"), 78701, 45),
    ("Jacksonville", "FL", ("904",), 32201, 40),
    ("Columbus", "OH", ("614",), 43201, 40),
    ("Charlotte", "NC", ("704", "980"), 28201, 40),
    ("Indianapolis", "IN", ("317",), 46201, 40),
    ("Seattle", "WA", ("206", "425"), 98101, 40),
    ("Denver", "CO", ("303", "720"), 80201, 40),
    ("Boston", "MA", ("617", "857"), 2108, 35),
    ("Nashville", "TN", ("615",), 37201, 30),
    ("Portland", "OR", ("503", "971"), 97201, 30),
    ("Las Vegas", "NV", ("702",), 89101, 30),
    ("Detroit", "MI", ("313",), 48201, 30),
    ("Memphis", "TN", ("901",), 38101, 25),
    ("Baltimore", "MD", ("410", "443"), 21201, 25),
    ("Milwaukee", "WI", ("414",), 53201, 25),
    ("Albuquerque", "NM", ("505",), 87101, 20),
    ("Tucson", "AZ", ("520",), 85701, 20),
    ("Fresno", "CA", ("559",), 93701, 20),
    ("Sacramento", "CA", ("916",), 95811, 20),
    ("Atlanta", "GA", ("404", "678", "770"), 30301, 40),
    ("Miami", "FL", ("305", "786"), 33101, 40),
    ("Minneapolis", "MN", ("612",), 55401, 25),
    ("Tampa", "FL", ("813",), 33601, 25),
    ("Pittsburgh", "PA", ("412",), 15201, 20),
    ("Cincinnati", "OH", ("513",), 45201, 20),
    ("St. Louis", "MO", ("314",), 63101, 20),
    ("Orlando", "FL", ("407",), 32801, 20),
    ("Cleveland", "OH", ("216",), 44101, 20),
    ("Kansas City", "MO", ("816",), 64101, 20),
    ("Raleigh", "NC", ("919",), 27601, 20),
    ("Omaha", "NE", ("402",), 68101, 15),
    ("Tulsa", "OK", ("918",), 74101, 15),
    ("Boise", "ID", ("208",), 83701, 10),
    ("Spokane", "WA", ("509",), 99201, 10),
    ("Madison", "WI", ("608",), 53701, 10),
    ("Burlington", "VT", ("802",), 5401, 5),
]
STREETS = _words(
    """Main Oak Maple Cedar Pine Elm Washington Lake Hill Park Walnut Chestnut Spruce Willow Birch Sunset Highland
Lincoln Jefferson Madison Franklin Jackson Church Center River Spring Ridge Valley Meadow Forest Cherry Dogwood Magnolia
Hickory Poplar Sycamore Laurel Holly Adams Monroe Grant Cleveland Union Market Mill School Broad Front Water Bridge
Academy Prospect Pleasant Orchard Hillcrest Fairview Lakeview Woodland Greenwood Sherwood Kingston Cambridge Oxford
Virginia Carolina Dakota Colorado Vermont Delaware Second Third Fourth Fifth Sixth Seventh Eighth Ninth Tenth"""
)
STREET_TYPES = [("St", "Street"), ("Ave", "Avenue"), ("Rd", "Road"), ("Dr", "Drive"), ("Ln", "Lane"), ("Ct", "Court")]
STREET_TYPES += [("Blvd", "Boulevard"), ("Way", "Way"), ("Pl", "Place"), ("Ter", "Terrace")]
EMAIL_DOMAINS = [
    ("gmail.com", 36),
    ("yahoo.com", 14),
    ("hotmail.com", 8),
    ("outlook.com", 7),
    ("icloud.com", 5),
    ("aol.com", 4),
    ("comcast.net", 3),
    ("msn.com", 2),
    ("att.net", 2),
    ("verizon.net", 2),
    ("live.com", 2),
    ("me.com", 1),
    ("protonmail.com", 1),
    ("sbcglobal.net", 2),
    ("bellsouth.net", 1),
    ("cox.net", 1),
    ("charter.net", 1),
    ("fastmail.com", 1),
]
WORK_DOMAINS = ["acme-corp.com", "globex.com", "initech.com", "umbrella-health.org", "stateu.edu", "cityofhope.org"]
WORK_DOMAINS += ["northwind.com", "contoso.com", "fabrikam.com", "wayne-ent.com", "hooli.com", "piedpiper.io"]
PLUS_TAGGABLE = {"gmail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com", "fastmail.com"}
PLUS_TAGS = ["shop", "news", "promo", "amazon", "orders", "spam", "deals", "2024", "retail", "rewards"]
FIRST_NAME_TAIL = 0.12  # share of people with one of the rarer first names


def _ranked_weights(count: int, offset: float, power: float) -> list[float]:
    return [1.0 / (rank + offset) ** power for rank in range(1, count + 1)]


class Picker:
    """Weighted choice by bisect over cumulative weights (random.choices is slow for single draws)."""

    def __init__(self, items: list[Any], weights: list[float]) -> None:
        self.items = items
        self.cum = list(itertools.accumulate(weights))

    def __call__(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect(self.cum, rng.random() * self.cum[-1])]


def ascii_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Nickname groups: every name in a group can stand for the group's formal name.
_VARIANTS: dict[str, set[str]] = {}
for _formal, _variants in NAME_GROUPS.items():
    for _name in (_formal, *_variants):
        _VARIANTS.setdefault(_name, set()).update({_formal, *_variants})


def nickname_variants(first: str) -> list[str]:
    """Other names (formal or short) that stand for the same person as ``first``."""
    key = first.lower()
    return sorted(name.title() for name in _VARIANTS.get(key, set()) - {key})


# ---------------------------------------------------------------------------
# People and records
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Address:
    number: int
    street: str
    street_type: int  # index into STREET_TYPES
    unit: str
    city: int  # index into CITIES
    zip: str


@dataclass
class Person:
    entity: str  # the person's label (the golden record's external id when it has one)
    group: str  # its household or twin pair ("" for a single)
    first: str
    last: str
    dob: dt.date | None
    gender: str  # "Male" | "Female"
    email: str = ""
    phone: str = ""  # ten digits (US)
    address: Address | None = None
    suffix: str = ""
    phone_style: int = 0
    shared_email: str = ""  # the household's (or twins') one email, which only its owner has in the golden set


@dataclass
class Labelled:
    """A CIM Individual and what it really is."""

    external_id: str
    entity: str
    group: str
    kind: str  # golden | duplicate | household | twin | common_name | unrelated | warmup
    record: dict[str, Any]
    related: str = ""  # the golden entity a hard negative is confusable with
    perturbations: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "externalId": self.external_id,
            "entity": self.entity,
            "group": self.group,
            "kind": self.kind,
            "related": self.related,
            "perturbations": self.perturbations,
            "record": self.record,
        }


def phone_text(digits: str, style: int) -> str:
    a, b, c = digits[:3], digits[3:6], digits[6:]
    return (
        f"({a}) {b}-{c}",
        f"{a}-{b}-{c}",
        f"{a}.{b}.{c}",
        f"{a}{b}{c}",
        f"+1 {a} {b} {c}",
        f"+1{a}{b}{c}",
        f"1-{a}-{b}-{c}",
        f"+1 ({a}) {b}-{c}",
    )[style]


def address_point(address: Address, *, long_type: bool = False, zip4: str = "") -> dict[str, Any]:
    city, state, *_ = CITIES[address.city]
    line1 = f"{address.number} {address.street} {STREET_TYPES[address.street_type][1 if long_type else 0]}"
    if address.unit:
        line1 += f" {address.unit}"
    return {
        "contactPointType": "ContactPointAddress",
        "addressLine1": line1,
        "cityName": city,
        "postalCodeText": address.zip + (f"-{zip4}" if zip4 else ""),
        "stateProvinceName": state,
        "countryName": "United States",
    }


def cim(
    person: Person,
    *,
    first: str | None = None,
    last: str | None = None,
    dob: dt.date | None | bool = True,
    gender: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    address: dict[str, Any] | None | bool = True,
) -> dict[str, Any]:
    """The CIM Individual a source system would send for ``person`` (keywords override its values)."""
    record: dict[str, Any] = {
        "firstName": person.first if first is None else first,
        "lastName": person.last if last is None else last,
    }
    birth = person.dob if dob is True else dob
    if birth:
        record["birthDate"] = birth.isoformat()
    sex = person.gender if gender is None else gender
    if sex:
        record["gender"] = sex
    if person.suffix:
        record["nameSuffix"] = person.suffix
    points: list[dict[str, Any]] = []
    mail = person.email if email is None else email
    if mail:
        points.append({"contactPointType": "ContactPointEmail", "emailAddress": mail})
    tel = phone_text(person.phone, person.phone_style) if phone is None and person.phone else phone
    if tel:
        points.append({"contactPointType": "ContactPointPhone", "telephoneNumber": tel})
    place = (address_point(person.address) if person.address else None) if address is True else address
    if place:
        points.append(place)
    record["contactPoints"] = points
    return record


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """How many incoming records of each kind (the same at every golden-set size)."""

    dup_single: int
    dup_household: int
    dup_twin: int
    household: int
    twin: int
    common_name: int
    unrelated: int
    warmup: int = 100

    @classmethod
    def for_total(cls, total: int) -> Design:
        share = {
            "dup_single": 0.65,
            "dup_household": 0.05,
            "dup_twin": 0.05,
            "household": 0.08,
            "twin": 0.05,
            "common_name": 0.10,
            "unrelated": 0.02,
        }
        counts = {k: int(round(total * v)) for k, v in share.items()}
        counts["dup_single"] += total - sum(counts.values())
        return cls(**counts)


class CustomerGenerator:
    """Streams the golden set, then builds the incoming records from reservoirs kept on the way."""

    def __init__(self, golden: int, incoming: int, seed: int = 7) -> None:
        self.size = golden
        self.design = Design.for_total(incoming)
        self.rng = random.Random(seed)
        self.sample_rng = random.Random(seed + 1)  # reservoir sampling, apart from the people's draws
        self.male = Picker(MALE, _ranked_weights(len(MALE), 6, 1.0))
        self.female = Picker(FEMALE, _ranked_weights(len(FEMALE), 6, 1.0))
        top = _ranked_weights(len(SURNAMES), 3, 0.75)
        scale = 0.40 / sum(top)  # the listed surnames cover about 40% of people, as the top ~330 do
        tail = [f"{s}{e}" for s in TAIL_STEMS for e in TAIL_ENDINGS]
        self.rng.shuffle(tail)
        tail_w = _ranked_weights(len(tail), 200, 0.6)
        tail_scale = 0.60 / sum(tail_w)
        self.surname = Picker(SURNAMES + tail, [w * scale for w in top] + [w * tail_scale for w in tail_w])
        self.common_surnames = set(SURNAMES[:100])
        zips: list[tuple[int, str]] = []
        for index, (_, _, _, first_zip, weight) in enumerate(CITIES):
            zips.extend((index, f"{first_zip + i:05d}") for i in range(weight * 2))
        self.zips = zips
        self.zip_picker = Picker(zips, [1.0 / (1 + (i % 97) / 20) for i in range(len(zips))])
        self.zips_by_city: dict[int, list[str]] = {}
        for city, code in zips:
            self.zips_by_city.setdefault(city, []).append(code)
        self.domain = Picker([d for d, _ in EMAIL_DOMAINS], [w for _, w in EMAIL_DOMAINS])
        self.mailboxes: set[str] = set()
        self.phones: set[str] = set()
        self.emitted = 0
        # Reservoirs (uniform samples of the stream, kept while it passes).
        self.singles: list[Person] = []
        self.singles_seen = 0
        self.anchors: list[Person] = []
        self.anchors_seen = 0
        self.test_households: list[list[Person]] = []
        self.test_twins: list[list[Person]] = []
        self.household_in_golden: dict[str, bool] = {}

    # -- people -------------------------------------------------------------
    def first_name(self, gender: str) -> str:
        if self.rng.random() < FIRST_NAME_TAIL:
            return self.rng.choice(MALE_TAIL if gender == "Male" else FEMALE_TAIL)
        name = (self.male if gender == "Male" else self.female)(self.rng)
        if self.rng.random() < 0.08 and (variants := nickname_variants(name)):
            name = self.rng.choice(variants)  # people known by their short name from the start
        return name

    def birth_date(self, low: int = 1938, high: int = 2006) -> dt.date:
        year = int(self.rng.triangular(low, high + 1, 1978))
        start = dt.date(min(max(year, low), high), 1, 1)
        return start + dt.timedelta(days=self.rng.randrange(365))

    def mailbox_key(self, email: str) -> str:
        local, _, domain = email.lower().rpartition("@")
        domain = {"googlemail.com": "gmail.com"}.get(domain, domain)
        if domain in PLUS_TAGGABLE:
            local = local.split("+", 1)[0]
        if domain == "gmail.com":
            local = local.replace(".", "")
        return f"{local}@{domain}"

    def new_email(self, first: str, last: str, *, domain: str | None = None, dob: dt.date | None = None) -> str:
        f = "".join(ch for ch in ascii_fold(first).lower() if ch.isalpha()) or "x"
        lname = "".join(ch for ch in ascii_fold(last).lower() if ch.isalpha()) or "y"
        year = str(dob.year if dob else self.rng.randrange(1950, 2006))
        patterns = [
            f"{f}.{lname}",
            f"{f}{lname}",
            f"{f[0]}{lname}",
            f"{f}_{lname}",
            f"{lname}.{f}",
            f"{f}.{lname}{year[2:]}",
            f"{f}{lname[0]}{year}",
            f"{f[0]}.{lname}",
            f"{lname}{f[0]}",
        ]
        for attempt in range(50):
            local = self.rng.choice(patterns)
            if attempt > 2 or self.rng.random() < 0.35:
                local += str(self.rng.randrange(1, 10 ** self.rng.choice((1, 2, 2, 3, 4))))
            email = f"{local}@{domain or self.domain(self.rng)}"
            key = self.mailbox_key(email)
            if key not in self.mailboxes:
                self.mailboxes.add(key)
                return email
        raise RuntimeError("no free mailbox")

    def new_phone(self, city: int) -> str:
        while True:
            area = self.rng.choice(CITIES[city][2])
            digits = f"{area}{self.rng.randrange(201, 999)}{self.rng.randrange(10000):04d}"
            if digits[3] not in "01" and digits not in self.phones:
                self.phones.add(digits)
                return digits

    def new_address(self, city: int | None = None) -> Address:
        if city is None:
            city, code = self.zip_picker(self.rng)
        else:
            code = self.rng.choice(self.zips_by_city[city])
        unit = self.rng.choice(["Apt 2", "Apt 4B", "Unit 12", "#305", "Apt 7"]) if self.rng.random() < 0.15 else ""
        return Address(
            self.rng.randrange(1, 9900),
            self.rng.choice(STREETS),
            self.rng.randrange(len(STREET_TYPES)),
            unit,
            city,
            code,
        )

    def person(self, entity: str, group: str = "", **known: Any) -> Person:
        gender = known.pop("gender", None) or self.rng.choice(["Male", "Female"])
        address = known.pop("address", None) or self.new_address()
        p = Person(
            entity=entity,
            group=group,
            first=known.pop("first", None) or self.first_name(gender),
            last=known.pop("last", None) or self.surname(self.rng),
            dob=known.pop("dob", None) or self.birth_date(),
            gender=gender,
            address=address,
            phone_style=self.rng.randrange(8),
        )
        if "email" in known:
            p.email = known.pop("email")
        elif self.rng.random() < 0.95:
            p.email = self.new_email(p.first, p.last, dob=p.dob)
        if "phone" in known:
            p.phone = known.pop("phone")
        elif self.rng.random() < 0.8:
            p.phone = self.new_phone(address.city)
        for name, value in known.items():
            setattr(p, name, value)
        return p

    def household(self, group: str, size: int) -> list[Person]:
        """A family at one address: one surname, one family email (the owner's), maybe a landline."""
        owner = self.person(f"{group}.1", group, dob=self.birth_date(1940, 1990))
        owner.email = owner.email or self.new_email(owner.first, owner.last, dob=owner.dob)
        landline = self.new_phone(owner.address.city) if self.rng.random() < 0.4 else ""
        if self.rng.random() < 0.3:
            owner.email = self.new_email("the", f"{owner.last}s", dob=owner.dob)  # thesmiths@...
        if landline and self.rng.random() < 0.5:
            owner.phone = landline
        members = [owner]
        for m in range(2, size + 1):
            role = self.rng.random()
            if m == 2 and role < 0.6:  # a partner
                gender = "Female" if owner.gender == "Male" else "Male"
                years = owner.dob.year + self.rng.randint(-6, 6)
                dob = self.birth_date(min(max(years, 1938), 2006), min(max(years, 1938), 2006))
                first = None
            else:  # a grown-up child, now and then a junior
                low = min(owner.dob.year + 20, 2006)
                dob = self.birth_date(low, min(owner.dob.year + 40, 2006))
                gender = self.rng.choice(["Male", "Female"])
                first = None
                if gender == owner.gender == "Male" and self.rng.random() < 0.08:
                    first = owner.first  # a junior
            member = self.person(
                f"{group}.{m}",
                group,
                gender=gender,
                first=first,
                last=owner.last,
                dob=dob,
                address=owner.address,
                email="",
                phone=landline if landline and self.rng.random() < 0.5 else "",
            )
            if first:
                member.suffix = "Jr"
            if self.rng.random() < 0.7:
                member.email = self.new_email(member.first, member.last, dob=member.dob)
            if not member.phone and self.rng.random() < 0.7:
                member.phone = self.new_phone(owner.address.city)
            members.append(member)
        for member in members:
            member.shared_email = owner.email
        return members

    def twins(self, group: str) -> list[Person]:
        """Same surname, birth date, address and family email; another first name."""
        a = self.person(f"{group}.1", group, dob=self.birth_date(1960, 2006))
        genders = self.rng.choice(
            [("Male", "Male"), ("Female", "Female"), (a.gender, "Female" if a.gender == "Male" else "Male")]
        )
        a.gender = genders[0]
        a.first = self.first_name(a.gender)
        a.email = ""
        b_first = self.first_name(genders[1])
        pool = MALE if genders[1] == "Male" else FEMALE
        if self.rng.random() < 0.3:  # alliterative twins (Jayden and Jaylen, Daniel and Danielle)
            near = [n for n in pool if n[0] == a.first[0] and n != a.first]
            b_first = self.rng.choice(near) if near else b_first
        while b_first.lower() == a.first.lower() or b_first.lower() in {v.lower() for v in nickname_variants(a.first)}:
            b_first = self.first_name(genders[1])
        b = self.person(
            f"{group}.2",
            group,
            gender=genders[1],
            first=b_first,
            last=a.last,
            dob=a.dob,
            address=a.address,
            email="",
            phone=a.phone if a.phone and self.rng.random() < 0.3 else "",
        )
        if self.rng.random() < 0.6:
            b.email = self.new_email(b.first, b.last, dob=b.dob)
        if not b.phone and self.rng.random() < 0.7:
            b.phone = self.new_phone(a.address.city)
        a.email = a.email or self.new_email(a.first, a.last, dob=a.dob)
        a.shared_email = b.shared_email = a.email
        return [a, b]

    # -- the golden stream ----------------------------------------------------
    def _keep(self, reservoir: list[Any], seen: int, size: int, item: Any) -> None:
        if len(reservoir) < size:
            reservoir.append(item)
        else:
            j = self.sample_rng.randrange(seen)
            if j < size:
                reservoir[j] = item

    def _golden(self, person: Person) -> Labelled:
        """A person as the CRM holds them: complete but for a few birth dates and genders."""
        self.emitted += 1
        dob = None if self.rng.random() < 0.05 else person.dob
        gender = "" if self.rng.random() < 0.05 else person.gender
        return Labelled(person.entity, person.entity, person.group, "golden", cim(person, dob=dob, gender=gender))

    def golden(self) -> Iterator[Labelled]:
        """The golden set, exactly ``size`` records; test households and twins at random places."""
        d = self.design
        tests = [("h", i) for i in range(d.household)] + [("t", i) for i in range(d.twin + d.dup_twin)]
        if self.size < 8 * len(tests):
            raise SystemExit(f"--golden {self.size} is too small for {len(tests)} test households and twins")
        positions = sorted(self.rng.sample(range(self.size - 6 * len(tests)), len(tests)))
        self.rng.shuffle(tests)
        pending = list(zip(positions, tests, strict=True))
        group_no = itertools.count(1)
        while self.emitted < self.size:
            if pending and self.emitted >= pending[0][0]:
                _, (kind, i) = pending.pop(0)
                yield from self._test_group(kind, i, next(group_no))
                continue
            room = self.size - self.emitted
            roll = self.rng.random()
            g = next(group_no)
            if roll < 0.04 and room > 6:  # a background household
                members = self.household(f"h{g}", self.rng.choice([2, 2, 3, 3, 4]))
                yield self._golden(members[0])
                for m in members[1:]:
                    if self.rng.random() < 0.5:
                        yield self._golden(m)
            elif roll < 0.05 and room > 6:  # background twins
                a, b = self.twins(f"t{g}")
                yield self._golden(a)
                if self.rng.random() < 0.5:
                    yield self._golden(b)
            else:
                p = self.person(f"s{g}")
                self.singles_seen += 1
                self._keep(self.singles, self.singles_seen, d.dup_single + d.warmup, p)
                if p.last in self.common_surnames:
                    self.anchors_seen += 1
                    self._keep(self.anchors, self.anchors_seen, d.common_name, p)
                yield self._golden(p)
        if pending or self.emitted != self.size:
            raise RuntimeError("the golden stream did not place every test group")

    def _test_group(self, kind: str, index: int, g: int) -> Iterator[Labelled]:
        if kind == "h":
            # Every test household has a member the hub does not know yet (the negative) and,
            # for the first dup_household of them, a known member besides the owner (a duplicate target).
            members = self.household(f"h{g}", self.rng.choice([2, 3, 3, 4, 5]))
            known = [members[0]] + [m for m in members[1:-1] if self.rng.random() < 0.5]
            for m in members:
                self.household_in_golden[m.entity] = m in known
            self.test_households.append(members)
            for m in known:
                yield self._golden(m)
            return
        a, b = self.twins(f"t{g}")
        # The first `twin` pairs arrive with twin B unknown (the negative); the others are both known.
        both = index >= self.design.twin
        self.test_twins.append([a, b])
        self.household_in_golden[a.entity] = True
        self.household_in_golden[b.entity] = both
        yield self._golden(a)
        if both:
            yield self._golden(b)

    # -- incoming -----------------------------------------------------------
    def incoming(self) -> list[Labelled]:
        """The incoming records (call after the golden stream is exhausted), shuffled; warm-up ones first."""
        d = self.design
        rng = self.rng
        out: list[Labelled] = []
        seq = itertools.count(1)

        def label(kind: str, person: Person, record: dict[str, Any], related: str, perturbations: list[str]) -> None:
            out.append(Labelled(f"in{next(seq)}", person.entity, person.group, kind, record, related, perturbations))

        singles = list(self.singles)
        rng.shuffle(singles)
        warm = singles[: d.warmup]
        for p in singles[d.warmup : d.warmup + d.dup_single]:
            record, perturbations = self.duplicate(p)
            label("duplicate", p, record, p.entity, perturbations)
        households = list(self.test_households)
        rng.shuffle(households)
        for i, members in enumerate(households[: d.household]):
            newcomer = next(m for m in reversed(members) if not self.household_in_golden[m.entity])
            label("household", newcomer, self.household_member(newcomer), members[0].entity, [])
            if i < d.dup_household:
                known = [m for m in members if self.household_in_golden[m.entity]]
                target = rng.choice(known)
                record, perturbations = self.duplicate(target)
                label("duplicate", target, record, target.entity, [*perturbations, "household_member"])
        pairs = list(self.test_twins)
        unknown_b = [p for p in pairs if not self.household_in_golden[p[1].entity]]
        both = [p for p in pairs if self.household_in_golden[p[1].entity]]
        for a, b in unknown_b[: d.twin]:
            label("twin", b, self.household_member(b), a.entity, [])
        for a, b in both[: d.dup_twin]:
            target = rng.choice([a, b])
            record, perturbations = self.duplicate(target)
            label("duplicate", target, record, target.entity, [*perturbations, "twin_member"])
        anchors = list(self.anchors)
        rng.shuffle(anchors)
        for n, anchor in enumerate(anchors[: d.common_name]):
            p = self.namesake(anchor, f"c{n + 1}")
            label("common_name", p, self.source_record(p), anchor.entity, [])
        for n in range(d.unrelated):
            p = self.person(f"u{n + 1}", "")
            label("unrelated", p, self.source_record(p), "", [])
        counts = {kind: sum(1 for x in out if x.kind == kind) for kind in ("duplicate", "household", "twin")}
        counts |= {kind: sum(1 for x in out if x.kind == kind) for kind in ("common_name", "unrelated")}
        wanted = {"duplicate": d.dup_single + d.dup_household + d.dup_twin, "household": d.household, "twin": d.twin}
        wanted |= {"common_name": d.common_name, "unrelated": d.unrelated}
        if counts != wanted or len(warm) != d.warmup:
            raise SystemExit(f"the golden set is too small for the incoming design: {counts} != {wanted}")
        rng.shuffle(out)
        warmups = []
        for p in warm:
            record, perturbations = self.duplicate(p)
            warmups.append(Labelled(f"warm{len(warmups) + 1}", p.entity, "", "warmup", record, p.entity, perturbations))
        return warmups + out

    def namesake(self, anchor: Person, entity: str) -> Person:
        """Someone else with the anchor's name (now and then its nickname form), maybe in the same postcode."""
        first = anchor.first
        if self.rng.random() < 0.2 and (variants := nickname_variants(first)):
            first = self.rng.choice(variants)
        address = None
        if anchor.address and self.rng.random() < 0.3:
            address = replace(self.new_address(anchor.address.city), zip=anchor.address.zip)
        return self.person(entity, "", gender=anchor.gender, first=first, last=anchor.last, address=address)

    # -- how sources garble a record ----------------------------------------
    def typo(self, name: str) -> str:
        letters = list(name)
        if len(letters) < 3:
            return name + name[-1]
        op = self.rng.random()
        if op < 0.5:  # transposition of two neighbours
            i = self.rng.randrange(len(letters) - 1)
            if letters[i] == letters[i + 1]:
                i = (i + 1) % (len(letters) - 1)
            letters[i], letters[i + 1] = letters[i + 1], letters[i]
        elif op < 0.85:  # a dropped letter
            del letters[self.rng.randrange(len(letters))]
        else:  # a doubled letter
            i = self.rng.randrange(len(letters))
            letters.insert(i, letters[i])
        result = "".join(letters)
        return result[0].upper() + result[1:].lower() if result[0].islower() and name[0].isupper() else result

    def email_variant(self, email: str) -> tuple[str, str]:
        local, _, domain = email.rpartition("@")
        roll = self.rng.random()
        if domain == "gmail.com" and roll < 0.45:
            if "." in local:
                return local.replace(".", "") + "@gmail.com", "email_gmail_dots"
            cut = self.rng.randrange(1, max(2, len(local) - 1))
            return f"{local[:cut]}.{local[cut:]}@gmail.com", "email_gmail_dots"
        if domain == "gmail.com" and roll < 0.6:
            return f"{local}@googlemail.com", "email_googlemail"
        if domain in PLUS_TAGGABLE:
            return f"{local}+{self.rng.choice(PLUS_TAGS)}@{domain}", "email_plus_tag"
        return self.email_case(email), "email_case"

    def email_case(self, email: str) -> str:
        local, _, domain = email.rpartition("@")
        styles = [email.upper(), local.title() + "@" + domain.title(), local.capitalize() + "@" + domain]
        return self.rng.choice(styles) if local else email

    def source_record(self, p: Person, perturbations: list[str] | None = None) -> dict[str, Any]:
        """The record another source system holds for ``p``: its own gaps and formats."""
        perturbations = perturbations if perturbations is not None else []
        rng = self.rng
        dob: Any = p.dob
        if p.dob and rng.random() < 0.2:
            dob = None
            perturbations.append("no_dob")
        gender = p.gender
        roll = rng.random()
        gender = "" if roll < 0.3 else (gender[0] if roll < 0.5 else gender.lower() if roll < 0.6 else gender)
        phone = None
        roll = rng.random()
        if not p.phone or roll < 0.25:
            phone = ""
            perturbations.append("no_phone")
        elif roll < 0.55:
            phone = phone_text(p.phone, rng.choice([s for s in range(8) if s != p.phone_style]))
            perturbations.append("phone_format")
        elif roll < 0.7:
            phone = phone_text(self.new_phone(p.address.city if p.address else 0), rng.randrange(8))
            perturbations.append("phone_new")
        address: Any = True
        roll = rng.random()
        if not p.address or roll < 0.2:
            address = None
            perturbations.append("no_address")
        elif roll < 0.45:
            moved = self.new_address(p.address.city if rng.random() < 0.5 else None)
            while moved.zip == p.address.zip:
                moved = self.new_address()
            address = address_point(moved, long_type=rng.random() < 0.3)
            perturbations.append("moved")
        elif roll < 0.65:
            address = address_point(p.address, long_type=True, zip4=f"{rng.randrange(10000):04d}")
            perturbations.append("address_format")
        first, last = p.first, p.last
        if rng.random() < 0.06:
            first, last = first.upper(), last.upper()
        return cim(p, first=first, last=last, dob=dob, gender=gender, phone=phone, address=address)

    def duplicate(self, p: Person) -> tuple[dict[str, Any], list[str]]:
        """Another source's record of golden person ``p``."""
        rng = self.rng
        perturbations: list[str] = []
        record = self.source_record(p, perturbations)
        first, last = record["firstName"], record["lastName"]
        if rng.random() < 0.25 and (variants := nickname_variants(first)):
            first = rng.choice(variants)
            perturbations.append("nickname")
        if rng.random() < 0.2:
            if rng.random() < 0.4:
                first = self.typo(first)
                perturbations.append("typo_first")
            else:
                last = self.typo(last)
                perturbations.append("typo_last")
        if p.gender == "Female" and rng.random() < 0.04:
            last = self.surname(rng)
            perturbations.append("married_name")
        record["firstName"], record["lastName"] = first, last
        shared = getattr(p, "shared_email", "")
        points = [c for c in record["contactPoints"] if c["contactPointType"] != "ContactPointEmail"]
        roll = rng.random()
        email = ""
        if shared and shared != p.email and rng.random() < 0.5:
            email = shared
            perturbations.append("email_household")
        elif not p.email:
            if roll < 0.6:
                email = self.new_email(first, last, domain=rng.choice(WORK_DOMAINS + ["yahoo.com", "gmail.com"]))
                perturbations.append("email_new")
            else:
                perturbations.append("no_email")
        elif roll < 0.35:
            email = p.email
        elif roll < 0.47:
            email = self.email_case(p.email)
            perturbations.append("email_case")
        elif roll < 0.6:
            email, how = self.email_variant(p.email)
            perturbations.append(how)
        elif roll < 0.8:
            domain = p.email.rpartition("@")[2]
            other = rng.choice([d for d in WORK_DOMAINS + [x for x, _ in EMAIL_DOMAINS] if d != domain])
            email = self.new_email(p.first, p.last, domain=other, dob=p.dob)
            perturbations.append("email_new")
        else:
            perturbations.append("no_email")
        if email:
            points.insert(0, {"contactPointType": "ContactPointEmail", "emailAddress": email})
        record["contactPoints"] = points
        return record, perturbations

    def household_member(self, p: Person) -> dict[str, Any]:
        """A household member or twin the hub does not know, arriving with the family's email."""
        record = self.source_record(p)
        shared = getattr(p, "shared_email", "")
        points = [c for c in record["contactPoints"] if c["contactPointType"] != "ContactPointEmail"]
        if shared and self.rng.random() < 0.9:
            points.insert(0, {"contactPointType": "ContactPointEmail", "emailAddress": shared})
        elif p.email:
            points.insert(0, {"contactPointType": "ContactPointEmail", "emailAddress": p.email})
        record["contactPoints"] = points
        return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=int, default=10_000)
    parser.add_argument("--incoming", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    generator = CustomerGenerator(args.golden, args.incoming, args.seed)
    with (args.out / "golden.jsonl").open("w") as handle:
        for item in generator.golden():
            handle.write(json.dumps(item.as_json(), ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    with (args.out / "incoming.jsonl").open("w") as handle:
        for item in generator.incoming():
            counts[item.kind] = counts.get(item.kind, 0) + 1
            handle.write(json.dumps(item.as_json(), ensure_ascii=False) + "\n")
    print(json.dumps({"golden": generator.emitted, "incoming": counts, "out": str(args.out)}))


if __name__ == "__main__":
    main()
