"""Matching building blocks and every rule kind, without a database."""

from __future__ import annotations

import datetime as dt
import re

import pycountry
import pytest

from customers.cim import parse_individual
from customers.nicknames import canonical_first_name, name_groups
from customers.normalize import (
    country_code,
    e164,
    fold,
    jaro_winkler,
    normalize_postal_code,
    provider_email,
    soundex,
)
from customers.resolution import rules as rules_module
from customers.resolution.blocking import ATTRIBUTES, blocking_keys, profile_from_source
from customers.resolution.rules import (
    OUTCOME_AUTO,
    OUTCOME_NONE,
    OUTCOME_SUSPECT,
    AttributeComparison,
    Criterion,
    RuleSpec,
    compare_attribute,
    decide,
    parse_criteria,
)
from customers.resolution.weights import level_of


def person(first="Robert", last="Smith", email="rob@example.com", phone="+1 415 555 0100", **extra):
    points = []
    if email:
        points.append({"contactPointType": "ContactPointEmail", "emailAddress": email})
    if phone:
        points.append({"contactPointType": "ContactPointPhone", "telephoneNumber": phone})
    if extra.get("postal"):
        points.append(
            {
                "contactPointType": "ContactPointAddress",
                "addressLine1": extra.get("street", "1 Main St"),
                "postalCodeText": extra["postal"],
                "countryName": extra.get("country", "US"),
            }
        )
    data = {"firstName": first, "lastName": last, "contactPoints": points}
    if extra.get("birth"):
        data["birthDate"] = extra["birth"]
    return profile_from_source(parse_individual(data))


def rule(outcome, *criteria):
    return RuleSpec("r", outcome, tuple(criteria))


def test_normalisation_building_blocks():
    assert fold("  ZOË  Müller ") == "zoe muller"
    assert e164("(415) 555-0100") == "+14155550100"
    assert e164("+44 20 7946 0018") == "+442079460018"
    assert e164("020 7946 0018", "GB") == "+442079460018"
    assert provider_email("j.o.h.n+shop@googlemail.com") == "john@gmail.com"
    assert provider_email("j.o.h.n+shop@example.com") == "j.o.h.n+shop@example.com"  # not a known provider
    assert provider_email("ann+news@outlook.com") == "ann@outlook.com"
    assert soundex("Robert") == soundex("Rupert") == "R163"
    assert soundex("Tymczak") == "T522" and soundex("Ashcraft") == "A261"
    assert jaro_winkler("martha", "marhta") == pytest.approx(0.961, abs=0.001)
    assert jaro_winkler("", "x") == 0.0 and jaro_winkler("same", "same") == 1.0
    assert country_code("United Kingdom") == "GB" and country_code("u.s.a") == "US" and country_code("de") == "DE"
    assert normalize_postal_code("94105-1234", "US") == "94105" and normalize_postal_code("sw1y 4jh", "GB") == "SW1Y4JH"
    assert "robert" in name_groups("bob") and canonical_first_name("bob") == canonical_first_name("robert")


def test_nfc_and_nfd_names_and_emails_are_the_same_values():
    nfc = person(first="Zoë", email="zoë@example.com")
    nfd = person(first="Zoe\u0308", email="zoe\u0308@example.com")
    assert nfc.keys("first_name") == nfd.keys("first_name") == {"zoe"}
    assert nfc.keys("email") == nfd.keys("email")


def test_blocking_keys_cover_email_phone_and_phonetic_name_with_birth_date():
    keys = blocking_keys(person(email="Rob.Smith+x@gmail.com", birth="1980-02-03", postal="94105"))
    kinds = {kind for kind, _ in keys}
    assert kinds == {"email", "phone", "name_dob", "first_dob", "postal_name", "postal_first"}
    assert ("email", "robsmith@gmail.com") in keys
    assert ("name_dob", "S530|1980-02-03") in keys
    assert ("first_dob", "robert|1980-02-03") in keys
    assert ("postal_first", "94105|robert") in keys


def test_a_surname_typo_that_changes_its_soundex_still_meets_in_the_same_postcode():
    """Issue 13: no birth date, a new email and phone, a surname typo (Scott -> Sctot: S300 -> S323)."""
    golden = person(first="Vera", last="Scott", email="vera.scott@gmail.com", phone="213 855 1269", postal="32275")
    incoming = person(first="Vera", last="Sctot", email="", phone="310 900 1454", postal="32275")
    assert blocking_keys(incoming) & blocking_keys(golden) == {("postal_first", "32275|vera")}
    rules = [rule(OUTCOME_SUSPECT, Criterion("first_name", "nickname", 0.85), Criterion("last_name", "fuzzy", 0.85))]
    assert decide(rules, incoming, golden).outcome == OUTCOME_SUSPECT
    # Nicknames meet too: the key is the nickname-canonical first name.
    assert blocking_keys(person(first="Bob", postal="32275")) & blocking_keys(person(first="Robert", postal="32275"))


def test_countries_by_iso_3166_and_the_hubs_own_aliases():
    """pycountry's 249 countries by name, official name, common name and codes; the hub's aliases on top."""
    expected = {
        "United Kingdom": "GB",
        "United Kingdom of Great Britain and Northern Ireland": "GB",
        "GBR": "GB",
        "UK": "GB",
        "England": "GB",
        "USA": "US",
        "u.s.a": "US",
        "United States of America": "US",
        "de": "DE",
        "Deutschland": "DE",
        "Portugal": "PT",
        "PRT": "PT",
        "Korea, Republic of": "KR",
        "Republic of Korea": "KR",
        "South Korea": "KR",
        "Viet Nam": "VN",
        "Vietnam": "VN",
        "Côte d’Ivoire": "CI",
        "Ivory Coast": "CI",
        "Russia": "RU",
        "Türkiye": "TR",
        "Turkey": "TR",
        "Holland": "NL",
        "The Netherlands": "NL",
        "Bolivia": "BO",
    }
    assert {name: country_code(name) for name in expected} == expected
    assert country_code("Narnia") == "narnia" and country_code("zz") == "ZZ"  # unknown: folded, as before
    every = list(pycountry.countries)
    assert len(every) == 249
    assert all(country_code(c.name) == country_code(c.alpha_3) == c.alpha_2 for c in every)
    # A street in Lisbon keys its country by code, however the source spells it.
    assert person(postal="1100-148", country="Portugal").keys("address") == {"1 main st|1100148|PT"}


def test_the_maintained_nickname_table_is_merged_without_joining_two_given_names():
    assert name_groups("ike") & name_groups("isaac") and name_groups("abe") & name_groups("abraham")
    assert name_groups("peggy") & name_groups("margaret")  # ours and the package's agree
    # The package calls Emma a nickname of Emily; both are given names: twins Emily and Emma stay two people.
    assert not name_groups("emily") & name_groups("emma")
    # Blocking keys stay the hub's own groups: the package's chains would part "bob" from "robert".
    assert canonical_first_name("bob") == canonical_first_name("robert") == "robert"
    assert canonical_first_name("ike") == "ike"


@pytest.mark.parametrize(
    ("criterion", "left", "right", "holds"),
    [
        (Criterion("email", "exact"), {"email": "Rob@Example.com"}, {"email": "Rob@Example.com"}, True),
        (Criterion("email", "exact"), {"email": "Rob@Example.com"}, {"email": "rob@example.com"}, False),
        (Criterion("email", "normalized"), {"email": "Rob@Example.com"}, {"email": "rob@example.com"}, True),
        (Criterion("email", "normalized"), {"email": "r.ob@gmail.com"}, {"email": "rob@gmail.com"}, False),
        (Criterion("email", "provider"), {"email": "r.ob+x@gmail.com"}, {"email": "rob@gmail.com"}, True),
        (Criterion("last_name", "fuzzy", 0.9), {"last": "Smith"}, {"last": "Smiht"}, True),
        (Criterion("last_name", "fuzzy", 0.97), {"last": "Smith"}, {"last": "Smiht"}, False),
        (Criterion("last_name", "fuzzy", 0.9), {"last": "Smith"}, {"last": "Jones"}, False),
        (Criterion("last_name", "phonetic"), {"last": "Meyer"}, {"last": "Maier"}, True),
        (Criterion("last_name", "phonetic"), {"last": "Meyer"}, {"last": "Fischer"}, False),
        (Criterion("first_name", "nickname"), {"first": "Bob"}, {"first": "Robert"}, True),
        (Criterion("first_name", "nickname"), {"first": "Bob"}, {"first": "William"}, False),
        (Criterion("first_name", "nickname", 0.9), {"first": "Jonh"}, {"first": "John"}, True),
        (Criterion("phone", "normalized"), {"phone": "(415) 555-0100"}, {"phone": "+1 415 555 0100"}, True),
    ],
)
def test_each_comparison_method(criterion, left, right, holds):
    def build(spec):
        return person(
            first=spec.get("first", "Robert"),
            last=spec.get("last", "Smith"),
            email=spec.get("email", ""),
            phone=spec.get("phone", ""),
        )

    decision = decide([rule(OUTCOME_AUTO, criterion)], build(left), build(right))
    assert (decision.outcome == OUTCOME_AUTO) is holds
    everything = {"first_name", "last_name", "email", "phone", "birth_date"}
    # A match is explained on every attribute; a no-match only on what the rules looked at
    # (deciding is lazy), unless the whole comparison is asked for, as the review page does.
    if holds:
        assert set(decision.comparisons) >= everything
    else:
        assert criterion.attribute in decision.comparisons
        full = decide([rule(OUTCOME_AUTO, criterion)], build(left), build(right), explain_all=True)
        assert set(full.comparisons) >= everything and full.outcome == decision.outcome


_METHODS = ("exact", "normalized", "provider", "phonetic", "nickname", "similarity", "incoming", "candidate")


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (person(first="Bob", last="Smiht", birth="1980-02-03", postal="94105"), person(postal="94105")),
        (person(email="r.ob+x@gmail.com", phone=""), person(email="rob@gmail.com", phone="")),
        (person(first="Jonh", street="1 Main St", postal="94105"), person(street="1 Main St", postal="10001")),
        (person(email="", phone=""), person(email="ann@example.com", first="Ann", last="Lee")),
    ],
)
def test_an_attribute_compared_lazily_answers_as_when_every_method_is_read_at_once(left, right):
    """Each method is worked out when first read: in whatever order, the answers are the same."""
    for name in ATTRIBUTES:
        forwards = compare_attribute(name, left, right)
        answers = {method: getattr(forwards, method) for method in _METHODS}
        backwards = compare_attribute(name, left, right)
        assert {method: getattr(backwards, method) for method in reversed(_METHODS)} == answers, name
        assert compare_attribute(name, left, right).as_dict() == forwards.as_dict(), name
        settled = AttributeComparison(forwards.blank, **{m: answers[m] for m in _METHODS})
        assert settled.as_dict() == forwards.as_dict() and settled.verdict == forwards.verdict, name


@pytest.mark.parametrize(
    ("attribute", "left", "right", "exact", "level"),
    [
        # A street line as sent says nothing about the town: "1 Main St" is in most of them.
        (
            "address",
            {"street": "1 Main St", "postal": "94105"},
            {"street": "1 Main St", "postal": "10001"},
            False,
            "fuzzy_90",
        ),
        (
            "address",
            {"street": "1 Main St ", "postal": "94105"},
            {"street": "1 Main St", "postal": "94105"},
            True,
            "normalized",
        ),
        (
            "address",
            {"street": "1 MAIN ST.", "postal": "94105"},
            {"street": "1 Main St", "postal": "94105"},
            False,
            "normalized",
        ),
    ],
)
def test_the_same_value_as_sent_is_exact_only_where_it_is_read_the_same_way(attribute, left, right, exact, level):
    comparison = compare_attribute(attribute, person(**left), person(**right))
    assert comparison.exact is exact
    assert level_of(attribute, comparison) == level


def test_a_pair_another_email_settles_is_not_compared_by_similarity(monkeypatch):
    """The laziness that makes a crowded key cheap: no Jaro-Winkler that no criterion asked for."""
    calls = []
    monkeypatch.setattr(rules_module, "jaro_winkler", lambda a, b: calls.append((a, b)) or jaro_winkler(a, b))
    only_email = rule(OUTCOME_AUTO, Criterion("email", "normalized"), Criterion("last_name", "fuzzy", 0.9))
    decision = decide([only_email], person(email="a@example.com"), person(email="b@example.com"))
    assert decision.outcome == OUTCOME_NONE and calls == []
    assert decide([only_email], person(last="Smiht"), person()).outcome == OUTCOME_AUTO
    assert ("smiht", "smith") in calls  # a match is explained on everything, similarities included


def test_auto_rules_win_over_suspect_rules_and_blanks_alone_prove_nothing():
    auto = rule(OUTCOME_AUTO, Criterion("email", "normalized"), Criterion("first_name", "nickname"))
    suspect = rule(OUTCOME_SUSPECT, Criterion("email", "normalized"))
    assert decide([suspect, auto], person(first="Bob"), person(first="Robert")).outcome == OUTCOME_AUTO
    assert decide([suspect, auto], person(first="Ann"), person(first="Robert")).outcome == OUTCOME_SUSPECT
    with_blank = rule(
        OUTCOME_AUTO, Criterion("email", "normalized"), Criterion("birth_date", "exact", blank_matches=True)
    )
    without_blank = rule(OUTCOME_AUTO, Criterion("email", "normalized"), Criterion("birth_date", "exact"))
    assert decide([with_blank], person(), person(birth="1980-01-01")).outcome == OUTCOME_AUTO
    assert decide([without_blank], person(), person(birth="1980-01-01")).outcome == OUTCOME_NONE
    blank_only = rule(OUTCOME_AUTO, Criterion("postal_code", "normalized", blank_matches=True))
    assert decide([blank_only], person(), person()).outcome == OUTCOME_NONE


def test_a_decision_explains_itself():
    decision = decide(
        [rule(OUTCOME_AUTO, Criterion("email", "normalized"), Criterion("last_name", "fuzzy", 0.9))],
        person(last="Smiht"),
        person(last="Smith"),
    )
    explained = decision.explanation()
    assert explained["outcome"] == "auto_merge" and 0.9 < explained["score"] <= 1.0
    assert explained["attributes"]["last_name"]["verdict"] == "phonetic"
    assert explained["attributes"]["last_name"]["incoming"] == ["Smiht"]
    assert explained["attributes"]["email"]["verdict"] == "exact"


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ([], "non-empty"),
        ([{"attribute": "shoe_size", "method": "exact"}], "criteria[0].attribute"),
        ([{"attribute": "birth_date", "method": "fuzzy", "threshold": 0.9}], "criteria[0].method"),
        ([{"attribute": "last_name", "method": "fuzzy"}], "threshold is required"),
        ([{"attribute": "last_name", "method": "fuzzy", "threshold": 2}], "between 0 and 1"),
        ([{"attribute": "last_name", "method": "exact", "weight": 1}], "unknown keys"),
    ],
)
def test_invalid_criteria_are_refused_with_the_culprit_named(criteria, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_criteria(criteria)


def test_birth_dates_compare_exactly():
    left = person(birth="1980-02-03")
    assert (
        decide([rule(OUTCOME_AUTO, Criterion("birth_date", "exact"))], left, person(birth="1980-02-03")).outcome
        == OUTCOME_AUTO
    )
    assert (
        decide([rule(OUTCOME_AUTO, Criterion("birth_date", "exact"))], left, person(birth="1980-03-02")).outcome
        == OUTCOME_NONE
    )
    assert dt.date(1980, 2, 3).isoformat() in left.keys("birth_date")
