"""CDS Hooks 2.0 wire models.

Outgoing objects follow one wire rule, held by :class:`WireModel` for every class: a required
member is always sent; an optional member is left out when it is ``None`` or empty (``""``,
``[]``, ``{}``), which is also its default (checklist A-2..A-4). Free-form JSON members (an
action's resource, a descriptor's prefetch and extension) are pruned all the way down when the
model is built. The only empty array ever sent is ``{"cards": []}`` / ``{"services": []}``
(A-3): both members are required. The JSON Schemas of these objects are derived from the same
models (:mod:`cds_hooks.wire_schema`).
Incoming objects are lenient: unknown members and ``extension`` objects are accepted (A-5, C-8).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

JsonObject = dict[str, Any]

Indicator = Literal["info", "warning", "critical"]
SelectionBehavior = Literal["at-most-one", "any"]
ActionType = Literal["create", "update", "delete"]
LinkType = Literal["absolute", "smart"]
FeedbackOutcome = Literal["accepted", "overridden"]


def is_empty(value: object) -> bool:
    """What the wire leaves out: ``None`` and an empty string, array or object (A-2..A-4)."""
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


#: A free-form JSON object sent as given, minus its null and empty members at any depth.
FreeJson = Annotated[JsonObject, AfterValidator(prune)]


class WireModel(BaseModel):
    """Base for outgoing objects: camelCase as in the spec, nothing null or empty on the wire.

    The wire rule is set here once for every subclass: each optional member (one with a
    default) is given ``exclude_if=is_empty``, so pydantic-core itself leaves it out when it is
    ``None`` or empty; required members are always written. An optional member must default to
    ``None`` or an empty value, so that a member left out reads back as its default.
    ``model_dump(mode="json", by_alias=True)``, :meth:`to_wire` and :meth:`encode` all give
    the wire form.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        changed = False
        for name, field in cls.model_fields.items():
            if field.is_required():
                continue
            if not is_empty(field.get_default(call_default_factory=True)):
                raise TypeError(
                    f"{cls.__name__}.{name}: an optional wire member must default to None or "
                    "an empty value (it is left out of the wire when empty)"
                )
            if field.exclude_if is not is_empty:
                field.exclude_if = is_empty
                changed = True
        if changed:
            cls.model_rebuild(force=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent on the wire."""
        wire: dict[str, Any] = self.__pydantic_serializer__.to_python(
            self, mode="json", by_alias=True
        )
        return wire

    def encode(self) -> bytes:
        """The JSON bytes sent on the wire, written by pydantic-core."""
        return self.__pydantic_serializer__.to_json(self, by_alias=True)


#: A required string that is never empty on the wire.
Text = Annotated[str, Field(min_length=1)]


class Coding(WireModel):
    """CDS Hooks Coding (R-28): ``code`` and ``system`` required, ``display`` conditional."""

    code: Text
    system: Text
    display: str | None = None


class Source(WireModel):
    """Where a card comes from (R-8..R-11)."""

    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(WireModel):
    """A change the user may accept (R-20..R-23)."""

    type: ActionType
    description: str
    resource: FreeJson | None = None
    resource_id: str | None = Field(default=None, alias="resourceId")


class Suggestion(WireModel):
    """A set of actions accepted together (R-16..R-19)."""

    label: str
    uuid: str | None = None
    is_recommended: bool | None = Field(default=None, alias="isRecommended")
    actions: tuple[Action, ...] = ()


class Link(WireModel):
    """A link shown on a card (R-24..R-27, R-30)."""

    label: str
    url: str
    type: LinkType
    app_context: str | None = Field(default=None, alias="appContext")
    autolaunchable: bool | None = None


#: A card's summary is under 140 characters (R-5).
SUMMARY_MAX = 139


class Card(WireModel):
    """One card of a response (R-4..R-15)."""

    summary: str = Field(
        min_length=1,
        max_length=SUMMARY_MAX,
        description="one sentence, under 140 characters",
    )
    indicator: Indicator
    source: Source
    uuid: str | None = None
    detail: str | None = None
    suggestions: tuple[Suggestion, ...] = ()
    selection_behavior: SelectionBehavior | None = Field(default=None, alias="selectionBehavior")
    override_reasons: tuple[Coding, ...] = Field(default=(), alias="overrideReasons")
    links: tuple[Link, ...] = ()

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


class CdsResponse(WireModel):
    """A service's answer (R-1..R-3): ``cards`` is required, ``[]`` when there is no
    guidance (R-2)."""

    cards: tuple[Card, ...]
    system_actions: tuple[Action, ...] = Field(default=(), alias="systemActions")


class ServiceDescriptor(WireModel):
    """One entry of the discovery response (B-4..B-6)."""

    hook: str
    id: str
    title: str
    description: str
    prefetch: Annotated[dict[str, str], AfterValidator(prune)] = Field(default_factory=dict)
    usage_requirements: str | None = Field(default=None, alias="usageRequirements")
    extension: FreeJson | None = None


class DiscoveryResponse(WireModel):
    """The discovery document (B-2, B-3): ``services`` is required, ``[]`` when none."""

    services: tuple[ServiceDescriptor, ...]


# ---------------------------------------------------------------- incoming (lenient)


#: A character that is not white space, spelled out so that Python's ``re`` and the JSON Schema
#: (ECMA-262) pattern of the OpenAPI document mean the same set: ECMA-262 white space and line
#: terminators, plus the separators \x1c-\x1f and NEL that Python's ``str.strip`` also removes.
NOT_BLANK = (
    "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)


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
    # A UUID per the spec; any non-blank string is accepted, as some EHRs send other identifiers
    # (the runtime's check; the pattern documents it in the OpenAPI document).
    hook_instance: str = Field(
        alias="hookInstance",
        description="a UUID for this call (spec); any non-blank string is accepted",
        json_schema_extra={"pattern": NOT_BLANK},
    )
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
