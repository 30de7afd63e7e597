"""Validation of data-subject requests and normalisation of their identities (pure Python).

A request names the person by one or more identities; intake normalises each one
the way :mod:`ketch_spark.rights.match` normalises the columns it compares them
with:

* ``email``: trimmed and lower-cased; its sha256 is added as ``email_sha256``, so
  columns holding the hashed email match too;
* ``email_sha256``: 64 hex characters, trimmed and lower-cased;
* ``phone``: parsed with ``phonenumbers`` and written E.164 (``+14155550101``); a
  number without ``+`` is read in ``dsr.default_phone_region``;
* ``user_id`` and ``device_id``: trimmed (the project's one rule for identifiers;
  trimming removes spaces, as Spark's ``trim`` does), JSON integers accepted.

Every problem raises :class:`~ketch_spark.errors.InvalidRequestError` whose message
is the reason. A message names the field at fault, never an identity's value: logs
and rejection reports must not leak the personal data a request carries. Code
that needs to mention an identity logs :func:`identity_hash` of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Mapping

from ketch_spark.config import DsrSettings
from ketch_spark.errors import InvalidRequestError
from ketch_spark.rights.match import IDENTITY_TYPES

__all__ = [
    "REQUEST_FIELDS",
    "REQUEST_KINDS",
    "MODES_BY_KIND",
    "UNREADABLE_KEY",
    "ValidRequest",
    "identity_hash",
    "normalise_identities",
    "validate_request",
]

#: Top-level fields a request may have.
REQUEST_FIELDS = ("request_id", "org_id", "kind", "mode", "identities", "received_at")
#: Kinds of request.
REQUEST_KINDS = ("erasure", "access")
#: Modes allowed per kind; the first is the default when a request gives none.
MODES_BY_KIND: Mapping[str, tuple[str, ...]] = {"erasure": ("delete", "obfuscate"), "access": ("export",)}
#: Reserved key of a placeholder for an input that could not be read as a request
#: (a line of a file that is not JSON); its value is the reason it is rejected with.
UNREADABLE_KEY = "__ketch_unreadable__"

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_ORG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,255}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_EMAIL = 254
_MAX_ID = 512
_EARLIEST = dt.datetime(2000, 1, 1)
_MAX_FUTURE = dt.timedelta(days=1)


@dataclass(frozen=True)
class ValidRequest:
    """A validated data-subject request, its identities normalised.

    Attributes:
        request_id: The caller's id of the request (unique across requests).
        org_id: The customer the person belongs to (trimmed).
        kind: ``erasure`` or ``access``.
        mode: ``delete`` or ``obfuscate`` for an erasure, ``export`` for an access.
        identities: Normalised value per identity type (``email`` brings ``email_sha256``);
            left out of ``repr``, so logging a request does not log personal data.
        received_at: When the request was received (naive UTC).
        due_at: ``received_at`` plus ``dsr.due_days`` days.
    """

    request_id: str
    org_id: str
    kind: str
    mode: str
    identities: dict[str, str] = field(hash=False, repr=False)
    received_at: dt.datetime
    due_at: dt.datetime


def identity_hash(value: str) -> str:
    """A short, stable stand-in for an identity value in logs: 16 hex chars of its sha256."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def _trim(value: str) -> str:
    """Trims spaces, as Spark's ``trim`` does (the matcher trims columns with it)."""
    return value.strip(" ")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _has_control(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in value)


def _text(identity_type: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"identity {identity_type} must be a string, found {_type_name(value)}")
    return _trim(value)


def _email(value: Any) -> str:
    email = _text("email", value).lower()
    local, at, domain = email.partition("@")
    labels = domain.split(".")
    valid = (
        at == "@"
        and len(email) <= _MAX_EMAIL
        and local
        and "@" not in domain
        and len(labels) >= 2
        and all(labels)
        and not any(c.isspace() for c in email)
        and not _has_control(email)
    )
    if not valid:
        raise InvalidRequestError("identity email is not a valid email address")
    return email


def _email_sha256(value: Any) -> str:
    digest = _text("email_sha256", value).lower()
    if not _SHA256.fullmatch(digest):
        raise InvalidRequestError("identity email_sha256 is not a sha256 hex digest (64 hex characters)")
    return digest


def _phone(value: Any, default_phone_region: str | None) -> str:
    import phonenumbers

    text = _text("phone", value)
    if not text:
        raise InvalidRequestError("identity phone is empty")
    region = None if text.startswith("+") else default_phone_region
    if region is None and not text.startswith("+"):
        raise InvalidRequestError(
            "identity phone has no country code; write it with +country code (E.164) "
            "or set dsr.default_phone_region"
        )
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidRequestError("identity phone is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidRequestError(
            "identity phone is not a valid phone number"
            + (f" (numbers without + are read in region {region})" if region else "")
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _identifier(identity_type: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidRequestError(
            f"identity {identity_type} must be a string or an integer, found {_type_name(value)}"
        )
    text = _trim(value)
    if not text:
        raise InvalidRequestError(f"identity {identity_type} is empty")
    if len(text) > _MAX_ID:
        raise InvalidRequestError(f"identity {identity_type} is longer than {_MAX_ID} characters")
    if _has_control(text):
        raise InvalidRequestError(f"identity {identity_type} contains control characters")
    return text


def normalise_identities(raw: Mapping[str, Any], default_phone_region: str | None) -> dict[str, str]:
    """Validates and normalises a request's identities.

    A ``null`` value counts as absent. An ``email`` adds its ``email_sha256`` (hex
    sha256 of the UTF-8 bytes of the normalised email).

    Args:
        raw: Identity type -> value, as the request gives them.
        default_phone_region: ISO region (``US``) of phone numbers written without
            ``+``; ``None`` rejects such numbers.

    Returns:
        Identity type -> normalised value, in the order of :data:`IDENTITY_TYPES`.

    Raises:
        InvalidRequestError: ``raw`` is not a mapping, names an unknown identity
            type, holds no identity, or one value is invalid. The message never
            contains an identity's value.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequestError(
            f"identities must be an object of identity type -> value, found {_type_name(raw)}"
        )
    unknown = sorted(str(k) for k in raw if k not in IDENTITY_TYPES)
    if unknown:
        names = ", ".join(repr(k[:64]) for k in unknown)
        raise InvalidRequestError(
            f"unknown identity type(s) {names}; expected {', '.join(IDENTITY_TYPES)}"
        )
    given = {k: v for k, v in raw.items() if v is not None}
    out: dict[str, str] = {}
    if "email" in given:
        out["email"] = _email(given["email"])
    if "email_sha256" in given:
        out["email_sha256"] = _email_sha256(given["email_sha256"])
    if "email" in out:
        derived = hashlib.sha256(out["email"].encode("utf-8")).hexdigest()
        if out.setdefault("email_sha256", derived) != derived:
            raise InvalidRequestError(
                "identities email and email_sha256 disagree: email_sha256 is not the sha256 of the "
                "trimmed, lower-cased email"
            )
    if "phone" in given:
        out["phone"] = _phone(given["phone"], default_phone_region)
    for identity_type in ("user_id", "device_id"):
        if identity_type in given:
            out[identity_type] = _identifier(identity_type, given[identity_type])
    if not out:
        raise InvalidRequestError(f"request has no identity; give at least one of {', '.join(IDENTITY_TYPES)}")
    return {t: out[t] for t in IDENTITY_TYPES if t in out}


def _required_id(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str], limit: int) -> str:
    value = raw.get(key)
    if value is None:
        raise InvalidRequestError(f"{key} is required")
    if not isinstance(value, str):
        raise InvalidRequestError(f"{key} must be a string, found {_type_name(value)}")
    value = _trim(value)
    if not value:
        raise InvalidRequestError(f"{key} is empty")
    if not pattern.fullmatch(value):
        raise InvalidRequestError(
            f"{key} is malformed: expected 1 to {limit} letters, digits or . _ : @ -, "
            "starting with a letter or digit"
        )
    return value


def _kind_and_mode(raw: Mapping[str, Any]) -> tuple[str, str]:
    kind = raw.get("kind")
    if kind is None:
        raise InvalidRequestError(f"kind is required; expected one of {', '.join(REQUEST_KINDS)}")
    if kind not in REQUEST_KINDS:
        found = f"{kind!r:.40}" if isinstance(kind, str) else _type_name(kind)
        raise InvalidRequestError(f"unknown kind {found}; expected one of {', '.join(REQUEST_KINDS)}")
    modes = MODES_BY_KIND[kind]
    mode = raw.get("mode")
    if mode is None:
        return kind, modes[0]
    if mode not in modes:
        found = f"{mode!r:.40}" if isinstance(mode, str) else _type_name(mode)
        raise InvalidRequestError(f"unknown mode {found} for kind {kind}; expected one of {', '.join(modes)}")
    return kind, mode


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _received_at(raw: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    value = raw.get("received_at")
    if value is None:
        return now
    if isinstance(value, dt.datetime):
        received = _naive_utc(value)
    elif isinstance(value, str):
        try:
            received = _naive_utc(dt.datetime.fromisoformat(value.strip()))
        except ValueError:
            raise InvalidRequestError(
                "received_at is not an ISO-8601 timestamp (e.g. 2026-11-26T10:00:00Z)"
            ) from None
    else:
        raise InvalidRequestError(f"received_at must be an ISO-8601 string, found {_type_name(value)}")
    if received > now + _MAX_FUTURE:
        raise InvalidRequestError("received_at is more than 1 day in the future")
    if received < _EARLIEST:
        raise InvalidRequestError(f"received_at is before {_EARLIEST.year}")
    return received


def validate_request(raw: Mapping[str, Any], settings: DsrSettings, now: dt.datetime) -> ValidRequest:
    """Validates one data-subject request.

    Args:
        raw: The request: ``request_id``, ``org_id``, ``kind``, optional ``mode``,
            ``identities``, optional ``received_at`` (ISO-8601 with ``Z`` or an
            offset; naive means UTC). A ``null`` value counts as absent.
        settings: The ``dsr`` settings (due days, default phone region).
        now: Current time (naive UTC): the default ``received_at`` and the bound
            that ``received_at`` may exceed by at most one day.

    Returns:
        The request with normalised identities and its due date.

    Raises:
        InvalidRequestError: The request is invalid; the message is the reason and
            never contains an identity's value.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequestError(f"request must be a JSON object, found {_type_name(raw)}")
    if UNREADABLE_KEY in raw:
        raise InvalidRequestError(str(raw[UNREADABLE_KEY]))
    unknown = sorted(str(k) for k in raw if k not in REQUEST_FIELDS)
    if unknown:
        names = ", ".join(repr(k[:64]) for k in unknown)
        raise InvalidRequestError(f"unknown field(s) {names}; expected {', '.join(REQUEST_FIELDS)}")
    request_id = _required_id(raw, "request_id", _REQUEST_ID, 128)
    org_id = _required_id(raw, "org_id", _ORG_ID, 256)
    kind, mode = _kind_and_mode(raw)
    if raw.get("identities") is None:
        raise InvalidRequestError(f"identities is required; give at least one of {', '.join(IDENTITY_TYPES)}")
    identities = normalise_identities(raw["identities"], settings.default_phone_region)
    now = _naive_utc(now)
    received_at = _received_at(raw, now)
    return ValidRequest(
        request_id=request_id,
        org_id=org_id,
        kind=kind,
        mode=mode,
        identities=identities,
        received_at=received_at,
        due_at=received_at + dt.timedelta(days=settings.due_days),
    )
