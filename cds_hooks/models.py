"""CDS Hooks 2.0 wire models.

Outgoing objects serialise with no ``null`` and no empty string, list or object (checklist
A-2..A-4); the only empty array ever sent is ``{"cards": []}`` / ``{"services": []}`` (A-3).
Incoming objects are lenient: unknown members and ``extension`` objects are accepted (A-5, C-8).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

JsonObject = dict[str, Any]

Indicator = Literal["info", "warning", "critical"]
SelectionBehavior = Literal["at-most-one", "any"]
ActionType = Literal["create", "update", "delete"]
LinkType = Literal["absolute", "smart"]
FeedbackOutcome = Literal["accepted", "overridden"]


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict | tuple) and len(value) == 0)


def prune(value: Any) -> Any:
    """Drop ``None`` and empty members recursively (A-2, A-3, A-4). Scalars are never
    recursed into: this runs over every resource a suggestion carries."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, dict | list | tuple):
                item = prune(item)
                if not item:
                    continue
            elif item is None or (isinstance(item, str) and not item):
                continue
            out[key] = item
        return out
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if isinstance(item, dict | list | tuple):
                item = prune(item)
                if not item:
                    continue
            elif item is None or (isinstance(item, str) and not item):
                continue
            items.append(item)
        return items
    return value


def _prune_members(value: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` and empty members one level deep. Nested wire models arrive already pruned
    by their own serializer, so pruning each level once keeps serialisation linear."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, list):
            item = [v for v in item if not _is_empty(v)]
        if not _is_empty(item):
            out[key] = item
    return out


def _members(pairs: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The wire object from (name, value) pairs: ``None`` and empty values left out."""
    return {name: value for name, value in pairs if not _is_empty(value)}


class WireModel(BaseModel):
    """Base for outgoing objects: camelCase as in the spec, nothing null or empty on the wire.

    ``to_wire()`` builds the JSON object by hand, the hot path of every response (about ten
    times faster than ``model_dump``); ``model_dump(mode="json", by_alias=True)`` gives the
    same object and the tests hold the two equal.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        return _prune_members(handler(self))

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Coding(WireModel):
    """CDS Hooks Coding (R-28): ``code`` and ``system`` required, ``display`` conditional."""

    code: str
    system: str
    display: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _members((("code", self.code), ("system", self.system), ("display", self.display)))


class Source(WireModel):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None

    def to_wire(self) -> dict[str, Any]:
        topic = self.topic.to_wire() if self.topic is not None else None
        return _members(
            (("label", self.label), ("url", self.url), ("icon", self.icon), ("topic", topic))
        )


class Action(WireModel):
    type: ActionType
    description: str
    resource: JsonObject | None = None
    resource_id: str | None = Field(default=None, alias="resourceId")

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        # ``resource`` is free-form JSON: the one member pruned all the way down.
        return prune(handler(self))

    def to_wire(self) -> dict[str, Any]:
        resource = prune(self.resource) if self.resource is not None else None
        return _members(
            (
                ("type", self.type),
                ("description", self.description),
                ("resource", resource),
                ("resourceId", self.resource_id),
            )
        )


class Suggestion(WireModel):
    label: str
    uuid: str | None = None
    is_recommended: bool | None = Field(default=None, alias="isRecommended")
    actions: tuple[Action, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        actions = [a for a in (action.to_wire() for action in self.actions) if a]
        return _members(
            (
                ("label", self.label),
                ("uuid", self.uuid),
                ("isRecommended", self.is_recommended),
                ("actions", actions),
            )
        )


class Link(WireModel):
    label: str
    url: str
    type: LinkType
    app_context: str | None = Field(default=None, alias="appContext")
    autolaunchable: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        return _members(
            (
                ("label", self.label),
                ("url", self.url),
                ("type", self.type),
                ("appContext", self.app_context),
                ("autolaunchable", self.autolaunchable),
            )
        )


class Card(WireModel):
    summary: str
    indicator: Indicator
    source: Source
    uuid: str | None = None
    detail: str | None = None
    suggestions: tuple[Suggestion, ...] = ()
    selection_behavior: SelectionBehavior | None = Field(default=None, alias="selectionBehavior")
    override_reasons: tuple[Coding, ...] = Field(default=(), alias="overrideReasons")
    links: tuple[Link, ...] = ()

    @field_validator("summary")
    @classmethod
    def _summary_under_140(cls, value: str) -> str:
        # "one-sentence summary ... under 140 characters".
        if not value or len(value) >= 140:
            raise ValueError("card summary must be 1 to 139 characters")
        return value

    @field_validator("override_reasons")
    @classmethod
    def _reasons_have_display(cls, value: tuple[Coding, ...]) -> tuple[Coding, ...]:
        # every override reason MUST carry a display.
        if any(not coding.display for coding in value):
            raise ValueError("every overrideReason needs a display")
        return value

    @model_validator(mode="after")
    def _selection_behavior_with_suggestions(self) -> Card:
        # selectionBehavior is required whenever suggestions are present.
        if self.suggestions and self.selection_behavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        return self

    def to_wire(self) -> dict[str, Any]:
        # Written out member by member: this runs for every card of every response.
        body: dict[str, Any] = {"summary": self.summary, "indicator": self.indicator}
        source = self.source.to_wire()
        if source:
            body["source"] = source
        if self.uuid:
            body["uuid"] = self.uuid
        if self.detail:
            body["detail"] = self.detail
        if self.suggestions:
            body["suggestions"] = [s.to_wire() for s in self.suggestions]
        if self.selection_behavior:
            body["selectionBehavior"] = self.selection_behavior
        if self.override_reasons:
            body["overrideReasons"] = [r.to_wire() for r in self.override_reasons]
        if self.links:
            body["links"] = [link.to_wire() for link in self.links]
        return body


class CdsResponse(WireModel):
    cards: tuple[Card, ...] = ()
    system_actions: tuple[Action, ...] = Field(default=(), alias="systemActions")

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        body = _prune_members(handler(self))
        body.setdefault("cards", [])  # the one empty array the spec allows
        return body

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cards": [card.to_wire() for card in self.cards]}
        actions = [a for a in (action.to_wire() for action in self.system_actions) if a]
        if actions:
            body["systemActions"] = actions
        return body

    def encode(self) -> bytes:
        """The response body as JSON bytes (orjson)."""
        return orjson.dumps(self.to_wire())


class ServiceDescriptor(WireModel):
    """One entry of the discovery response (B-4..B-6)."""

    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str] = Field(default_factory=dict)
    usage_requirements: str | None = Field(default=None, alias="usageRequirements")
    extension: JsonObject | None = None

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        return prune(handler(self))  # ``prefetch`` and ``extension`` are free-form


class DiscoveryResponse(WireModel):
    services: tuple[ServiceDescriptor, ...] = ()

    @model_serializer(mode="wrap")
    def _serialize(self, handler: Any) -> Any:
        body = prune(handler(self))
        body.setdefault("services", [])
        return body


# ---------------------------------------------------------------- incoming (lenient)


class Incoming(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FhirAuthorization(Incoming):
    """``fhirAuthorization`` (C-5). The token is transient: never stored or logged (C-9)."""

    access_token: str
    token_type: str
    expires_in: int | None = None  # seconds: a JSON integer (not "300", not true)
    scope: str | None = None
    subject: str | None = None
    patient: str | None = None

    @field_validator("expires_in", mode="before")
    @classmethod
    def _json_integer(cls, value: object) -> object:
        # JSON Schema's "integer": any number with no fraction (300, 300.0); never a string
        # or a boolean, which pydantic's lax mode would otherwise turn into one.
        if value is None or type(value) is int:
            return value
        if type(value) is float and value.is_integer():
            return int(value)
        raise ValueError("must be an integer")

    def __repr__(self) -> str:  # keep the token out of any accidental log line
        return f"FhirAuthorization(token_type={self.token_type!r}, scope={self.scope!r})"

    __str__ = __repr__


class CdsRequest(Incoming):
    """A hook invocation (C-2..C-8)."""

    hook: str
    hook_instance: str = Field(alias="hookInstance")
    fhir_server: str | None = Field(default=None, alias="fhirServer")
    fhir_authorization: FhirAuthorization | None = Field(default=None, alias="fhirAuthorization")
    context: JsonObject
    prefetch: dict[str, Any] | None = None
    extension: JsonObject | None = None

    def __repr__(self) -> str:  # context and prefetch carry patient data: keep them out
        return f"CdsRequest(hook={self.hook!r}, hookInstance={self.hook_instance!r})"

    __str__ = __repr__


# Feedback limits: every stored string has one, the same on every database (SQLite does not
# enforce column sizes, PostgreSQL refuses an over-long value or a NUL with an error). The
# store sizes its columns from these; the OpenAPI document states them, derived from the models.
#: ``card``, ``acceptedSuggestions[].id`` (uuids) and ``overrideReason.reason.code``.
FEEDBACK_ID_MAX = 128
#: ``overrideReason.reason.system`` (a URI).
FEEDBACK_SYSTEM_MAX = 255
#: ``outcomeTimestamp``: an RFC 3339 instant is at most 35 characters (nanoseconds, offset).
FEEDBACK_TIMESTAMP_MAX = 40
#: ``overrideReason.userComment``.
FEEDBACK_COMMENT_MAX = 4096
#: No NUL character (U+0000): PostgreSQL text cannot hold one. The same expression in Python,
#: pydantic's regex engine and the document's JSON Schema (ECMA-262).
NO_NUL = "^[^\\x00]*$"


def _stored(max_length: int, description: str) -> Any:
    return Field(max_length=max_length, pattern=NO_NUL, description=description)


class FeedbackCoding(Incoming):
    """The override reason the user picked: a Coding echoed from the card (F-6), ``display``
    often left out. Only ``code`` and ``system`` are stored."""

    code: Annotated[str | None, _stored(FEEDBACK_ID_MAX, "the reason's code")] = None
    system: Annotated[str | None, _stored(FEEDBACK_SYSTEM_MAX, "the reason's code system")] = None
    display: str | None = None


class OverrideReason(Incoming):
    reason: FeedbackCoding | None = None
    user_comment: Annotated[str | None, _stored(FEEDBACK_COMMENT_MAX, "the user's comment")] = (
        Field(default=None, alias="userComment")
    )


class AcceptedSuggestion(Incoming):
    id: Annotated[str, _stored(FEEDBACK_ID_MAX, "the uuid of the accepted suggestion")]


class FeedbackItem(Incoming):
    """One feedback entry (F-2..F-7). Judged on its own: in a batch, a refused item does not
    stop the others from being stored."""

    card: Annotated[str, _stored(FEEDBACK_ID_MAX, "the uuid of the card")]
    outcome: FeedbackOutcome
    outcome_timestamp: Annotated[
        str, _stored(FEEDBACK_TIMESTAMP_MAX, "ISO 8601 instant of the user's action")
    ] = Field(alias="outcomeTimestamp")
    accepted_suggestions: list[AcceptedSuggestion] | None = Field(
        default=None, alias="acceptedSuggestions"
    )
    override_reason: OverrideReason | None = Field(default=None, alias="overrideReason")


class FeedbackRequest(Incoming):
    feedback: list[FeedbackItem]
