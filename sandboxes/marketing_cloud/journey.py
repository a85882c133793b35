"""Plays Journey Builder: resolves an activity's data bindings, signs and sends execute calls.

When a contact reaches a custom activity, Journey Builder resolves the activity's in-arguments (data
bindings such as ``{{Contact.Key}}`` or ``{{Event."<eventDefinitionKey>".<Field>}}``) for that
contact and POSTs them to the activity's execute URL with ``Content-Type: application/jwt``; the
body is a JWT signed (HS256) with the installed package's JWT signing secret. This module does the
same, so the hub's execute endpoint can be exercised locally and in tests without a Marketing Cloud
account. :class:`Journey` refuses to publish an activity whose bindings Journey Builder could not
compile, above all ``{{Contact.Attribute."<set>".<Field>}}`` where no data extension of that name is
linked in Data Designer: there real publishing fails and the journey is disabled.
No Django imports: benchmarks and scripts use it as a plain library.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests

__all__ = [
    "DEMO_EVENT_DEFINITION_KEY",
    "DEMO_SUBSCRIBERS",
    "BindingError",
    "Journey",
    "build_execute_payload",
    "entry_source_bindings",
    "send_demo",
    "send_execute",
    "sign_execute",
]

JWT_CONTENT_TYPE = "application/jwt"
# A data extension entry source's event definition key has this form (Salesforce's sample journey).
DEMO_EVENT_DEFINITION_KEY = "DEAudience-3f0c6a52-7d1e-4b8a-9c2f-5e6d7a8b9c01"

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# One step of a binding path: "quoted" (may hold dots, spaces and hyphens) or bare.
_SEGMENT = re.compile(r'\s*(?:"([^"]*)"|([^."\s{}]+))\s*')
_BARE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BindingError(ValueError):
    """Bindings Journey Builder cannot compile: publishing fails and the journey is disabled."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def binding_path(expression: str) -> list[str]:
    """The segments of the path inside ``{{...}}``: ``Contact.Attribute."A B".X`` -> [Contact, Attribute, A B, X]."""
    segments: list[str] = []
    position = 0
    while True:
        match = _SEGMENT.match(expression, position)
        if match is None or match.end() == position:
            raise BindingError([f"{{{{{expression}}}}} is not a data binding path"])
        segments.append(match.group(1) if match.group(1) is not None else match.group(2))
        position = match.end()
        if position == len(expression):
            return segments
        if expression[position] != ".":
            raise BindingError([f"{{{{{expression}}}}} is not a data binding path"])
        position += 1


def _quoted(name: str) -> str:
    return name if _BARE_SEGMENT.fullmatch(name) else f'"{name}"'


def entry_source_bindings(event_definition_key: str, names: Iterable[str]) -> list[dict[str, str]]:
    """The in-arguments the activity's page saves for an entry event (``activity.js``, same rules).

    The contact key and the default email are ``{{Contact.Key}}`` and ``{{InteractionDefaults.Email}}``;
    every other name is the entry source's field of that name, ``{{Event."<key>".<Field>}}``.
    """
    bindings: list[dict[str, str]] = []
    for name in names:
        if name == "SubscriberKey":
            bindings.append({name: "{{Contact.Key}}"})
        elif name == "EmailAddress":
            bindings.append({name: "{{InteractionDefaults.Email}}"})
        else:
            bindings.append({name: '{{Event."' + event_definition_key + '".' + _quoted(name) + "}}"})
    return bindings


@dataclass
class Journey:
    """One journey with an entry event and the hub's custom activity on its canvas.

    ``in_arguments`` are the activity's bindings as saved (a list of one-key objects).
    ``attribute_sets`` are the data extensions Data Designer links to contacts, by *name*: set name
    -> contact key -> row. ``defaults`` is the journey's default addresses as Journey Builder keeps
    them (Journey Settings; by default the entry source's ``EmailAddress``), which
    ``{{InteractionDefaults.Email}}`` and ``{{InteractionDefaults.MobileNumber}}`` resolve through.
    """

    event_definition_key: str
    in_arguments: list[dict[str, Any]]
    attribute_sets: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    defaults: dict[str, list[str]] | None = None
    journey_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    activity_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    published: bool = False

    def __post_init__(self) -> None:
        if self.defaults is None:
            # Journey Builder writes the entry source's email field this way (key bare, field quoted).
            email = "{{Event." + self.event_definition_key + '."EmailAddress"}}'
            self.defaults = {"email": [email], "mobileNumber": []}

    def publish(self) -> None:
        """Compile every binding, as publishing does; raise :class:`BindingError` naming each bad one."""
        problems: list[str] = []
        for item in self.in_arguments:
            for name, value in item.items():
                for expression in _expressions(value):
                    try:
                        self._resolve(expression, contact_key=None, event_data=None)
                    except BindingError as error:
                        problems += [f"in-argument {name}: {problem}" for problem in error.problems]
        if problems:
            self.published = False
            raise BindingError(problems)
        self.published = True

    def resolve_in_arguments(self, contact_key: str, event_data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The in-arguments for one contact entering with ``event_data`` (the entry source's row).

        A binding that names a field the contact has no value for is sent as written, as the hub
        expects of an unresolved binding.
        """
        if not self.published:
            raise BindingError(["the journey is not published (publish() compiles its bindings first)"])
        resolved: list[dict[str, Any]] = []
        for item in self.in_arguments:
            resolved.append({name: self._render(value, contact_key, event_data) for name, value in item.items()})
        return resolved

    def execute_payload(self, contact_key: str, event_data: Mapping[str, Any], **payload_kwargs: Any) -> dict:
        """The decoded execute body for one contact; extra keyword arguments go to build_execute_payload."""
        payload = build_execute_payload({}, journey_id=self.journey_id, activity_id=self.activity_id, **payload_kwargs)
        payload["inArguments"] = self.resolve_in_arguments(contact_key, event_data)
        payload["keyValue"] = contact_key
        return payload

    def send(
        self,
        url: str,
        secret: str,
        contact_key: str,
        event_data: Mapping[str, Any],
        *,
        session: requests.Session | None = None,
        timeout: float = 10,
        **payload_kwargs: Any,
    ) -> requests.Response:
        """POST one signed execute call for this contact to ``url``."""
        body = sign_execute(self.execute_payload(contact_key, event_data, **payload_kwargs), secret)
        sender = session if session is not None else requests
        return sender.post(url, data=body, headers={"Content-Type": JWT_CONTENT_TYPE}, timeout=timeout)

    # -- binding resolution --------------------------------------------------------------------

    def _render(self, value: Any, contact_key: str, event_data: Mapping[str, Any]) -> Any:
        if not isinstance(value, str):
            return value
        whole = _EXPRESSION.fullmatch(value.strip())
        if whole:
            found = self._resolve(whole.group(1), contact_key=contact_key, event_data=event_data)
            return value if found is None else found

        def substitute(match: re.Match[str]) -> str:
            found = self._resolve(match.group(1), contact_key=contact_key, event_data=event_data)
            return match.group(0) if found is None else str(found)

        return _EXPRESSION.sub(substitute, value)

    def _resolve(self, expression: str, *, contact_key: str | None, event_data: Mapping[str, Any] | None) -> Any:
        """The value of one binding (None: no value for this contact). Without a contact: compile only."""
        path = binding_path(expression)
        compiling = contact_key is None
        text = "{{" + expression + "}}"
        if path == ["Contact", "Key"]:
            return None if compiling else contact_key
        if path[:2] == ["Contact", "Attribute"] and len(path) == 4:
            attribute_set, column = path[2], path[3]
            if attribute_set not in self.attribute_sets:
                why = "no data extension of that name is linked in Data Designer"
                raise BindingError([f"{text}: no attribute set {attribute_set!r} ({why})"])
            return None if compiling else self.attribute_sets[attribute_set].get(contact_key, {}).get(column)
        if path[0] == "Event" and len(path) == 3:
            if path[1] != self.event_definition_key:
                raise BindingError(
                    [f"{text}: the journey's entry event is {self.event_definition_key!r}, not {path[1]!r}"]
                )
            return None if compiling or event_data is None else event_data.get(path[2])
        if path[0] == "InteractionDefaults" and len(path) == 2 and path[1] in ("Email", "MobileNumber"):
            kind = "email" if path[1] == "Email" else "mobileNumber"
            chosen = (self.defaults or {}).get(kind) or []
            if not chosen:
                return None
            inner = _EXPRESSION.fullmatch(chosen[0].strip())
            if inner is None:
                raise BindingError([f"the journey's default {kind} {chosen[0]!r} is not a data binding"])
            return self._resolve(inner.group(1), contact_key=contact_key, event_data=event_data)
        played = "Contact.Key, Contact.Attribute, Event, InteractionDefaults"
        raise BindingError([f"{text}: not a binding this emulator plays ({played})"])


def _expressions(value: Any) -> list[str]:
    return _EXPRESSION.findall(value) if isinstance(value, str) else []


def build_execute_payload(
    in_arguments: dict[str, object],
    *,
    journey_id: str | None = None,
    activity_id: str | None = None,
    definition_instance_id: str | None = None,
    activity_instance_id: str | None = None,
    ttl: int = 300,
    now: int | None = None,
) -> dict:
    """Return the decoded execute payload Journey Builder would send for these in-arguments.

    Journey Builder sends ``inArguments`` as a list with one single-key object per argument, in
    the order the activity declared them, rather than one object; the hub must cope with that.
    The payload carries ``iat`` and ``exp`` (``ttl`` seconds later), which the hub requires
    (``MC_JWT_REQUIRE_EXP``, ``MC_JWT_MAX_LIFETIME``). Marketing Cloud does not document them,
    and published decoded execute payloads show neither: an assumption, kept configurable.
    """
    issued = int(time.time()) if now is None else now
    return {
        "inArguments": [{name: value} for name, value in in_arguments.items()],
        "outArguments": [],
        "activityObjectID": str(uuid.uuid4()),
        "journeyId": journey_id or str(uuid.uuid4()),
        "activityId": activity_id or str(uuid.uuid4()),
        "definitionInstanceId": definition_instance_id or str(uuid.uuid4()),
        "activityInstanceId": activity_instance_id or str(uuid.uuid4()),
        "keyValue": str(in_arguments.get("SubscriberKey", "")),
        "mode": 0,
        "iat": issued,
        "exp": issued + ttl,
    }


def sign_execute(payload: dict, secret: str, *, algorithm: str = "HS256") -> bytes:
    """Sign ``payload`` as Journey Builder does and return the compact JWT as the request body."""
    token = jwt.encode(payload, secret, algorithm=algorithm)
    return token.encode("ascii")


def send_execute(
    url: str,
    in_arguments: dict,
    secret: str,
    *,
    session: requests.Session | None = None,
    timeout: float = 10,
    **payload_kwargs: Any,
) -> requests.Response:
    """POST one signed execute call to ``url``; extra keyword arguments go to build_execute_payload."""
    body = sign_execute(build_execute_payload(in_arguments, **payload_kwargs), secret)
    sender = session if session is not None else requests
    return sender.post(url, data=body, headers={"Content-Type": JWT_CONTENT_TYPE}, timeout=timeout)


# Eight obviously fake retail subscribers (example.com/.org mail, 555-01xx and Ofcom drama numbers).
# - Ava Thompson and Noah Fischer share nothing with anyone: each should become its own customer.
# - Sofia Marquez appears twice: once from the web shop, once from a store sign-up whose email was
#   typed in upper case with stray spaces; normalisation should match the two.
# - Liam and Emma O'Connor share a household address but not contact details.
# - Ava Thomson (sic) is Ava Thompson again: the match rules join her by phone and name.
# - Mia O'Connor shares Liam's mailbox: a possible match for a steward to review, not a merge.
DEMO_SUBSCRIBERS: list[dict[str, str]] = [
    {
        "SubscriberKey": "SK-DEMO-0001",
        "EmailAddress": "sofia.marquez@example.com",
        "SubscriberId": "71000001",
        "FirstName": "Sofia",
        "LastName": "Marquez",
        "MobileNumber": "+12025550101",
        "BirthDate": "1988-04-12",
        "Gender": "Female",
        "AddressLine1": "100 Sample Avenue",
        "City": "Springfield",
        "PostalCode": "62701",
        "StateProvince": "IL",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2024-03-02T09:15:00Z",
        "ModifiedDate": "2025-11-20T14:05:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0002",
        "EmailAddress": "ava.thompson@example.org",
        "SubscriberId": "71000002",
        "FirstName": "Ava",
        "LastName": "Thompson",
        "MobileNumber": "+13125550142",
        "BirthDate": "1995-09-30",
        "Gender": "Female",
        "AddressLine1": "42 Placeholder Road",
        "City": "Riverton",
        "PostalCode": "84065",
        "StateProvince": "UT",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2023-07-18T16:40:00Z",
        "ModifiedDate": "2025-10-01T08:30:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0003",
        "EmailAddress": "noah.fischer@example.com",
        "SubscriberId": "71000003",
        "FirstName": "Noah",
        "LastName": "Fischer",
        "MobileNumber": "+447700900417",
        "BirthDate": "1979-01-23",
        "Gender": "Male",
        "AddressLine1": "7 Demo Lane",
        "City": "Exampleton",
        "PostalCode": "AB1 2CD",
        "StateProvince": "Kent",
        "Country": "GB",
        "Status": "Active",
        "CreatedDate": "2022-11-05T11:00:00Z",
        "ModifiedDate": "2025-09-14T19:45:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0004",
        "EmailAddress": "  Sofia.MARQUEZ@Example.COM ",
        "SubscriberId": "71000004",
        "FirstName": "Sofia",
        "LastName": "Marquez",
        "MobileNumber": "+12025550101",
        "BirthDate": "1988-04-12",
        "Gender": "Female",
        "AddressLine1": "100 Sample Ave",
        "City": "Springfield",
        "PostalCode": "62701",
        "StateProvince": "IL",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2025-06-21T13:20:00Z",
        "ModifiedDate": "2025-06-21T13:20:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0005",
        "EmailAddress": "liam.oconnor@example.org",
        "SubscriberId": "71000005",
        "FirstName": "Liam",
        "LastName": "O'Connor",
        "MobileNumber": "+16175550177",
        "BirthDate": "1990-12-03",
        "Gender": "Male",
        "AddressLine1": "15 Fictional Court",
        "City": "Lakewood",
        "PostalCode": "02134",
        "StateProvince": "MA",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2024-01-09T10:05:00Z",
        "ModifiedDate": "2025-12-02T07:55:00Z",
    },
    {
        "SubscriberKey": "SK-DEMO-0006",
        "EmailAddress": "emma.oconnor@example.com",
        "SubscriberId": "71000006",
        "FirstName": "Emma",
        "LastName": "O'Connor",
        "MobileNumber": "+16175550188",
        "BirthDate": "1992-05-17",
        "Gender": "Female",
        "AddressLine1": "15 Fictional Court",
        "City": "Lakewood",
        "PostalCode": "02134",
        "StateProvince": "MA",
        "Country": "US",
        "Status": "Active",
        "CreatedDate": "2024-01-09T10:07:00Z",
        "ModifiedDate": "2025-08-27T12:10:00Z",
    },
    {
        # Ava again, from the loyalty app: surname mistyped, a new email, the same mobile.
        "SubscriberKey": "SK-DEMO-0007",
        "EmailAddress": "ava.t@example.net",
        "SubscriberId": "71000007",
        "FirstName": "Ava",
        "LastName": "Thomson",
        "MobileNumber": "(312) 555-0142",
        "Status": "Active",
        "CreatedDate": "2025-10-01T08:00:00Z",
        "ModifiedDate": "2025-10-01T08:00:00Z",
    },
    {
        # Mia O'Connor signed up with her brother Liam's address: the same mailbox, another person.
        "SubscriberKey": "SK-DEMO-0008",
        "EmailAddress": "liam.oconnor@example.org",
        "SubscriberId": "71000008",
        "FirstName": "Mia",
        "LastName": "O'Connor",
        "Status": "Active",
        "CreatedDate": "2025-11-11T11:00:00Z",
        "ModifiedDate": "2025-11-11T11:00:00Z",
    },
]


def send_demo(url: str, secret: str, subscribers: list[dict] | None = None) -> list[requests.Response]:
    """Play a journey whose entry source holds the subscribers (the demo set by default).

    The activity is bound to the entry source as its configuration page binds it, the journey is
    published (its bindings compiled), and each subscriber enters with its row as the event data:
    one execute call each, over one keep-alive session.
    """
    chosen = DEMO_SUBSCRIBERS if subscribers is None else subscribers
    names = list(dict.fromkeys(name for subscriber in chosen for name in subscriber))
    journey = Journey(DEMO_EVENT_DEFINITION_KEY, entry_source_bindings(DEMO_EVENT_DEFINITION_KEY, names))
    journey.publish()
    with requests.Session() as session:
        return [
            journey.send(url, secret, str(subscriber["SubscriberKey"]), subscriber, session=session)
            for subscriber in chosen
        ]
