"""The match and survivorship rules a new hub starts with (seeded by a migration, editable in admin)."""

from __future__ import annotations

from typing import Any

FIRST_NAME = {"attribute": "first_name", "method": "nickname", "threshold": 0.9}
LAST_NAME = {"attribute": "last_name", "method": "fuzzy", "threshold": 0.9}
# Father and junior, brother and sister (twins above all) differ here when both sides say.
NOT_CONTRADICTED = [
    {"attribute": "gender", "method": "normalized", "blank_matches": True},
    {"attribute": "name_suffix", "method": "normalized", "blank_matches": True},
]

DEFAULT_MATCH_RULES: list[dict[str, Any]] = [
    {
        "name": "Same email, same name",
        "outcome": "auto_merge",
        "priority": 10,
        "description": "The same address (case-insensitive) and names that agree or are missing.",
        "criteria": [
            {"attribute": "email", "method": "normalized"},
            FIRST_NAME | {"blank_matches": True},
            LAST_NAME | {"blank_matches": True},
            {"attribute": "birth_date", "method": "exact", "blank_matches": True},
            *NOT_CONTRADICTED,
        ],
    },
    {
        "name": "Same mailbox by provider rules, same name",
        "outcome": "auto_merge",
        "priority": 20,
        "description": "Gmail dots and +tags ignored (only for providers that ignore them), both names present.",
        "criteria": [
            {"attribute": "email", "method": "provider"},
            FIRST_NAME,
            LAST_NAME,
            {"attribute": "birth_date", "method": "exact", "blank_matches": True},
            *NOT_CONTRADICTED,
        ],
    },
    {
        "name": "Same phone, same name",
        "outcome": "auto_merge",
        "priority": 30,
        "description": "The same E.164 phone number and both names agreeing.",
        "criteria": [
            {"attribute": "phone", "method": "normalized"},
            FIRST_NAME,
            LAST_NAME,
            {"attribute": "birth_date", "method": "exact", "blank_matches": True},
            *NOT_CONTRADICTED,
        ],
    },
    {
        "name": "Name, birth date and postcode",
        "outcome": "auto_merge",
        "priority": 40,
        "description": "Names agreeing (nicknames, typos), the same birth date and postcode.",
        "criteria": [
            FIRST_NAME,
            LAST_NAME,
            {"attribute": "birth_date", "method": "exact"},
            {"attribute": "postal_code", "method": "normalized"},
            *NOT_CONTRADICTED,
        ],
    },
    {
        "name": "Name and birth date",
        "outcome": "suspect",
        "priority": 10,
        "description": "Names sounding alike with the same birth date: someone who moved or changed email.",
        "criteria": [
            {"attribute": "first_name", "method": "nickname", "threshold": 0.85},
            {"attribute": "last_name", "method": "phonetic"},
            {"attribute": "birth_date", "method": "exact"},
        ],
    },
    {
        "name": "Shared mailbox",
        "outcome": "suspect",
        "priority": 20,
        "description": "One mailbox, names that differ: a household address or a changed name.",
        "criteria": [{"attribute": "email", "method": "provider"}],
    },
    {
        "name": "Shared phone",
        "outcome": "suspect",
        "priority": 30,
        "description": "One phone number, names that differ.",
        "criteria": [{"attribute": "phone", "method": "normalized"}],
    },
    {
        "name": "Name and postcode",
        "outcome": "suspect",
        "priority": 40,
        "description": "Names agreeing loosely in the same postcode.",
        "criteria": [
            {"attribute": "first_name", "method": "nickname", "threshold": 0.85},
            {"attribute": "last_name", "method": "fuzzy", "threshold": 0.85},
            {"attribute": "postal_code", "method": "normalized"},
        ],
    },
    {
        "name": "First name and birth date, surname changed",
        "outcome": "suspect",
        "priority": 50,
        "description": "Same first name and birth date with another surname and a shared postcode or phone.",
        "criteria": [
            {"attribute": "first_name", "method": "nickname", "threshold": 0.92},
            {"attribute": "birth_date", "method": "exact"},
            {"attribute": "postal_code", "method": "normalized"},
        ],
    },
]

# Guards (only with an active matcher model): whatever the match weight, these pairs are not
# merged automatically but go to review. An auto-merge rule above still merges.
DEFAULT_MATCH_RULES += [
    {
        "name": "Guard: possible twins",
        "outcome": "guard",
        "priority": 10,
        "description": "Same surname and birth date, first names that differ: twins or siblings.",
        "criteria": [
            {"attribute": "last_name", "method": "phonetic"},
            {"attribute": "birth_date", "method": "exact"},
            # As alike as a typo (0.92): Laura and Lauren (0.89) must still count as different names.
            {"attribute": "first_name", "method": "nickname", "threshold": 0.92, "differs": True},
        ],
    },
    {
        "name": "Guard: birth dates differ",
        "outcome": "guard",
        "priority": 20,
        "description": "Both birth dates known and different: father and junior, or namesakes.",
        "criteria": [{"attribute": "birth_date", "method": "exact", "differs": True}],
    },
    {
        "name": "Guard: suffixes differ",
        "outcome": "guard",
        "priority": 30,
        "description": "Both name suffixes known and different (Sr. and Jr.).",
        "criteria": [{"attribute": "name_suffix", "method": "normalized", "differs": True}],
    },
    {
        "name": "Guard: gender differs",
        "outcome": "guard",
        "priority": 40,
        "description": "Both genders known and different: brother and sister.",
        "criteria": [{"attribute": "gender", "method": "normalized", "differs": True}],
    },
    {
        "name": "Guard: first names differ",
        "outcome": "guard",
        "priority": 45,
        "description": "First names neither alike nor nicknames of each other: household members, namesakes.",
        "criteria": [{"attribute": "first_name", "method": "nickname", "threshold": 0.85, "differs": True}],
    },
    {
        "name": "Guard: shared mailbox, another first name",
        "outcome": "guard",
        "priority": 50,
        "description": "One mailbox, first names that differ: a household address.",
        "criteria": [
            {"attribute": "email", "method": "provider"},
            {"attribute": "first_name", "method": "nickname", "threshold": 0.85, "differs": True},
        ],
    },
    {
        "name": "Guard: shared phone, another first name",
        "outcome": "guard",
        "priority": 60,
        "description": "One phone number, first names that differ: a household landline.",
        "criteria": [
            {"attribute": "phone", "method": "normalized"},
            {"attribute": "first_name", "method": "nickname", "threshold": 0.85, "differs": True},
        ],
    },
]

PRIORITY = "STEWARD, SALESFORCE, MARKETING_CLOUD"
DEFAULT_SURVIVORSHIP: dict[str, str] = {
    "salutation": "most_recent",
    "first_name": "most_recent",
    "middle_name": "most_recent",
    "last_name": "most_recent",
    "name_suffix": "most_recent",
    "birth_date": "source_priority",
    "gender": "most_frequent",
}


def seed_rules(match_rule_model: Any, survivorship_rule_model: Any) -> None:
    """Create the default rules that are missing, and bring up to date those no steward has edited.

    Models are passed in, so migrations can use it too.
    """
    for rule in DEFAULT_MATCH_RULES:
        values = {key: rule[key] for key in ("outcome", "priority", "description", "criteria")}
        existing, created = match_rule_model.objects.get_or_create(
            name=rule["name"], defaults=values | {"updated_by": "migration"}
        )
        if not created and existing.updated_by == "migration" and existing.criteria != rule["criteria"]:
            for key, value in values.items():
                setattr(existing, key, value)
            existing.save()
    for attribute, strategy in DEFAULT_SURVIVORSHIP.items():
        survivorship_rule_model.objects.get_or_create(
            attribute=attribute, defaults={"strategy": strategy, "source_priority": PRIORITY}
        )
