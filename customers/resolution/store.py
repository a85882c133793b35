"""The unit of work every golden-record write goes through: load set-based, change in memory, write set-based.

A ``UnitOfWork`` loads the golden records a piece of work needs with a handful of
queries (whatever the number of records), lets the engine or a steward action change
them in memory (survivorship, lineage, contact points, blocking keys, cross references,
review candidates, history, outbox change events), and ``flush`` writes all of it with
one statement per table and kind of change. Golden records are therefore computed and
written one way only, for a batch of a thousand events or for one steward's click.

Concurrency. Writers serialise on transaction-scoped advisory locks (``hub.sql.advisory_lock``:
the source records, carried master IDs and blocking keys of the records they apply), so
two writers that could decide about the same person run one after the other. ``flush``
then locks the existing golden records it writes (``FOR NO KEY UPDATE``, in id order: rows that
merely reference them, a history row or a contact point, can still be written) and raises
``StaleState`` when one of them changed after it was loaded (a steward's merge, another
source of the same person): the caller redoes its work on fresh data. The lock order is
the same everywhere (advisory locks, golden records by id, cross references), so writers
wait for each other but never in a cycle.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.utils import timezone

from customers.choices import (
    CandidateStatus,
    ContactPointKind,
    CrossReferenceStatus,
    HistoryAction,
    WritebackState,
)
from customers.cim import (
    CONTACT_POINT_COLUMNS,
    CROSS_REFERENCE_COLUMNS,
    SUBSCRIPTION_CONSENT_COLUMNS,
    CimValidationError,
    SourceIndividual,
    parse_individual,
    render_cim,
)
from customers.history import HistoryRow, require_atomic, write_history
from customers.models import (
    ChangeEvent,
    CommunicationSubscriptionConsent,
    ContactPoint,
    CrossReference,
    Individual,
    MatchCandidate,
    MatchKey,
    NotAMatch,
    new_master_id,
)
from customers.resolution.blocking import MatchProfile, add_person, blocking_keys, lookup_keys, profile_from_source
from customers.resolution.configuration import Configuration, in_force
from customers.resolution.rules import OUTCOME_AUTO, OUTCOME_NONE, Decision, RuleSpec, decide, rank
from customers.resolution.survivorship import (
    SURVIVING_FIELDS,
    SourceValues,
    Strategy,
    compute,
    contact_points,
)
from customers.resolution.weights import MatchModel, decide_with_model
from customers.signals import change_recorded, marketing_opt_outs_recorded
from hub.sql import delete_rows, execute, insert_rows, reserve_ids, update_rows

# At most this many golden records are compared with one incoming record, however common its
# keys, and at most MAX_SUSPECTS pairs (the best) are queued for review from one record.
MAX_CANDIDATES = 60
MAX_SUSPECTS = 5
# Rows read per blocking key: a key many records share (a placeholder phone, a family mailbox)
# cannot crowd out the records that share the incoming record's other keys.
PER_KEY = 50
# Read a few more per key than are compared, so that leaving out the records a lookup must not
# return (the record itself, its not-a-match pairs) still leaves PER_KEY.
_PER_KEY_READ = PER_KEY + 10

_INDIVIDUAL = Individual._meta.db_table
_XREF = CrossReference._meta.db_table
_CONTACT_POINT = ContactPoint._meta.db_table
_CHANGE_EVENT = ChangeEvent._meta.db_table
_MATCH_KEY = MatchKey._meta.db_table
_CANDIDATE = MatchCandidate._meta.db_table
_NOT_A_MATCH = NotAMatch._meta.db_table

PERSON_COLUMNS = (*SURVIVING_FIELDS, "do_not_market_since", "consent_source")
# The columns a golden record is loaded with (after its id), and a cross reference's, named as
# SourceRecord names them (but "id"); the source's payload is read after them when it is wanted.
# A candidate is read with what matching needs; the rest (its values, pins and lineage) only with
# its sources, when this work goes on to change it or show it.
_CANDIDATE_COLUMNS = ("master_id", "erased_at", "merged_into_id", "match_profile", "updated_at")
_DETAIL_COLUMNS = (*PERSON_COLUMNS, "created_at", "merged_at", "pins", "lineage")
_GOLDEN_COLUMNS = (*_CANDIDATE_COLUMNS, *_DETAIL_COLUMNS)
_SOURCE_COLUMNS = (
    "id",
    "individual_id",
    "system",
    "external_id",
    "status",
    "system_record_id",
    "business_unit",
    "source_status",
    "first_seen_at",
    "last_seen_at",
    "source_modified_at",
    "writeback_state",
    "source_master_id",
    "written_at",
    "writeback_error",
    "match_rule",
    "match_detail",
    "updated_at",
)
_DETAIL = _SOURCE_COLUMNS.index("match_detail")
_OWNER = _SOURCE_COLUMNS.index("individual_id")
# A golden record's cross references with their payloads, as one JSON array per golden record ``i``.
_SOURCES_JSON = (
    f"(SELECT json_agg(json_build_array({', '.join(f'x.{name}' for name in _SOURCE_COLUMNS)}, x.source_payload) "
    f"ORDER BY x.id) FROM {_XREF} x WHERE x.individual_id = i.id)"
)
# Read inside JSON (a golden record's sources), these arrive as ISO 8601 text.
_SOURCE_TIMESTAMPS = tuple(
    i
    for i, name in enumerate(_SOURCE_COLUMNS)
    if name in ("first_seen_at", "last_seen_at", "source_modified_at", "written_at", "updated_at")
)


def _decoded(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Cross-reference rows read by a raw cursor (``_SOURCE_COLUMNS``, then the payload) with their jsonb decoded."""
    return [(*row[:_DETAIL], _jsonb(row[_DETAIL]), *row[_DETAIL + 1 : -1], _jsonb(row[-1])) for row in rows]


def _detail_of(columns: dict[str, Any]) -> GoldenDetail:
    return GoldenDetail(
        values={name: columns[name] for name in PERSON_COLUMNS},
        created_at=columns["created_at"],
        merged_at=columns["merged_at"],
        pins=_jsonb(columns["pins"]) or {},
        lineage=_jsonb(columns["lineage"]) or {},
    )


def _listed_sources(listed: list[list[Any]] | None) -> list[list[Any]]:
    """Cross-reference rows read as JSON arrays (``_SOURCES_JSON``), with their timestamps parsed."""
    for source in listed or ():
        for index in _SOURCE_TIMESTAMPS:
            if source[index] is not None:
                source[index] = dt.datetime.fromisoformat(source[index])
    return listed or []


def _jsonb(text: str | None) -> Any:
    """A jsonb column read by a raw cursor: the connection hands jsonb over as text (as Django's JSONField wants)."""
    return None if text is None else orjson.loads(text)


class StaleState(Exception):
    """A golden record this unit of work writes changed after it was loaded: redo the work."""


# Parsed payloads and their match profiles, per cross reference version: a worker compares the
# same popular candidates again and again, and parsing dominates a comparison.
_PARSED: dict[tuple[int, Any], tuple[SourceIndividual, MatchProfile] | None] = {}
_PARSED_MAX = 5_000


def _parse_cached(pk: int, version: Any, payload: dict[str, Any]) -> tuple[SourceIndividual, MatchProfile] | None:
    key = (pk, version)
    if key in _PARSED:
        return _PARSED[key]
    try:
        source = parse_individual(payload or {})
        result: tuple[SourceIndividual, MatchProfile] | None = (source, profile_from_source(source))
    except CimValidationError:
        result = None
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = result
    return result


@dataclass(eq=False)
class SourceRecord:
    """A cross reference (one record of one source system) as the unit of work holds it."""

    pk: int
    individual_id: int
    system: str
    external_id: str
    status: str = CrossReferenceStatus.VALID
    system_record_id: str = ""
    business_unit: str = ""
    source_status: str = ""
    first_seen_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None
    source_modified_at: dt.datetime | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    writeback_state: str = WritebackState.NOT_NEEDED
    source_master_id: str = ""
    written_at: dt.datetime | None = None
    writeback_error: str = ""
    match_rule: str = ""
    match_detail: Any = None
    updated_at: dt.datetime | None = None
    new: bool = False
    dirty: bool = False
    # What this unit of work wants of the write-back: "" (leave it), "pending", "not_needed".
    writeback_intent: str = ""
    _parsed: tuple[SourceIndividual, MatchProfile] | None = None
    _parsed_known: bool = False

    @property
    def valid(self) -> bool:
        return self.status == CrossReferenceStatus.VALID

    def parsed(self) -> tuple[SourceIndividual, MatchProfile] | None:
        if not self._parsed_known:
            self._parsed = _parse_cached(self.pk, self.updated_at, self.payload)
            self._parsed_known = True
        return self._parsed

    def set_source(self, source: SourceIndividual, profile: MatchProfile | None = None) -> None:
        self.payload = source.raw
        self._parsed = (source, profile or profile_from_source(source))
        self._parsed_known = True
        self.dirty = True

    def values(self) -> SourceValues | None:
        parsed = self.parsed()
        if parsed is None:
            return None
        changed = self.source_modified_at or self.last_seen_at or timezone.now()
        return SourceValues(self.system, self.external_id, self.pk, changed, parsed[0], self.updated_at)

    def columns(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "system": self.system,
            "external_id": self.external_id,
            "status": self.status,
            "last_seen_at": self.last_seen_at,
            "writeback_state": self.writeback_intent or self.writeback_state,
            "written_at": self.written_at,
            "writeback_error": self.writeback_error,
        }


@dataclass
class GoldenDetail:
    """What a golden record holds beyond what matching compares: its values, pins and lineage."""

    values: dict[str, Any]
    created_at: dt.datetime
    merged_at: dt.datetime | None = None
    pins: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class Golden:
    """A golden record as the unit of work holds it: its values and its source records."""

    pk: int
    master_id: str
    updated_at: dt.datetime
    erased_at: dt.datetime | None = None
    merged_into_id: int | None = None
    new: bool = False
    version: dt.datetime | None = None  # updated_at as loaded: flush checks nobody wrote since
    # Both None for a candidate read by its blocking keys: its values and its sources (with their
    # payloads) are read only if this work goes on to need them (UnitOfWork.load_sources_of).
    _detail: GoldenDetail | None = None
    _sources: list[SourceRecord] | None = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    touched: bool = False
    stored_profile: dict[str, Any] | None = None  # Individual.match_profile as loaded
    generation: int = 0  # changes in this unit of work (decisions about it are remembered per generation)
    _profile: MatchProfile | None = None
    _keys: set[tuple[str, str]] | None = None
    _points: dict[tuple[str, str], tuple[dict[str, Any], SourceValues]] | None = None

    @property
    def active(self) -> bool:
        return self.merged_into_id is None and self.erased_at is None

    @property
    def detail(self) -> GoldenDetail:
        if self._detail is None:
            raise RuntimeError(f"golden record {self.pk} was read as a candidate only (UnitOfWork.load_sources_of)")
        return self._detail

    @property
    def values(self) -> dict[str, Any]:
        return self.detail.values

    @property
    def created_at(self) -> dt.datetime:
        return self.detail.created_at

    @property
    def merged_at(self) -> dt.datetime | None:
        return self.detail.merged_at

    @merged_at.setter
    def merged_at(self, value: dt.datetime | None) -> None:
        self.detail.merged_at = value

    @property
    def pins(self) -> dict[str, Any]:
        return self.detail.pins

    @pins.setter
    def pins(self, value: dict[str, Any]) -> None:
        self.detail.pins = value

    @property
    def lineage(self) -> dict[str, Any]:
        return self.detail.lineage

    @lineage.setter
    def lineage(self, value: dict[str, Any]) -> None:
        self.detail.lineage = value

    @property
    def sources(self) -> list[SourceRecord]:
        if self._sources is None:
            raise RuntimeError(f"the sources of golden record {self.pk} were not loaded (UnitOfWork.load_sources_of)")
        return self._sources

    @sources.setter
    def sources(self, records: list[SourceRecord]) -> None:
        self._sources = records

    @property
    def sources_loaded(self) -> bool:
        return self._sources is not None

    def set(self, column: str, value: Any) -> None:
        """Change a column of the golden record (written at flush)."""
        current = self.values.get(column) if column in PERSON_COLUMNS else getattr(self, column)
        if current == value and not self.new:
            return
        if column in PERSON_COLUMNS:
            self.values[column] = value
        else:
            setattr(self, column, value)
        self.changed.add(column)
        self.touched = True

    def valid_sources(self) -> list[SourceValues]:
        result = []
        for record in self.sources:
            if record.valid and (values := record.values()) is not None:
                result.append(values)
        return result

    def record(self) -> dict[str, Any]:
        """The columns a CIM rendering shows."""
        return {
            "master_id": self.master_id,
            **{name: self.values[name] for name in (*SURVIVING_FIELDS, "do_not_market_since")},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass
class Recomputed:
    golden: Golden
    changed_fields: list[str]
    added_contact_points: int
    removed_contact_points: int


@dataclass
class MatchResult:
    """The rules' verdict on an incoming record: where it goes, and which pairs a steward should see."""

    best: tuple[Golden, Decision] | None = None
    suspects: list[tuple[int, Decision]] = field(default_factory=list)
    compared: int = 0


@dataclass(eq=False)
class PendingCandidate:
    """A suspect pair to queue; ``pk`` is known once written (None when the pair was queued already)."""

    incoming: Golden
    other_id: int
    decision: Decision
    actor: str
    created_at: dt.datetime
    pk: int | None = None


@dataclass(eq=False)
class PendingChange:
    """An outbox change event to write; its id is reserved at flush, its snapshot captured now."""

    golden: Golden
    change_type: str
    change: dict[str, Any]
    actor: str
    created_at: dt.datetime
    snapshot_record: dict[str, Any] | None
    snapshot_points: list[tuple[str, str, dict[str, Any]]] | None
    snapshot_sources: list[dict[str, Any]] | None
    pk: int | None = None


class UnitOfWork:
    """Golden records loaded, changed in memory and written together (see the module's docstring)."""

    def __init__(self, *, render_snapshots: bool = True) -> None:
        self.render_snapshots = render_snapshots
        self.goldens: dict[int, Golden] = {}
        self.sources: dict[tuple[str, str], SourceRecord] = {}
        self.history: list[HistoryRow] = []
        self.pending_candidates: list[PendingCandidate] = []
        self.pending_changes: list[PendingChange] = []
        self._master_ids: dict[str, int] = {}
        self._key_rows: dict[tuple[str, str], list[int]] = {}
        self._overlay: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._overlay_keys: dict[int, set[tuple[str, str]]] = {}
        self._not_a_match: dict[int, set[int]] = defaultdict(set)
        self._open_pairs: set[tuple[int, int]] = set()
        self._reserved: dict[str, list[int]] = {_INDIVIDUAL: [], _XREF: []}
        self._configuration: Configuration | None = None
        self._decisions: dict[tuple[int, int], tuple[int, Decision]] = {}

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------
    @property
    def configuration(self) -> Configuration:
        """The match rules, matcher model and survivorship rules in force, read once per unit of work."""
        if self._configuration is None:
            self._configuration = in_force()
        return self._configuration

    @property
    def rules(self) -> list[RuleSpec]:
        return self.configuration.rules

    @property
    def model(self) -> MatchModel | None:
        """The active matcher model (match weights), or None: then the rules alone decide."""
        return self.configuration.model

    def decide(
        self, incoming: MatchProfile, candidate: MatchProfile, *, explain_all: bool = False, settle_early: bool = False
    ) -> Decision:
        """One pair decided as matching decides it: by the rules, and by the match weight when a model is active.

        ``settle_early``: a no-match may be explained on fewer attributes and carry no weight
        (``decide_with_model``), for a caller that drops no-matches.
        """
        model = self.model
        if model is None:
            return decide(self.rules, incoming, candidate, explain_all=explain_all)
        return decide_with_model(self.rules, model, incoming, candidate, settle_early=settle_early and not explain_all)

    @property
    def strategies(self) -> dict[str, Strategy]:
        return self.configuration.strategies

    def reserve(self, *, goldens: int = 0, sources: int = 0) -> None:
        """Reserve ids for the golden records and cross references this work may create (one statement)."""
        more = reserve_ids({_INDIVIDUAL: goldens, _XREF: sources})
        for table, ids in more.items():
            self._reserved[table].extend(ids)

    def _next_id(self, table: str) -> int:
        if not self._reserved[table]:
            self._reserved[table].extend(reserve_ids({table: 16})[table])
        return self._reserved[table].pop(0)

    def load_sources(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Load the cross references of these (system, external ID) pairs, if they exist (one statement)."""
        wanted = {p for p in pairs if p not in self.sources}
        if not wanted:
            return
        systems, ids = zip(*sorted(wanted), strict=True)
        columns = ", ".join(f"x.{name}" for name in _SOURCE_COLUMNS)
        rows = execute(
            f"SELECT {columns}, x.source_payload FROM {_XREF} x "
            "JOIN unnest(%b::text[], %b::text[]) AS w(system, external_id) "
            "ON x.system = w.system AND x.external_id = w.external_id",
            [list(systems), list(ids)],
            fetch=True,
        )
        # source_payload and match_detail are jsonb, which the connection reads as text.
        self._take_sources(_decoded(rows))

    def _take_sources(self, rows: Iterable[Sequence[Any]]) -> list[SourceRecord]:
        """SourceRecords of cross-reference rows (``_SOURCE_COLUMNS``, then the payload); known ones as they are."""
        taken = []
        for row in rows:
            values = dict(zip(_SOURCE_COLUMNS, row, strict=False))
            key = (values["system"], values["external_id"])
            record = self.sources.get(key)
            if record is None:
                values["pk"] = values.pop("id")
                record = SourceRecord(**values, payload=row[-1] or {})
                self.sources[key] = record
            taken.append(record)
        return taken

    def load_master_ids(self, master_ids: Iterable[str]) -> None:
        """Know which golden records these master IDs stand for (merged IDs redirect to their survivor)."""
        wanted = {m for m in master_ids if m not in self._master_ids}
        if not wanted:
            return
        rows = list(Individual.objects.filter(master_id__in=wanted).values_list("master_id", "pk", "merged_into_id"))
        for master_id, pk, merged_into in rows:
            # Redirects are kept one hop deep (a merge re-points older redirects at its survivor).
            self._master_ids[master_id] = merged_into or pk
        self.load_goldens({merged_into or pk for _, pk, merged_into in rows})

    def load_keys(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read, per blocking key, the golden records that hold it (bounded, lowest ids first).

        One statement reads the keys' rows and, with them, the golden records they find that this
        unit of work does not hold yet, with their pair memory but not their sources: candidates
        are compared on their stored profiles, and the sources of the few this work goes on to
        change are read then (``load_sources_of``; at once for records stored before profiles were).
        """
        wanted = sorted({k for k in keys if k not in self._key_rows})
        if not wanted:
            return
        for key in wanted:
            self._key_rows[key] = []
        kinds, values = zip(*wanted, strict=True)
        rows = self._fetch_goldens(
            "WITH hit AS (SELECT w.kind, w.value, m.individual_id "
            "FROM unnest(%(kinds)b::text[], %(values)b::text[]) AS w(kind, value) "
            f"CROSS JOIN LATERAL (SELECT individual_id FROM {_MATCH_KEY} k WHERE k.kind = w.kind "
            "AND k.value = w.value ORDER BY individual_id LIMIT %(per_key)s) AS m), "
            "found AS (SELECT individual_id, array_agg(kind) AS kinds, array_agg(value) AS key_values "
            "FROM hit GROUP BY individual_id) "
            "SELECT found.kinds, found.key_values, {golden} "
            "FROM found JOIN {individual} i ON i.id = found.individual_id",
            {"kinds": list(kinds), "values": list(values), "per_key": _PER_KEY_READ},
            with_sources=False,
            leading=2,
        )
        for key_kinds, key_values, pk in rows:
            for key in zip(key_kinds, key_values, strict=True):
                self._key_rows[key].append(pk)
        found = {pk for _, _, pk in rows}
        self.load_sources_of({pk for pk in found if self.goldens[pk].stored_profile is None})

    def load_goldens(self, ids: Iterable[int]) -> None:
        """Load golden records with all their cross references and pair memory (one statement)."""
        ids = set(ids)
        wanted = {pk for pk in ids if pk not in self.goldens}
        # Golden records read before as candidates get their sources now (one statement).
        self.load_sources_of(ids - wanted)
        if wanted:
            self._fetch_goldens(
                "SELECT {golden} FROM {individual} i WHERE i.id = ANY(%(ids)b::bigint[])",
                {"ids": sorted(wanted)},
                with_sources=True,
                leading=0,
            )

    def _fetch_goldens(
        self, sql: str, params: dict[str, Any], *, with_sources: bool, leading: int
    ) -> list[tuple[Any, ...]]:
        """Run ``sql`` (``{golden}`` and ``{individual}`` filled in) and take the golden records it reads.

        Each row is ``leading`` columns of the caller's, then a golden record's columns, its
        not-a-match partners, its open review pairs and, ``with_sources``, its cross references
        with their payloads (JSON): one round trip, however many records. Records this unit of work
        holds already are left as they are. Returns the caller's columns and each row's record id.
        """
        read = _GOLDEN_COLUMNS if with_sources else _CANDIDATE_COLUMNS
        golden = (
            "i.id, "
            + ", ".join(f"i.{name}" for name in read)
            + f", ARRAY(SELECT n.right_id FROM {_NOT_A_MATCH} n WHERE n.left_id = i.id "
            f"UNION ALL SELECT n.left_id FROM {_NOT_A_MATCH} n WHERE n.right_id = i.id), "
            f"ARRAY(SELECT c.right_id FROM {_CANDIDATE} c WHERE c.left_id = i.id AND c.status = %(open)s), "
            f"ARRAY(SELECT c.left_id FROM {_CANDIDATE} c WHERE c.right_id = i.id AND c.status = %(open)s)"
            + (f", {_SOURCES_JSON}" if with_sources else "")
        )
        # Arrays of keys and ids travel binary (``hub.sql.execute``): a batch reads thousands.
        rows = execute(
            sql.format(golden=golden, individual=_INDIVIDUAL), {**params, "open": CandidateStatus.OPEN}, fetch=True
        )
        taken = []
        for row in rows:
            head, pk, values = row[:leading], row[leading], row[leading + 1 :]
            taken.append((*head, pk))
            if pk in self.goldens:
                continue
            columns = dict(zip(read, values, strict=False))
            not_a_match, open_right, open_left = values[len(read) : len(read) + 3]
            record = Golden(
                pk=pk,
                master_id=columns["master_id"],
                updated_at=columns["updated_at"],
                erased_at=columns["erased_at"],
                merged_into_id=columns["merged_into_id"],
                stored_profile=_jsonb(columns["match_profile"]),
                version=columns["updated_at"],
                _sources=None,
            )
            self.goldens[pk] = record
            self._master_ids.setdefault(record.master_id, record.merged_into_id or pk)
            if with_sources:
                record._detail = _detail_of(columns)
                self._set_sources(record, self._take_sources(_listed_sources(values[-1])))
            for other in not_a_match:
                self._not_a_match[pk].add(other)
                self._not_a_match[other].add(pk)
            self._open_pairs.update((pk, other) for other in open_right)
            self._open_pairs.update((other, pk) for other in open_left)
        return taken

    @staticmethod
    def _set_sources(golden: Golden, records: list[SourceRecord]) -> None:
        golden.sources = sorted({id(r): r for r in records}.values(), key=lambda r: r.pk)

    def load_sources_of(self, ids: Iterable[int]) -> None:
        """The cross references, with payloads, of these golden records read as candidates without them (one query)."""
        lacking = sorted(pk for pk in ids if pk in self.goldens and not self.goldens[pk].sources_loaded)
        if not lacking:
            return
        # Read after the candidate was: had anyone written it since, flush sees a newer updated_at
        # than the one this work compared (Golden.version) and the work is redone. One row per
        # cross reference (flat rows read faster than JSON), the golden record's columns on each.
        detail = ", ".join(f"i.{name}" for name in _DETAIL_COLUMNS)
        sources = ", ".join(f"x.{name}" for name in _SOURCE_COLUMNS)
        rows = execute(
            f"SELECT i.id, {detail}, {sources}, x.source_payload FROM {_INDIVIDUAL} i "
            f"LEFT JOIN {_XREF} x ON x.individual_id = i.id WHERE i.id = ANY(%b::bigint[]) ORDER BY i.id, x.id",
            [lacking],
            fetch=True,
        )
        width = 1 + len(_DETAIL_COLUMNS)
        by_golden: dict[int, list[SourceRecord]] = {pk: [] for pk in lacking}
        for row in rows:
            golden = self.goldens[row[0]]
            if golden._detail is None:
                golden._detail = _detail_of(dict(zip(_DETAIL_COLUMNS, row[1:width], strict=True)))
        listed = [row[width:] for row in rows if row[width] is not None]
        decoded = _decoded(listed)
        # A record this work already moved to another golden record in memory is found by its key
        # and stays where this work put it.
        for row, record in zip(decoded, self._take_sources(decoded), strict=True):
            if record.individual_id == row[_OWNER]:
                by_golden[record.individual_id].append(record)
        for pk, records in by_golden.items():  # one deleted meanwhile has no sources (and no values)
            self._set_sources(self.goldens[pk], records)

    # ------------------------------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------------------------------
    def source(self, system: str, external_id: str) -> SourceRecord | None:
        return self.sources.get((system, external_id))

    def golden(self, pk: int) -> Golden:
        return self.goldens[pk]

    def golden_for_master_id(self, master_id: str) -> Golden | None:
        pk = self._master_ids.get(master_id)
        return self.goldens.get(pk) if pk is not None else None

    def not_a_match_with(self, pk: int) -> set[int]:
        return set(self._not_a_match.get(pk, ()))

    def profile_of(self, golden: Golden) -> MatchProfile:
        """Everything the golden record and its sources hold: a candidate is compared on all of it."""
        if golden._profile is None and not golden.touched and golden.stored_profile is not None:
            golden._profile = MatchProfile.from_json(golden.stored_profile)
        if golden._profile is None:
            self.load_sources_of({golden.pk})
            profile = MatchProfile()
            for record in golden.sources:
                if record.valid and (parsed := record.parsed()) is not None:
                    profile.update(parsed[1])
            values = golden.values
            add_person(
                profile,
                first_name=values["first_name"],
                last_name=values["last_name"],
                birth_date=values["birth_date"],
                gender=values["gender"],
                name_suffix=values["name_suffix"],
            )
            golden._profile = profile
        return golden._profile

    def keys_of(self, golden: Golden) -> set[tuple[str, str]]:
        if golden._keys is None:
            golden._keys = blocking_keys(self.profile_of(golden)) if golden.active else set()
        return golden._keys

    def points_of(self, golden: Golden) -> dict[tuple[str, str], tuple[dict[str, Any], SourceValues]]:
        """The contact points the golden record holds: every valid source's, one per normalised value."""
        if golden._points is None:
            self.load_sources_of({golden.pk})
            golden._points = contact_points(golden.valid_sources()) if golden.erased_at is None else {}
        return golden._points

    def candidate_ids(self, keys: set[tuple[str, str]], *, exclude: set[int] = frozenset()) -> list[int]:
        """Golden records sharing at least one blocking key, most keys shared first, bounded.

        Per key at most PER_KEY records (lowest ids first, as the database orders them), so
        the true match, which shares several keys, survives however crowded any single key
        is. Golden records this unit of work changed are looked up by their current keys.
        """
        self.load_keys(keys)
        counts: dict[int, int] = {}
        for key in sorted(keys):
            found = {pk for pk in self._key_rows.get(key, ()) if pk not in self._overlay_keys and pk not in exclude}
            found |= {pk for pk in self._overlay.get(key, ()) if pk not in exclude}
            for pk in sorted(found)[:PER_KEY]:
                counts[pk] = counts.get(pk, 0) + 1
        return sorted(counts, key=lambda pk: (-counts[pk], pk))[:MAX_CANDIDATES]

    def match(
        self, profile: MatchProfile, keys: set[tuple[str, str]] | None = None, *, exclude: set[int] = frozenset()
    ) -> MatchResult:
        """Compare a profile with the golden records its blocking keys (given, or computed) find."""
        ids = self.candidate_ids(lookup_keys(profile) if keys is None else keys, exclude=exclude)
        result = MatchResult(compared=len(ids))
        if not ids:
            return result
        decisions = []
        for pk in ids:
            golden = self.goldens.get(pk)
            if golden is not None and golden.active:
                # The same pair decided again (the engine's look-ahead, then the record's turn) is
                # decided once while the golden record is unchanged.
                memo = (id(profile), pk)
                known = self._decisions.get(memo)
                if known is None or known[0] != golden.generation:
                    # No-matches are dropped below: one may be settled before every attribute is compared.
                    known = (golden.generation, self.decide(profile, self.profile_of(golden), settle_early=True))
                    self._decisions[memo] = known
                decisions.append((pk, known[1]))
        ranked = [item for item in rank(decisions) if item[1].outcome != OUTCOME_NONE]
        if ranked and ranked[0][1].outcome == OUTCOME_AUTO:
            pk, decision = ranked[0]
            result.best = (self.goldens[pk], decision)
            ranked = ranked[1:]
        result.suspects = ranked[:MAX_SUSPECTS]
        return result

    # ------------------------------------------------------------------------------------------
    # Changing
    # ------------------------------------------------------------------------------------------
    def _touch(self, golden: Golden) -> None:
        """About to change ``golden``'s sources: keep what its contact points were, then mark it."""
        self.load_sources_of({golden.pk})
        if golden._points is None:
            self.points_of(golden)
        golden.touched = True
        golden.generation += 1
        golden._profile = None
        golden._keys = None

    def _reindex(self, golden: Golden) -> None:
        """Keep the in-memory key index current: later records of this work find the record by its keys."""
        for key in self._overlay_keys.get(golden.pk, ()):
            self._overlay[key].discard(golden.pk)
        keys = self.keys_of(golden)
        self._overlay_keys[golden.pk] = keys
        for key in keys:
            self._overlay[key].add(golden.pk)

    def new_golden(self, now: dt.datetime) -> Golden:
        golden = Golden(
            pk=self._next_id(_INDIVIDUAL),
            master_id=new_master_id(),
            updated_at=now,
            new=True,
            touched=True,
            _detail=GoldenDetail(
                values={
                    name: (None if name in ("birth_date", "do_not_market_since") else "") for name in PERSON_COLUMNS
                },
                created_at=now,
            ),
        )
        self.goldens[golden.pk] = golden
        self._master_ids[golden.master_id] = golden.pk
        self._overlay_keys[golden.pk] = set()
        return golden

    def new_source(self, system: str, external_id: str, golden: Golden, now: dt.datetime) -> SourceRecord:
        record = SourceRecord(
            pk=self._next_id(_XREF),
            individual_id=golden.pk,
            system=system,
            external_id=external_id,
            first_seen_at=now,
            last_seen_at=now,
            updated_at=now,
            new=True,
            dirty=True,
        )
        self._touch(golden)
        self.sources[(system, external_id)] = record
        golden.sources.append(record)
        return record

    def move_source(self, record: SourceRecord, golden: Golden) -> Golden | None:
        """Make ``record`` a source of ``golden``; returns the golden record it left, if any."""
        if record.individual_id == golden.pk:
            return None
        previous = self.goldens.get(record.individual_id)
        self._touch(golden)
        if previous is not None:
            self._touch(previous)
            previous.sources = [r for r in previous.sources if r is not record]
        record.individual_id = golden.pk
        record.dirty = True
        golden.sources.append(record)
        return previous

    def update_source(
        self,
        record: SourceRecord,
        source: SourceIndividual | None = None,
        *,
        profile: MatchProfile | None = None,
        **columns: Any,
    ) -> None:
        """Change a source record: its payload (``source``, its profile if known) and columns.

        Its golden record is to be recomputed next.
        """
        golden = self.goldens.get(record.individual_id)
        if golden is not None:
            self._touch(golden)
        if source is not None:
            record.set_source(source, profile)
        for name, value in columns.items():
            setattr(record, name, value)
        record.dirty = True

    def recompute(
        self,
        golden: Golden,
        *,
        actor: str,
        now: dt.datetime,
        actor_user_id: int | None = None,
        incoming_consent: tuple[dt.datetime, str] | None = None,
        history_action: str | None = HistoryAction.UPDATE,
    ) -> Recomputed:
        """Set the golden values, lineage, contact points and blocking keys from the source records.

        ``incoming_consent`` (since, system) is an opt-out the applied source record carries:
        it is kept when the golden record has none yet.
        """
        self._touch(golden)
        before_points = set(golden._points or ())
        if golden.active:
            result = compute(golden.valid_sources(), self.strategies, golden.pins or {})
            new_values, lineage = result.values, dict(result.lineage)
        else:
            new_values, lineage = {name: golden.values[name] for name in SURVIVING_FIELDS}, golden.lineage
        before = {name: golden.values[name] for name in SURVIVING_FIELDS}
        changed = [name for name in SURVIVING_FIELDS if new_values[name] != before[name]]
        for name in changed:
            golden.set(name, new_values[name])
        if incoming_consent is not None and golden.values["do_not_market_since"] is None:
            golden.set("do_not_market_since", incoming_consent[0])
            golden.set("consent_source", incoming_consent[1][:40])
            changed.append("do_not_market_since")
        if lineage != golden.lineage:
            golden.set("lineage", lineage)
        golden._profile = None
        golden._keys = None
        golden._points = None
        points = set(self.points_of(golden))
        self._reindex(golden)
        if history_action and changed:
            self.record(
                golden,
                HistoryAction.CONSENT if changed == ["do_not_market_since"] else history_action,
                actor=actor,
                now=now,
                actor_user_id=actor_user_id,
                before={k: before[k] for k in changed if k in before},
                after={k: golden.values[k] for k in changed},
            )
        return Recomputed(golden, changed, len(points - before_points), len(before_points - points))

    def record(
        self,
        golden: Golden,
        action: str,
        *,
        actor: str,
        now: dt.datetime,
        object_type: str = "Individual",
        object_id: int | None = None,
        actor_user_id: int | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        """A history row for ``golden`` (written at flush)."""
        self.history.append(
            HistoryRow(
                individual_id=golden.pk,
                master_id=golden.master_id,
                action=action,
                object_type=object_type,
                object_id=golden.pk if object_id is None and object_type == "Individual" else object_id,
                actor=actor,
                actor_user_id=actor_user_id,
                before=before,
                after=after,
                created_at=now,
            )
        )

    def queue_suspect(
        self, golden: Golden, other_id: int, decision: Decision, *, actor: str, now: dt.datetime
    ) -> PendingCandidate | None:
        """Queue a suspect pair for review, unless a steward said not-a-match or it is queued already."""
        pair = tuple(sorted((golden.pk, other_id)))
        if pair[0] == pair[1] or pair[1] in self._not_a_match.get(pair[0], ()) or pair in self._open_pairs:
            return None
        self._open_pairs.add(pair)
        pending = PendingCandidate(golden, other_id, decision, actor, now)
        self.pending_candidates.append(pending)
        return pending

    def publish(
        self, golden: Golden, change_type: str, *, actor: str, now: dt.datetime, change: dict[str, Any] | None = None
    ) -> PendingChange:
        """An outbox change event for ``golden``, with its CIM snapshot as it is now (written at flush)."""
        golden.updated_at = now
        snapshot = self.render_snapshots and golden.erased_at is None
        pending = PendingChange(
            golden=golden,
            change_type=change_type,
            change=change or {},  # dates become ISO 8601 text as the row is sent (hub.sql)
            actor=actor,
            created_at=now,
            snapshot_record=golden.record() if snapshot else None,
            snapshot_points=[(kind, key, values) for (kind, key), (values, _) in self.points_of(golden).items()]
            if snapshot
            else None,
            snapshot_sources=[r.columns() for r in sorted(golden.sources, key=lambda r: (r.system, r.external_id))]
            if snapshot
            else None,
        )
        self.pending_changes.append(pending)
        return pending

    # ------------------------------------------------------------------------------------------
    # Writing
    # ------------------------------------------------------------------------------------------
    def flush(self, now: dt.datetime | None = None) -> None:
        """Write every change (one statement per table and kind of change); StaleState if overtaken."""
        require_atomic()
        now = now or timezone.now()
        touched = [g for g in self.goldens.values() if g.touched]
        opted_out = [
            (g.pk, g.values["do_not_market_since"], g.values["consent_source"])
            for g in touched
            if "do_not_market_since" in g.changed and g.values["do_not_market_since"] is not None
        ]
        existing = sorted(g.pk for g in touched if not g.new)
        if existing:
            versions = dict(
                execute(
                    f"SELECT id, updated_at FROM {_INDIVIDUAL} WHERE id = ANY(%b::bigint[]) "
                    "ORDER BY id FOR NO KEY UPDATE",
                    [existing],
                    fetch=True,
                )
            )
            stale = [pk for pk in existing if versions.get(pk) != self.goldens[pk].version]
            if stale:
                raise StaleState(f"golden record(s) {stale[:5]} changed while this work ran")
        db_points = self._db_points(existing)
        db_keys = self._db_keys(existing)
        point_rows, point_deletes, promoted, point_ids = self._plan_points(touched, db_points)
        reserved = reserve_ids({_CONTACT_POINT: len(point_ids), _CHANGE_EVENT: len(self.pending_changes)})
        point_ids.update(zip(point_ids, reserved[_CONTACT_POINT], strict=True))
        for pending, pk in zip(self.pending_changes, reserved[_CHANGE_EVENT], strict=True):
            pending.pk = pk
        for golden in touched:
            golden.updated_at = now

        self._write_goldens(touched)
        self._write_sources()
        delete_rows(_CONTACT_POINT, ("id",), ("bigint",), [(pk,) for pk in point_deletes])
        _insert(
            _CONTACT_POINT,
            [{"id": point_ids[(row["individual_id"], row["kind"], row["value_key"])], **row} for row in point_rows],
            now=now,
            on_conflict="(individual_id, kind, value_key) DO NOTHING",
        )
        update_rows(_CONTACT_POINT, "id", ("id", "is_primary"), ("bigint", "boolean"), [(pk, True) for pk in promoted])
        self._write_keys(touched, db_keys)
        self._write_candidates()
        self._write_changes(db_points, point_ids)
        write_history(self.history)
        if self.pending_changes:
            change_recorded.send(sender=ChangeEvent, change_event=None)
        if opted_out:
            marketing_opt_outs_recorded.send(sender=Individual, opt_outs=opted_out)

    def rewrite_keys(self, goldens: list[Golden]) -> int:
        """Write these golden records' blocking keys and match profiles as their sources give them.

        Nothing else changes (after an upgrade, or a change to the key kinds).
        """
        require_atomic()
        for golden in goldens:
            golden.stored_profile, golden._profile, golden._keys = None, None, None
        self._write_keys(goldens, self._db_keys([g.pk for g in goldens]))
        update_rows(
            _INDIVIDUAL,
            "id",
            ("id", "match_profile"),
            ("bigint", "jsonb"),
            [(g.pk, self.profile_of(g).to_json() if g.active else None) for g in goldens],
        )
        return len(goldens)

    def _db_points(self, ids: list[int]) -> dict[int, dict[tuple[str, str], dict[str, Any]]]:
        result: dict[int, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        if ids:
            rows = ContactPoint.objects.filter(individual_id__in=ids).order_by("id")
            for row in rows.values("individual_id", *CONTACT_POINT_COLUMNS):
                result[row["individual_id"]][(row["kind"], row["value_key"])] = row
        return result

    def _db_consents(self, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The list consents of these golden records as written so far (they are written before the flush)."""
        result: dict[int, list[dict[str, Any]]] = defaultdict(list)
        if ids:
            rows = CommunicationSubscriptionConsent.objects.filter(individual_id__in=set(ids))
            for row in rows.values("individual_id", *SUBSCRIPTION_CONSENT_COLUMNS):
                result[row.pop("individual_id")].append(row)
        return result

    def _db_keys(self, ids: list[int]) -> dict[int, set[tuple[str, str]]]:
        result: dict[int, set[tuple[str, str]]] = defaultdict(set)
        if ids:
            rows = MatchKey.objects.filter(individual_id__in=ids).values_list("individual_id", "kind", "value")
            for individual_id, kind, value in rows:
                result[individual_id].add((kind, value))
        return result

    def _plan_points(
        self, touched: list[Golden], db_points: dict[int, dict[tuple[str, str], dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], list[int], list[int], dict[tuple[int, str, str], int]]:
        """Contact point rows to insert, ids to delete, ids to promote to primary; the new points' ids to reserve."""
        rows: list[dict[str, Any]] = []
        deletes: list[int] = []
        promoted: list[int] = []
        new_ids: dict[tuple[int, str, str], int] = {}
        today = timezone.now().date()
        for golden in touched:
            existing = db_points.get(golden.pk, {})
            wanted = self.points_of(golden)
            deletes += [row["id"] for key, row in existing.items() if key not in wanted]
            plan = _primary_plan(existing, list(wanted))
            promoted += plan.promoted
            for (kind, value_key), (values, source) in wanted.items():
                if (kind, value_key) in existing:
                    continue
                new_ids[(golden.pk, kind, value_key)] = 0
                rows.append(
                    {
                        "individual_id": golden.pk,
                        "kind": kind,
                        "value_key": value_key,
                        "is_primary": plan.new_primary.get((kind, value_key), False),
                        "active_from_date": today,
                        **{name: values.get(name, "") for name in _POINT_VALUES},
                        "source_system": source.system[:40],
                    }
                )
        # A snapshot taken earlier in this work may show a point that is gone again: it gets an id too.
        for pending in self.pending_changes:
            existing = db_points.get(pending.golden.pk, {})
            for kind, value_key, _ in pending.snapshot_points or []:
                if (kind, value_key) not in existing:
                    new_ids.setdefault((pending.golden.pk, kind, value_key), 0)
        return rows, deletes, promoted, new_ids

    def _write_goldens(self, touched: list[Golden]) -> None:
        # Every written golden record gets its match profile with it (what candidates are compared on).
        profiles = {g.pk: self.profile_of(g).to_json() if g.active else None for g in touched}
        _insert(
            _INDIVIDUAL,
            [
                {
                    "id": g.pk,
                    "master_id": g.master_id,
                    "party_type": "Individual",
                    **g.values,
                    "erased_at": g.erased_at,
                    "merged_into_id": g.merged_into_id,
                    "merged_at": g.merged_at,
                    "pins": g.pins or {},
                    "lineage": g.lineage or {},
                    "match_profile": profiles[g.pk],
                    "created_at": g.created_at,
                    "updated_at": g.updated_at,
                }
                for g in touched
                if g.new
            ],
        )
        # Only the columns this work changed, so a concurrent writer's other columns survive.
        groups: dict[tuple[str, ...], list[Golden]] = defaultdict(list)
        for golden in touched:
            if not golden.new:
                groups[tuple(sorted(golden.changed - {"updated_at"}))].append(golden)
        for columns, goldens in groups.items():
            names = ("id", *columns, "match_profile", "updated_at")
            update_rows(
                _INDIVIDUAL,
                "id",
                names,
                _types(_INDIVIDUAL, names),
                [(g.pk, *(_column_value(g, c) for c in columns), profiles[g.pk], g.updated_at) for g in goldens],
            )

    def _write_sources(self) -> None:
        _insert(
            _XREF,
            [
                {
                    "id": r.pk,
                    "individual_id": r.individual_id,
                    "system": r.system,
                    "external_id": r.external_id,
                    "system_record_id": r.system_record_id,
                    "business_unit": r.business_unit,
                    "status": r.status,
                    "source_status": r.source_status,
                    "first_seen_at": r.first_seen_at,
                    "last_seen_at": r.last_seen_at,
                    "source_modified_at": r.source_modified_at,
                    "source_payload": r.payload,
                    "writeback_state": r.writeback_intent or WritebackState.NOT_NEEDED,
                    "source_master_id": r.source_master_id,
                    "written_at": None,
                    "writeback_error": "",
                    "writeback_due_at": r.updated_at if r.writeback_intent == WritebackState.PENDING else None,
                    "writeback_attempts": 0,
                    "match_rule": r.match_rule,
                    "match_detail": r.match_detail,
                    "created_at": r.updated_at,
                    "updated_at": r.updated_at,
                }
                for r in self.sources.values()
                if r.new
            ],
        )
        # Only what resolution owns is written; the write-back columns follow the intent, and "not
        # needed" never overwrites a write-back Marketing Cloud confirmed in the meantime.
        names = (
            "id",
            "individual_id",
            "system_record_id",
            "business_unit",
            "status",
            "source_status",
            "last_seen_at",
            "source_modified_at",
            "source_payload",
            "source_master_id",
            "match_rule",
            "match_detail",
            "updated_at",
            "intent",
        )
        update_rows(
            _XREF,
            "id",
            names,
            _types(_XREF, names),
            [
                (*(getattr(r, _SOURCE_ATTRIBUTE.get(n, n)) for n in names[:-1]), r.writeback_intent)
                for r in self.sources.values()
                if r.dirty and not r.new
            ],
            expressions={
                "intent": None,
                "writeback_state": "CASE WHEN s.intent = 'pending' THEN 'pending' "
                "WHEN s.intent = 'not_needed' AND t.writeback_state <> 'written' THEN 'not_needed' "
                "ELSE t.writeback_state END",
                "writeback_due_at": "CASE WHEN s.intent = 'pending' THEN s.updated_at "
                "WHEN s.intent = 'not_needed' AND t.writeback_state <> 'written' THEN NULL "
                "ELSE t.writeback_due_at END",
                "writeback_attempts": "CASE WHEN s.intent = 'pending' THEN 0 ELSE t.writeback_attempts END",
            },
        )

    def _write_keys(self, touched: list[Golden], db_keys: dict[int, set[tuple[str, str]]]) -> None:
        deletes: list[tuple[int, str, str]] = []
        inserts: list[tuple[int, str, str]] = []
        for golden in touched:
            current = self.keys_of(golden)
            before = db_keys.get(golden.pk, set())
            deletes += [(golden.pk, kind, value) for kind, value in sorted(before - current)]
            inserts += [(golden.pk, kind, value) for kind, value in sorted(current - before)]
        columns, types = ("individual_id", "kind", "value"), ("bigint", "text", "text")
        delete_rows(_MATCH_KEY, columns, types, deletes)
        insert_rows(_MATCH_KEY, columns, types, inserts, on_conflict="(kind, value, individual_id) DO NOTHING")

    def _write_candidates(self) -> None:
        if not self.pending_candidates:
            return
        written = _insert(
            _CANDIDATE,
            [
                {
                    "left_id": min(p.incoming.pk, p.other_id),
                    "right_id": max(p.incoming.pk, p.other_id),
                    "rule": p.decision.rule[:120],
                    "score": p.decision.score,
                    "comparison": p.decision.explanation(),
                    "model_version": p.decision.model_version,
                    "status": CandidateStatus.OPEN,
                    "actor": p.actor[:120],
                    "created_at": p.created_at,
                    "decided_by": "",
                }
                for p in self.pending_candidates
            ],
            on_conflict="(left_id, right_id) WHERE status = 'open' DO NOTHING",
            returning="id, left_id, right_id",
        )
        ids = {(left, right): pk for pk, left, right in written}
        for p in self.pending_candidates:
            p.pk = ids.get((min(p.incoming.pk, p.other_id), max(p.incoming.pk, p.other_id)))
            if p.pk is not None:
                self.record(
                    p.incoming,
                    HistoryAction.SUSPECT,
                    actor=p.actor,
                    now=p.created_at,
                    object_type="MatchCandidate",
                    object_id=p.pk,
                    after={"candidate": p.other_id, "rule": p.decision.rule, "score": round(p.decision.score, 3)}
                    | (
                        {"weight": round(p.decision.weight, 2), "modelVersion": p.decision.model_version}
                        if p.decision.weight is not None
                        else {}
                    ),
                )

    def _write_changes(
        self, db_points: dict[int, dict[tuple[str, str], dict[str, Any]]], point_ids: dict[tuple[int, str, str], int]
    ) -> None:
        rows = []
        consents = self._db_consents([p.golden.pk for p in self.pending_changes if p.snapshot_record is not None])
        for p in self.pending_changes:
            snapshot = None
            if p.snapshot_record is not None:
                points = _rendered_points(p.golden.pk, db_points.get(p.golden.pk, {}), p.snapshot_points, point_ids)
                snapshot = render_cim(p.snapshot_record, points, p.snapshot_sources or [], consents[p.golden.pk])
            rows.append(
                {
                    "id": p.pk,
                    "master_id": p.golden.master_id,
                    "change_type": p.change_type,
                    "change": p.change,
                    "snapshot": snapshot,
                    "actor": p.actor[:120],
                    "created_at": p.created_at,
                    "fanned_out": False,
                }
            )
        _insert(_CHANGE_EVENT, rows)


_POINT_VALUES = (
    "email_address",
    "telephone_number",
    "address_line1",
    "city_name",
    "postal_code_text",
    "state_province_name",
    "country_name",
)
# Column types as the set-based statements send them, per table.
_TYPES: dict[str, dict[str, str]] = {
    _INDIVIDUAL: {
        "id": "bigint",
        "master_id": "text",
        "party_type": "text",
        **dict.fromkeys(("salutation", "first_name", "middle_name", "last_name", "name_suffix", "gender"), "text"),
        "birth_date": "date",
        "do_not_market_since": "timestamptz",
        "consent_source": "text",
        "erased_at": "timestamptz",
        "merged_into_id": "bigint",
        "merged_at": "timestamptz",
        "pins": "jsonb",
        "lineage": "jsonb",
        "match_profile": "jsonb",
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    _XREF: {
        "id": "bigint",
        "individual_id": "bigint",
        **dict.fromkeys(
            ("system", "external_id", "system_record_id", "business_unit", "status", "source_status"), "text"
        ),
        **dict.fromkeys(("writeback_state",), "text"),
        **dict.fromkeys(("source_master_id", "writeback_error", "match_rule", "intent"), "text"),
        **dict.fromkeys(("first_seen_at", "last_seen_at", "source_modified_at", "written_at"), "timestamptz"),
        **dict.fromkeys(("writeback_due_at", "created_at", "updated_at"), "timestamptz"),
        "source_payload": "jsonb",
        "match_detail": "jsonb",
        "writeback_attempts": "integer",
    },
    _CONTACT_POINT: {
        "id": "bigint",
        "individual_id": "bigint",
        "kind": "text",
        "value_key": "text",
        "is_primary": "boolean",
        "active_from_date": "date",
        **dict.fromkeys((*_POINT_VALUES, "source_system"), "text"),
        "created_at": "timestamptz",
        "updated_at": "timestamptz",
    },
    _CANDIDATE: {
        "left_id": "bigint",
        "right_id": "bigint",
        "rule": "text",
        "score": "float8",
        "comparison": "jsonb",
        "model_version": "integer",
        "status": "text",
        "actor": "text",
        "created_at": "timestamptz",
        "decided_by": "text",
    },
    _CHANGE_EVENT: {
        "id": "bigint",
        "master_id": "text",
        "change_type": "text",
        "change": "jsonb",
        "snapshot": "jsonb",
        "actor": "text",
        "created_at": "timestamptz",
        "fanned_out": "boolean",
    },
}
# SourceRecord attributes named otherwise than their columns.
_SOURCE_ATTRIBUTE = {"id": "pk", "source_payload": "payload"}


def _types(table: str, columns: Iterable[str]) -> tuple[str, ...]:
    return tuple(_TYPES[table][c] for c in columns)


def _insert(
    table: str,
    rows: list[dict[str, Any]],
    *,
    now: dt.datetime | None = None,
    on_conflict: str = "",
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """Insert rows given as dicts (all with the same keys); ``now`` fills created_at and updated_at."""
    if not rows:
        return []
    if now is not None:
        rows = [row | {"created_at": now, "updated_at": now} for row in rows]
    columns = tuple(rows[0])
    return insert_rows(
        table,
        columns,
        _types(table, columns),
        [tuple(row[c] for c in columns) for row in rows],
        on_conflict=on_conflict,
        returning=returning,
    )


def _column_value(golden: Golden, column: str) -> Any:
    return golden.values[column] if column in PERSON_COLUMNS else getattr(golden, column)


@dataclass
class _PrimaryPlan:
    new_primary: dict[tuple[str, str], bool]
    promoted: list[int]


def _primary_plan(existing: dict[tuple[str, str], dict[str, Any]], wanted: list[tuple[str, str]]) -> _PrimaryPlan:
    """Which new contact points become primary, and which kept ones are promoted.

    One primary per kind: a kept primary stays; otherwise the first new point of the kind;
    a kind whose primary went away and got no new point promotes its oldest kept point.
    """
    wanted_set = set(wanted)
    has_primary = {
        kind for key, row in existing.items() if row["is_primary"] and key in wanted_set for kind in [key[0]]
    }
    new_primary: dict[tuple[str, str], bool] = {}
    for key in wanted:
        if key in existing:
            continue
        new_primary[key] = key[0] not in has_primary
        has_primary.add(key[0])
    promoted = []
    if any(key not in wanted_set for key in existing):
        for kind in (ContactPointKind.EMAIL, ContactPointKind.PHONE, ContactPointKind.ADDRESS):
            if kind in has_primary:
                continue
            kept = sorted((row["id"], key) for key, row in existing.items() if key in wanted_set and key[0] == kind)
            if kept:
                promoted.append(kept[0][0])
    return _PrimaryPlan(new_primary, promoted)


def _rendered_points(
    golden_id: int,
    existing: dict[tuple[str, str], dict[str, Any]],
    wanted: list[tuple[str, str, dict[str, Any]]],
    point_ids: dict[tuple[int, str, str], Any],
) -> list[dict[str, Any]]:
    """The contact points of a snapshot as the admin lists them (kind, primary first, id)."""
    plan = _primary_plan(existing, [(kind, key) for kind, key, _ in wanted])
    rows = []
    for kind, key, values in wanted:
        row = existing.get((kind, key))
        if row is not None:
            rows.append(row | {"is_primary": row["is_primary"] or row["id"] in plan.promoted})
            continue
        rows.append(
            {
                "id": point_ids.get((golden_id, kind, key)),
                "kind": kind,
                "is_primary": plan.new_primary.get((kind, key), False),
                "active_from_date": timezone.now().date(),
                "value_key": key,
                "email_address": values.get("email_address", ""),
                "telephone_number": values.get("telephone_number", ""),
                "address_line1": values.get("address_line1", ""),
                "city_name": values.get("city_name", ""),
                "postal_code_text": values.get("postal_code_text", ""),
                "state_province_name": values.get("state_province_name", ""),
                "country_name": values.get("country_name", ""),
            }
        )
    return sorted(rows, key=lambda r: (r["kind"], not r["is_primary"], r["id"] or 0))


__all__ = [
    "MAX_CANDIDATES",
    "MAX_SUSPECTS",
    "PER_KEY",
    "CROSS_REFERENCE_COLUMNS",
    "Golden",
    "MatchResult",
    "PendingCandidate",
    "PendingChange",
    "Recomputed",
    "SourceRecord",
    "StaleState",
    "UnitOfWork",
]
