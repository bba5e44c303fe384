"""The directory: people, teams, devices, on-call rotations, resources and routes.

People own it as a YAML file, reviewed in git like Alertmanager's routing tree:
``herald directory check FILE`` validates it (every problem with its line and field) and
``herald directory apply FILE`` loads it into the database. See docs/directory.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from herald import channels, devices, safeyaml, writeback
from herald.errors import DirectoryError
from herald.events import EVENT_TYPES, Severity
from herald.models import (
    Device,
    EscalationPolicy,
    Person,
    Resource,
    Rotation,
    Route,
    Subscription,
    Team,
    TeamMember,
    utcnow,
)
from herald.safefiles import InputFileError


def _registered(name: str) -> str:
    known = channels.names()
    if name not in known:
        # worded as pydantic words a Literal: the registry is the list of allowed values
        expected = " or ".join(filter(None, (", ".join(map(repr, known[:-1])), repr(known[-1]))))
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return name


# A channel's name, checked against the registry (herald/channels/registry.py).
ChannelName = Annotated[str, AfterValidator(_registered)]

MAX_FILE_BYTES = 5 * 1024 * 1024  # a directory of tens of thousands of people; far below what hurts


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebPushSubscription(BaseModel):
    """A browser's ``PushSubscription.toJSON()``; checked by herald/devices.py with the device."""

    model_config = ConfigDict(extra="ignore")  # expirationTime and whatever browsers add later
    endpoint: str
    keys: dict[str, str]


class DeviceSpec(_Strict):
    channel: ChannelName
    token: str | None = None
    fid: str | None = None
    subscription: WebPushSubscription | None = None
    app: str = "default"
    environment: Literal["sandbox", "production"] = "production"

    @model_validator(mode="after")
    def _one_address(self) -> DeviceSpec:
        given = [n for n in ("token", "fid", "subscription") if getattr(self, n) is not None]
        allowed = set(channels.get(self.channel).addressing.token_kinds)
        if len(given) != 1 or given[0] not in allowed:
            raise ValueError(f"a {self.channel} device needs exactly one of: {', '.join(sorted(allowed))}")
        self.checked()  # the same rules as every other door (InvalidDevice is a ValueError)
        return self

    def checked(self) -> devices.Address:
        kind, raw = ("subscription", self.subscription.model_dump()) if self.subscription is not None else \
            ("fid", self.fid) if self.fid is not None else ("token", self.token)
        return devices.validate(self.channel, raw, token_kind=kind, app=self.app, environment=self.environment)

    def address(self) -> tuple[str, str]:
        """(token_kind, token) as stored on the device row."""
        address = self.checked()
        return address.token_kind, address.token


def _hhmm(value: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day like 22:00") from None


class PersonSpec(_Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    name: str
    email: str | None = None
    # Other names the person answers or requests under (an admin platform's user name, an old id):
    # an answer's identity matches id, email or an alias, case-insensitively (herald/answers.py).
    aliases: list[str] = Field(default_factory=list)
    timezone: str = "UTC"
    quiet_hours: tuple[str, str] | None = None
    opt_out: list[ChannelName] = Field(default_factory=list)
    devices: list[DeviceSpec] = Field(default_factory=list)
    subscriptions: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: tuple[str, str] | None) -> tuple[str, str] | None:
        if value is not None:
            _hhmm(value[0]), _hhmm(value[1])
        return value


class TeamSpec(_Strict):
    id: str = Field(min_length=1, max_length=64)
    name: str | None = None
    members: list[str] = Field(default_factory=list)


class RotationSpec(_Strict):
    id: str = Field(min_length=1, max_length=64)
    team: str | None = None
    members: list[str] = Field(min_length=1)
    shift_hours: int = Field(default=168, ge=1)
    starts_at: datetime

    @field_validator("starts_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class ResourceSpec(_Strict):
    kind: Literal["artifact", "flow", "credential", "queue", "application", "topic"]
    name: str = Field(min_length=1)
    environment: str = "*"
    owners: list[str] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)


class MatchSpec(_Strict):
    types: list[str] = Field(default_factory=lambda: ["*"])
    environments: list[str] | None = None
    min_severity: Severity | None = None
    owners: list[str] | None = None
    topics: list[str] | None = None

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not fnmatch.filter(EVENT_TYPES, pattern):
                raise ValueError(f"{pattern!r} matches no event type")
        return value


class RecipientSpec(_Strict):
    team: str | None = None
    person: str | None = None
    on_call: str | None = None
    owners: bool | None = None
    subscribers: bool | None = None
    requester: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RecipientSpec:
        given = [k for k, v in self.model_dump().items() if v not in (None, False)]
        if len(given) != 1:
            raise ValueError("each recipient names exactly one of: team, person, on_call, owners, "
                             "subscribers, requester")
        return self

    def label(self) -> str:
        for key, value in self.model_dump().items():
            if value not in (None, False):
                return key if value is True else f"{key}:{value}"
        return "?"


class RouteSpec(_Strict):
    id: str = Field(min_length=1, max_length=64)
    match: MatchSpec = Field(default_factory=MatchSpec)
    recipients: list[RecipientSpec] = Field(min_length=1)
    channels: list[ChannelName] | None = None
    ids_only: bool = False
    continue_: bool = Field(default=False, alias="continue")
    # the escalation policy of the incidents this route's events open (herald/escalation.py)
    escalation: str | None = Field(default=None, min_length=1, max_length=64)


class NotifySpec(_Strict):
    """Who one step of an escalation policy pages: exactly one of these."""

    on_call: str | None = None  # who holds the rotation when the step runs
    next_on_call: str | None = None  # the rotation's next person after the one on call
    team: str | None = None
    people: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> NotifySpec:
        given = [k for k, v in self.model_dump().items() if v is not None]
        if len(given) != 1:
            raise ValueError("notify names exactly one of: on_call, next_on_call, team, people")
        return self


class StepSpec(_Strict):
    """One step of an escalation policy: notify someone (with an importance), or wait some minutes."""

    notify: NotifySpec | None = None
    importance: Literal["normal", "high"] | None = None  # high: a page that sounds (severity critical)
    wait_min: float | None = Field(default=None, gt=0, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        if (self.notify is None) == (self.wait_min is None):
            raise ValueError("a step is either notify (with an optional importance) or wait_min")
        if self.importance is not None and self.notify is None:
            raise ValueError("importance belongs to a notify step")
        return self

    def stored(self) -> dict[str, Any]:
        if self.wait_min is not None:
            return {"wait_min": self.wait_min}
        assert self.notify is not None
        return {"notify": self.notify.model_dump(exclude_none=True), "importance": self.importance or "normal"}


class PolicySpec(_Strict):
    """An escalation policy: its steps in order, the whole chain repeated up to ``repeat`` more times."""

    id: str = Field(min_length=1, max_length=64)
    steps: list[StepSpec] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=20)

    @model_validator(mode="after")
    def _pages_and_waits(self) -> PolicySpec:
        if not any(step.notify is not None for step in self.steps):
            raise ValueError("a policy needs at least one notify step")
        if self.repeat and not any(step.wait_min is not None for step in self.steps):
            raise ValueError("a policy that repeats needs a wait_min step (it would page again at once)")
        return self


class DirectorySpec(_Strict):
    people: list[PersonSpec] = Field(default_factory=list)
    teams: list[TeamSpec] = Field(default_factory=list)
    rotations: list[RotationSpec] = Field(default_factory=list)
    resources: list[ResourceSpec] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)
    policies: list[PolicySpec] = Field(default_factory=list)  # escalation chains (herald/escalation.py)
    webhooks: list[writeback.WebhookSpec] = Field(default_factory=list)  # write-back (docs/webhooks.md)


# --- loading with line numbers -------------------------------------------------------------


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out)


def _where(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def load(path: Path | str) -> DirectorySpec:
    """Parse and validate a directory file; raise DirectoryError listing every problem.

    The file must be a regular file of at most :data:`MAX_FILE_BYTES`; its YAML is read by
    :mod:`herald.safeyaml` (bounded aliases, no duplicate keys at any level, no content echoed).
    """
    path = Path(path)
    try:
        raw, node = safeyaml.load_file(path, max_bytes=MAX_FILE_BYTES)
    except InputFileError as exc:
        raise DirectoryError([str(exc)]) from None
    except safeyaml.YamlError as exc:
        raise DirectoryError(exc.problems) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)

    def at(loc: tuple[Any, ...]) -> str:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                return f"{path}:{lines[loc[:cut]]}"
        return str(path)

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DirectoryError([f"{path}:1: the top level must be a mapping (people, teams, ...)"])
    try:
        spec = DirectorySpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            # pydantic adds the union/model branch names; keep the user's own keys only
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{at(loc)}: {_where(loc)}: {message}")
        raise DirectoryError(problems) from None
    problems = _cross_check(spec, at)
    if problems:
        raise DirectoryError(problems)
    return spec


def _cross_check(spec: DirectorySpec, at: Callable[[tuple[Any, ...]], str]) -> list[str]:
    """What no single section can check: duplicate ids and devices, and every reference between sections."""
    return _CrossCheck(spec, at).run()


class _CrossCheck:
    """The references between the file's sections, each problem with its line (``at``) and field."""

    def __init__(self, spec: DirectorySpec, at: Callable[[tuple[Any, ...]], str]) -> None:
        self.spec, self.at = spec, at
        self.problems: list[str] = []
        self.people = {p.id for p in spec.people}
        self.teams = {t.id for t in spec.teams}
        self.rotations = {r.id for r in spec.rotations}
        self.policies = {p.id for p in spec.policies}

    def run(self) -> list[str]:
        self.duplicate_ids("people", [p.id for p in self.spec.people])
        self.duplicate_ids("teams", [t.id for t in self.spec.teams])
        self.duplicate_ids("rotations", [r.id for r in self.spec.rotations])
        self.duplicate_ids("routes", [r.id for r in self.spec.routes])
        self.duplicate_ids("webhooks", [w.id for w in self.spec.webhooks])
        self.duplicate_ids("policies", [p.id for p in self.spec.policies])
        self.duplicate_devices()
        self.team_members()
        self.rotation_references()
        self.resource_owners()
        self.route_references()
        self.policy_references()
        return self.problems

    def problem(self, loc: tuple[Any, ...], text: str, *, key: str | None = None) -> None:
        """One problem at ``loc``'s line; ``key`` names a field of that item (the item's line is kept)."""
        where = _where(loc) if key is None else f"{_where(loc)}.{key}"
        self.problems.append(f"{self.at(loc)}: {where}: {text}")

    def person(self, loc: tuple[Any, ...], pid: str) -> None:
        if pid not in self.people:
            self.problem(loc, f"unknown person {pid!r}")

    def owner(self, loc: tuple[Any, ...], ref: str) -> None:
        kind, _, name = ref.partition(":")
        if kind == "team" and name in self.teams or kind == "person" and name in self.people:
            return
        self.problem(loc, f"unknown owner {ref!r} (write team:ID or person:ID)")

    def duplicate_ids(self, kind: str, ids: list[str]) -> None:
        seen: set[str] = set()
        for index, item in enumerate(ids):
            if item in seen:
                self.problem((kind, index, "id"), f"duplicate id {item!r}")
            seen.add(item)

    def duplicate_devices(self) -> None:
        """One device (channel and address) named twice, for one person or two."""
        first: dict[tuple[str, str], tuple[Any, ...]] = {}
        for i, p in enumerate(self.spec.people):
            for j, d in enumerate(p.devices):
                key, loc = (d.channel, d.address()[1]), ("people", i, "devices", j)
                if key in first:
                    self.problem(loc, f"same device as {_where(first[key])}")
                first[key] = loc

    def team_members(self) -> None:
        for i, t in enumerate(self.spec.teams):
            for j, member in enumerate(t.members):
                self.person(("teams", i, "members", j), member)

    def rotation_references(self) -> None:
        for i, r in enumerate(self.spec.rotations):
            for j, member in enumerate(r.members):
                self.person(("rotations", i, "members", j), member)
            if r.team is not None and r.team not in self.teams:
                self.problem(("rotations", i, "team"), f"unknown team {r.team!r}")

    def resource_owners(self) -> None:
        for i, res in enumerate(self.spec.resources):
            for j, ref in enumerate(res.owners):
                self.owner(("resources", i, "owners", j), ref)

    def route_references(self) -> None:
        for i, route in enumerate(self.spec.routes):
            for j, rcpt in enumerate(route.recipients):
                self.recipient(("routes", i, "recipients", j), rcpt)
            for j, ref in enumerate(route.match.owners or []):
                self.owner(("routes", i, "match", "owners", j), ref)
            if route.escalation is not None and route.escalation not in self.policies:
                self.problem(("routes", i, "escalation"), f"unknown escalation policy {route.escalation!r}")

    def policy_references(self) -> None:
        for i, policy in enumerate(self.spec.policies):
            for j, step in enumerate(policy.steps):
                if step.notify is None:
                    continue
                loc, notify = ("policies", i, "steps", j, "notify"), step.notify
                for key in ("on_call", "next_on_call"):
                    rotation = getattr(notify, key)
                    if rotation is not None and rotation not in self.rotations:
                        self.problem((*loc, key), f"unknown rotation {rotation!r}")
                if notify.team is not None and notify.team not in self.teams:
                    self.problem((*loc, "team"), f"unknown team {notify.team!r}")
                for k, pid in enumerate(notify.people or []):
                    self.person((*loc, "people", k), pid)

    def recipient(self, loc: tuple[Any, ...], rcpt: RecipientSpec) -> None:
        if rcpt.team is not None and rcpt.team not in self.teams:
            self.problem(loc, f"unknown team {rcpt.team!r}", key="team")
        if rcpt.person is not None:
            self.person((*loc, "person"), rcpt.person)
        if rcpt.on_call is not None and rcpt.on_call not in self.rotations:
            self.problem(loc, f"unknown rotation {rcpt.on_call!r}", key="on_call")


# --- applying ------------------------------------------------------------------------------


def apply(spec: DirectorySpec, db: Session) -> dict[str, int]:
    """Make the database match the file, in the caller's transaction.

    People missing from the file are deactivated (not deleted: past notifications name them)
    and their devices with them. Devices registered through the API stay unless the file moves
    their token to another person. Applying never revives a device a provider or a person
    deactivated, and leaves an unchanged device as it is (herald/devices.py, ``by="directory"``).
    """
    for model in (TeamMember, Subscription, Route, Resource, Rotation, EscalationPolicy):
        db.execute(delete(model))
    db.flush()
    gone = _deactivate_people_gone(spec, db)
    db.execute(delete(Team))
    device_count = _apply_people(spec, db)
    _apply_teams(spec, db)
    _apply_routing(spec, db)
    webhooks = writeback.apply_endpoints(db, spec.webhooks)
    db.flush()
    return {"people": len(spec.people), "teams": len(spec.teams), "rotations": len(spec.rotations),
            "resources": len(spec.resources), "routes": len(spec.routes), "policies": len(spec.policies),
            "devices": device_count,
            "deactivated_people": len(gone), **webhooks}


def _deactivate_people_gone(spec: DirectorySpec, db: Session) -> set[str]:
    """Deactivate the people no longer in the file, and their active devices; returns their ids."""
    gone = set(db.scalars(select(Person.id))) - {p.id for p in spec.people}
    if gone:
        db.execute(update(Person).where(Person.id.in_(gone)).values(active=False))
        db.execute(update(Device).where(Device.person_id.in_(gone), Device.active.is_(True))
                   .values(active=False, deactivated_at=utcnow(), deactivated_reason=devices.PERSON_REMOVED))
    return gone


def _apply_people(spec: DirectorySpec, db: Session) -> int:
    """The file's people, their devices and subscriptions; returns how many devices the file names."""
    for p in spec.people:
        db.merge(Person(id=p.id, name=p.name, email=p.email, aliases=list(p.aliases), timezone=p.timezone,
                        quiet_hours=list(p.quiet_hours) if p.quiet_hours else None,
                        opted_out_channels=list(p.opt_out), active=True))
    db.flush()
    device_count = 0
    for p in spec.people:
        for d in p.devices:
            kind, token = d.address()
            devices.register(db, person_id=p.id, channel=d.channel, token=token, token_kind=kind,
                             app=d.app, environment=d.environment, by="directory")
            device_count += 1
        for topic in dict.fromkeys(p.subscriptions):
            db.add(Subscription(person_id=p.id, topic=topic))
    return device_count


def _apply_teams(spec: DirectorySpec, db: Session) -> None:
    for t in spec.teams:
        db.add(Team(id=t.id, name=t.name or t.id))
    db.flush()
    for t in spec.teams:
        for member in dict.fromkeys(t.members):
            db.add(TeamMember(team_id=t.id, person_id=member))


def _apply_routing(spec: DirectorySpec, db: Session) -> None:
    """Rotations, resources, routes (they keep the file's order) and escalation policies."""
    for r in spec.rotations:
        db.add(Rotation(id=r.id, team_id=r.team, members=r.members, shift_hours=r.shift_hours,
                        starts_at=r.starts_at))
    for res in spec.resources:
        db.add(Resource(kind=res.kind, name=res.name, environment=res.environment, owners=res.owners,
                        meta=res.meta))
    for position, route in enumerate(spec.routes):
        db.add(Route(id=route.id, position=position, match=route.match.model_dump(exclude_none=True),
                     recipients=[r.model_dump(exclude_none=True) for r in route.recipients],
                     channels=route.channels, ids_only=route.ids_only, continue_=route.continue_,
                     escalation=route.escalation))
    now = utcnow()
    for policy in spec.policies:  # incidents in flight keep their own copy (incidents.chain)
        db.add(EscalationPolicy(id=policy.id, steps=[step.stored() for step in policy.steps], repeat=policy.repeat,
                                updated_at=now))


def register_device(db: Session, *, person_id: str, channel: str, token: str, token_kind: str = "token",
                    app: str = "default", environment: str = "production") -> Device:
    """The device's own door (producer, CLI, API): see herald.devices.register; raises InvalidDevice."""
    return devices.register(db, person_id=person_id, channel=channel, token=token, token_kind=token_kind,
                            app=app, environment=environment, by="device")


# --- reading: on-call and quiet hours ------------------------------------------------------


def on_call_now(rotation: Rotation, now: datetime) -> str | None:
    """Who holds the rotation at ``now`` (None before it starts)."""
    if now < rotation.starts_at or not rotation.members:
        return None
    shifts = int((now - rotation.starts_at).total_seconds() // (rotation.shift_hours * 3600))
    return rotation.members[shifts % len(rotation.members)]


class HasQuietHours(Protocol):
    timezone: str
    quiet_hours: list[str] | None


def in_quiet_hours(person: HasQuietHours, now: datetime) -> bool:
    """True when ``now`` falls inside the person's quiet hours, in their own time zone."""
    if not person.quiet_hours:
        return False
    start, end = (_hhmm(v) for v in person.quiet_hours)
    local = now.astimezone(ZoneInfo(person.timezone)).time()
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # spans midnight


def route_matches(route: Route, *, event_type: str, environment: str, severity: Severity,
                  owners: list[str], topic: str | None) -> bool:
    match = route.match
    if not any(fnmatch.fnmatchcase(event_type, pattern) for pattern in match.get("types", ["*"])):
        return False
    if match.get("environments") is not None and environment not in match["environments"]:
        return False
    if match.get("min_severity") is not None and severity.rank < Severity(match["min_severity"]).rank:
        return False
    if match.get("owners") is not None and not set(match["owners"]) & set(owners):
        return False
    topics = match.get("topics")
    return topics is None or (topic is not None and any(fnmatch.fnmatchcase(topic, p) for p in topics))
