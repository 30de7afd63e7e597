"""Classification of columns as personal data, on a bounded sample.

Every leaf of a sample (struct fields, map keys, elements of arrays of structs,
and JSON documents held in string columns) is named by its dot path
(``user.contact.email``) and classified from its name and its values:

* the name is split into tokens (``emailAddress`` -> ``email``, ``address``) and
  matched against each category's vocabulary, with vocabularies that argue
  against a category (an ``order_number`` is not a phone, an ``app_version`` not
  an IP address);
* the values are checked by detectors (email syntax, E.164 and national phone
  formats, IPv4/IPv6, Luhn-checked card numbers, hex digests, dates...), giving the
  share of sampled values that fit.

The confidence combines both; the best category above ``min_confidence`` wins.
Overrides from ``cfg.section("catalog")["overrides"]`` always win::

    catalog:
      sample_rows: 200
      min_confidence: 0.5
      overrides:
        - {asset: "*/crm/*", column: notes.contact, category: email}
        - {asset: "public.orders", column: order_phone, exclude: true}

Only the sample is read: the cost does not depend on the size of the asset.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from ketch_spark.config import KetchConfig
from ketch_spark.errors import ConfigError

__all__ = [
    "CATEGORIES",
    "IDENTITY_TYPES",
    "ColumnClass",
    "Override",
    "ClassifierSettings",
    "identity_type_of",
    "name_tokens",
    "leaf_values",
    "classify_column",
    "classify_rows",
    "classify_sample",
    "classify_collected",
    "sample_email_hashes",
    "singular",
    "apply_overrides",
    "luhn_valid",
]

#: Every category the classifier can assign.
CATEGORIES = (
    "email",
    "email_sha256",
    "email_md5",
    "phone",
    "ip_address",
    "user_id",
    "device_id",
    "person_name",
    "postal_address",
    "date_of_birth",
    "credit_card",
    "gender",
    "age_range",
    "income_band",
)
#: Category -> identity type usable to find a data subject (DSR identities).
IDENTITY_TYPES: Mapping[str, str] = {
    "email": "email",
    "email_sha256": "email_sha256",
    "user_id": "user_id",
    "device_id": "device_id",
    "phone": "phone",
}
_MAX_VALUES_PER_COLUMN = 1000
_MIN_VALUES_TO_CONTRADICT = 3


def identity_type_of(category: str | None) -> str | None:
    """The DSR identity type a category provides (``None`` when it is not an identity)."""
    return IDENTITY_TYPES.get(category or "")


@dataclass(frozen=True)
class ColumnClass:
    """Classification of one (possibly nested) column.

    Attributes:
        column: Dot path of the column (``user.contact.email``).
        data_type: Spark type (``string``), or ``json:<type>`` inside a JSON string.
        category: One of :data:`CATEGORIES`, or ``None`` when not personal.
        identity_type: The identity type the category provides, if any.
        confidence: 0..1.
        method: ``name``, ``value``, ``name+value`` or ``override``; ``None`` if unclassified.
    """

    column: str
    data_type: str
    category: str | None
    identity_type: str | None
    confidence: float
    method: str | None


@dataclass(frozen=True)
class Override:
    """A configured classification that wins over detection.

    Attributes:
        asset: Glob matched against an asset's location, name or id.
        column: Glob matched against column paths.
        category: Category to assign (ignored when ``exclude``).
        exclude: Declare the column not personal.
    """

    asset: str
    column: str
    category: str | None = None
    exclude: bool = False

    def matches_asset(self, location: str, name: str | None, asset_id: str | None = None) -> bool:
        """Whether this override applies to the asset."""
        candidates = [c for c in (location, name, asset_id) if c]
        return any(fnmatch.fnmatchcase(c, self.asset) for c in candidates)


@dataclass(frozen=True)
class ClassifierSettings:
    """Sampling and decision settings of the classifier.

    Attributes:
        sample_rows: Rows read per asset.
        min_confidence: Lowest confidence that assigns a category.
        overrides: Configured classifications.
    """

    sample_rows: int = 200
    min_confidence: float = 0.5
    overrides: tuple[Override, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, cfg: KetchConfig) -> ClassifierSettings:
        """Reads ``cfg.section("catalog")``.

        Raises:
            ConfigError: An override is malformed or names an unknown category.
        """
        section = cfg.section("catalog")
        where = f"{cfg.source or '<config>'}: catalog"
        sample_rows = section.get("sample_rows", 200)
        if not isinstance(sample_rows, int) or isinstance(sample_rows, bool) or sample_rows <= 0:
            raise ConfigError(f"{where}.sample_rows: expected a positive integer, found {sample_rows!r}")
        min_confidence = section.get("min_confidence", 0.5)
        if not isinstance(min_confidence, (int, float)) or not 0 <= float(min_confidence) <= 1:
            raise ConfigError(f"{where}.min_confidence: expected a number in [0, 1], found {min_confidence!r}")
        overrides = section.get("overrides") or []
        if not isinstance(overrides, list):
            raise ConfigError(f"{where}.overrides: expected a list of {{asset, column, category}}, found {overrides!r}")
        return cls(sample_rows, float(min_confidence), tuple(_override(o, f"{where}.overrides") for o in overrides))


def _override(raw: Any, where: str) -> Override:
    if not isinstance(raw, Mapping) or "column" not in raw:
        raise ConfigError(f"{where}: each entry needs 'column' (and 'asset'), found {raw!r}")
    exclude = bool(raw.get("exclude", False))
    category = raw.get("category")
    if not exclude and category not in CATEGORIES:
        raise ConfigError(
            f"{where}: category must be one of {', '.join(CATEGORIES)} (or exclude: true), found {category!r}"
        )
    return Override(asset=str(raw.get("asset", "*")), column=str(raw["column"]), category=category, exclude=exclude)


# -- names ----------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_COMPOUNDS = {
    "emailaddress": ("email", "address"),
    "firstname": ("first", "name"),
    "lastname": ("last", "name"),
    "fullname": ("full", "name"),
    "givenname": ("given", "name"),
    "familyname": ("family", "name"),
    "nickname": ("nick", "name"),
    "fname": ("first", "name"),
    "lname": ("last", "name"),
    "mname": ("middle", "name"),
    "phonenumber": ("phone", "number"),
    "userid": ("user", "id"),
    "username": ("user", "name"),
    "customerid": ("customer", "id"),
    "deviceid": ("device", "id"),
    "ipaddress": ("ip", "address"),
    "dateofbirth": ("date", "of", "birth"),
    "birthdate": ("birth", "date"),
    "zipcode": ("zip", "code"),
    "postcode": ("post", "code"),
    "postalcode": ("postal", "code"),
    "creditcard": ("credit", "card"),
    "cardnumber": ("card", "number"),
    "agerange": ("age", "range"),
    "agegroup": ("age", "group"),
    "hashedemail": ("hashed", "email"),
    "emailhash": ("email", "hash"),
    "addr": ("address",),
    "addressline": ("address", "line"),
}
#: Plural forms that do not lose a trailing "s".
_IRREGULAR_PLURALS = {"people": "person", "addresses": "address", "identities": "identity", "aliases": "alias",
                      "statuses": "status", "cookies": "cookie"}


def name_tokens(name: str) -> tuple[str, ...]:
    """Lower-case tokens of a column name: ``billingAddress_line1`` -> (billing, address, line, 1).

    A compound word is split into its parts and kept whole after them
    (``postcode`` -> post, code, postcode), so a vocabulary may hold either.
    """
    tokens: list[str] = []
    for raw in re.split(r"[^A-Za-z0-9]+", _CAMEL.sub("_", name)):
        for part in re.findall(r"[a-z]+|\d+", raw.lower()):
            whole = _COMPOUNDS.get(part)
            if whole is None:
                tokens.append(part)
            elif len(whole) == 1:
                tokens.append(whole[0])
            else:
                tokens.extend((*whole, part))
    return tuple(tokens)


def singular(token: str) -> str:
    """``customers`` -> ``customer``, ``people`` -> ``person`` (English plurals of column and table names)."""
    if token in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[token]
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


_EMAIL_WORDS = {"email", "mail", "emails"}
_HASH_WORDS = {"sha256", "sha", "hash", "hashed", "md5", "digest", "hem"}
_PHONE_WORDS = {"phone", "mobile", "tel", "telephone", "msisdn", "cell", "cellphone", "fax", "phones"}
_IP_WORDS = {"ip", "ipv4", "ipv6", "ips", "forwarded"}
_USER_SUBJECTS = {"user", "customer", "member", "account", "subscriber", "person", "profile", "player", "patient",
                  "shopper", "buyer", "contact", "external", "crm", "lead", "employee", "owner", "manager",
                  "distinct", "identity", "login"}
_ID_WORDS = {"id", "uid", "guid", "uuid", "key", "ref", "reference", "number", "no", "identifier"}
#: Last tokens of a name that make it the id of what the rest of the name or its context describes.
_ID_HEADS = {"id", "uid", "guid", "uuid", "identifier", "pk"}
_USER_NAMES = {"uid", "userid", "username", "login", "customer", "user"}
_DEVICE_WORDS = {"device", "idfa", "gaid", "aaid", "adid", "idfv", "maid", "madid", "android", "advertising",
                 "cookie", "udid", "anonymous", "anon", "visitor", "pseudo", "fingerprint", "browser", "ad"}
#: Device, advertising, cookie and click ids of ad platforms, each a name on its own.
_DEVICE_STRONG = {"idfa", "gaid", "aaid", "adid", "idfv", "maid", "madid", "udid", "gclid", "gbraid", "wbraid",
                  "dclid", "fbclid", "msclkid", "ttclid", "yclid", "twclid", "fbp", "fbc", "ttp", "cookie"}
#: Mobile advertising and vendor ids, UUIDs by definition.
_AD_IDS = {"idfa", "idfv", "gaid", "aaid", "adid", "madid"}
#: Words naming the product or system an id belongs to: ``<vendor>_id`` in a person's record is that person's id.
#: Person-centric tools: their ``<tool>_id`` is a person's id wherever it appears.
_PERSON_TOOLS = {"amplitude", "braze", "mixpanel", "heap", "posthog", "intercom", "klaviyo", "iterable", "onesignal",
                 "appsflyer", "customerio", "pendo", "fullstory", "kissmetrics", "clevertap", "moengage", "leanplum"}
_RECORD_QUALIFIERS = {"object", "record", "entity", "internal", "external", "global", "public", "primary", "system",
                      "api", "graphql", "admin", "gid", "web", "unique", "vendor", "platform", "amplitude", "braze",
                      "mixpanel", "segment", "intercom", "hubspot", "hs", "klaviyo", "iterable", "onesignal",
                      "appsflyer", "adjust", "firebase", "stripe", "shopify", "salesforce", "sfdc", "zendesk",
                      "okta", "auth", "cognito", "sendgrid", "mailchimp", "marketo", "heap", "posthog", "pendo",
                      "paypal", "adyen", "braintree", "multipass", "crm", "erp", "legacy", "source", "origin"}
_NAME_QUALIFIERS = {"first", "last", "full", "given", "family", "middle", "maiden", "sur", "display", "legal",
                    "contact", "customer", "holder", "recipient", "person", "real", "nick"}
_NAME_WORDS = {"surname", "forename", "firstname", "lastname", "fullname", "nickname", "fname", "lname"}
_NOT_PERSON_NAME = {"file", "product", "company", "host", "hostname", "table", "column", "brand", "item", "campaign",
                    "app", "event", "domain", "field", "category", "city", "country", "street", "store", "shop",
                    "merchant", "page", "bucket", "key", "type", "class", "queue", "topic", "device", "browser",
                    "list", "tag", "segment", "variant", "vendor", "organization", "org", "plan", "team", "group",
                    "template", "property", "source", "medium", "region", "state", "province", "alias", "user"}
#: Structs and tables that describe a person: a bare ``name`` or ``id`` in them is the person's.
_PERSON_CONTEXT = {"user", "customer", "contact", "person", "member", "owner", "recipient", "billing", "shipping",
                   "profile", "patient", "subscriber", "buyer", "holder", "author", "sender", "employee", "lead",
                   "trait", "shopper", "identity", "address"}
_SUBJECT_CONTEXT = {"user", "customer", "contact", "person", "member", "profile", "patient", "subscriber", "buyer",
                    "shopper", "lead", "employee", "trait", "identity"}
_DEVICE_CONTEXT = {"device", "browser", "cookie"}
#: Records of a person at a company in a CRM: their ``account`` is the company.
_B2B_PERSON_CONTEXT = {"contact", "lead"}
#: Wrappers that say nothing of what they hold (CDC row images, API envelopes): context is looked for above them.
_TRANSPARENT = {"before", "after", "payload", "data", "record", "object", "property", "attribute", "field", "doc",
                "document", "value", "item", "row", "new", "old", "image", "newimage", "oldimage", "dynamodb",
                "body", "detail", "result", "node", "edge", "additional", "request", "notification"}
_ADDRESS_WORDS = {"address", "street", "addressline", "residence", "line", "house"}
_ADDRESS_STRONG = {"address", "street", "addressline", "residence"}
_ADDRESS_CONTEXT = {"address", "shipping", "billing", "mailing", "residence", "delivery", "home"}
_POSTCODE_WORDS = {"zip", "postcode", "postal", "zipcode", "postalcode"}
#: Names that are never a postal address (another kind of address, a part that is not personal, an id).
_NOT_ADDRESS = {"email", "mail", "ip", "mac", "wallet", "web", "url", "remote", "server", "host", "bitcoin", "city",
                "state", "country", "region", "type", "id"}
#: Names that are not an address unless they name a line of one (``houseNumberOrName``, ``address_line_phone``).
_NOT_ADDRESS_BUT_A_LINE = {"memory", "province", "county", "latitude", "longitude", "lat", "lng", "validated",
                           "verified", "company", "phone", "name", "success", "status"}
_DOB_WORDS = {"dob", "birth", "birthday", "birthdate", "born"}
_CARD_WORDS = {"card", "cc", "pan", "ccnum", "cardnumber", "creditcard"}
_GENDER_WORDS = {"gender", "sex", "pronoun", "pronouns"}
_AGE_WORDS = {"age", "ageband", "agerange", "agegroup"}
_INCOME_WORDS = {"income", "salary", "earnings", "hhi", "wage", "wages", "revenue_band"}
#: Last tokens that make a name an attribute of an identity, not the identity (``phone_verified``, ``email_id``).
_ATTRIBUTE_TAIL = {"verified", "verification", "confirmed", "valid", "validated", "validity", "enabled", "disabled",
                   "status", "type", "kind", "count", "country", "city", "region", "provider", "domain", "ext",
                   "extension", "prefix", "flag", "consent", "opt", "optin", "opted", "bounce", "bounced",
                   "preference", "format", "template", "subject", "sent", "open", "opened", "click", "clicked",
                   "length", "quality", "score", "carrier", "id", "uuid", "key", "at",
                   "ts", "changed", "updated", "created", "on", "is", "has", "permission", "reason", "code", "hash",
                   "md5", "sha256", "sha", "hashed", "digest", "source"}
#: Names that argue against value-only detection of phones, IPs and cards.
_NOT_CONTACT = {"order", "invoice", "sku", "tracking", "transaction", "txn", "shipment", "ticket", "serial", "batch",
                "product", "version", "ver", "build", "isbn", "ean", "upc", "barcode", "item", "parcel", "reference",
                "ref", "confirmation", "booking", "receipt", "account", "routing", "iban", "case", "session",
                "request", "trace", "event", "checksum", "sequence", "seq", "build"}
#: Names of the server side of a connection: their IP addresses are not a person's.
_SERVER_SIDE = {"target", "backend", "upstream", "server", "host", "destination", "dst", "dest", "local", "proxy",
                "node", "pod", "container", "instance", "edge", "origin"}


def _context_tokens(text: str) -> frozenset[str]:
    return frozenset(singular(t) for t in name_tokens(text))


@dataclass(frozen=True)
class _Name:
    """A column's name and what its place says: the enclosing structs' and the asset's names.

    Attributes:
        seq: Tokens of the leaf name, in order.
        tokens: The same, as a set (singular forms added).
        parent: Tokens of every enclosing struct.
        context: Tokens of the nearest enclosing struct that is not a mere wrapper
            (``after`` of a CDC row, ``properties``...), else of the asset's name.
        from_asset: Whether ``context`` comes from the asset's name.
        leaf: The leaf name, lower case.
        asset: Tokens of the asset's name (its last two segments), whatever ``context`` is.
    """

    seq: tuple[str, ...]
    tokens: frozenset[str]
    parent: frozenset[str]
    context: frozenset[str]
    from_asset: bool
    leaf: str
    asset: frozenset[str] = frozenset()

    @classmethod
    def of(cls, path: str, asset_name: str | None = None) -> _Name:
        parts = path.split(".")
        seq = name_tokens(parts[-1])
        parent = frozenset(t for part in parts[:-1] for t in _context_tokens(part))
        context: frozenset[str] = frozenset()
        for part in reversed(parts[:-1]):
            tokens = _context_tokens(part)
            if tokens and not tokens <= _TRANSPARENT:
                context = tokens
                break
        from_asset = not context
        segments = [s for s in re.split(r"[/.:]", asset_name) if s][-2:] if asset_name else []
        asset = frozenset(t for s in segments for t in _context_tokens(s))
        if from_asset:
            context = asset
        return cls(seq, frozenset(seq) | frozenset(singular(t) for t in seq), parent, context, from_asset,
                   parts[-1].lower(), asset)

    def has(self, words: set[str]) -> bool:
        return bool(self.tokens & words)

    def names(self, words: set[str]) -> bool:
        """Whether the name is of a ``words`` thing itself: no attribute word (``verified``...) after it."""
        last = max((i for i, t in enumerate(self.seq) if t in words or singular(t) in words), default=None)
        return last is not None and not any(t in _ATTRIBUTE_TAIL for t in self.seq[last + 1:])

    @property
    def head(self) -> str:
        return self.seq[-1] if self.seq else ""

    def in_context(self, words: set[str]) -> bool:
        return bool(self.context & words)


# -- value detectors --------------------------------------------------------------------

_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-']+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_PHONE_FORMATTED = re.compile(r"^(\+\d{1,3}[\s.\-]?)?(\(\d{1,4}\)|\d{1,4})([\s.\-]\d{2,4}){1,4}$")
_PHONE_NATIONAL_DIGITS = re.compile(r"^0\d{8,11}$")
_DIGITS = re.compile(r"^\d{7,15}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
#: A Cookie request header: ``name=value`` pairs separated by ``;``.
_COOKIE_HEADER = re.compile(r"^[^=;\s]+=[^;]*(;\s*[^=;\s]+=[^;]*)*;?$")
_ID_LIKE = re.compile(r"^[A-Za-z0-9$_][A-Za-z0-9_.:@|/+=\-]{0,255}$")
#: Ids whose value says they are a person's: ``gid://shop/Customer/1``, ``auth0|5f7c...``, ``google-oauth2|1017...``.
_PERSON_ID_VALUE = re.compile(
    r"^(gid://[^/]+/(customer|user|contact|member|person|profile|lead|subscriber)/\S+"
    r"|(auth0|google-oauth2|facebook|github|apple|windowslive|linkedin|twitter|samlp|waad|adfs|oidc|email|sms"
    r"|okta|cognito)\|\S+)$", re.IGNORECASE)
_STREET = re.compile(
    r"^\d+[A-Za-z]?,? [A-Za-zÀ-ÿ0-9 .'\-]+ (street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|court|ct|"
    r"place|pl|terrace|close|square|sq|parkway|pkwy|highway|hwy|crescent|row)\b\.?",
    re.IGNORECASE,
)
_STREET_EU = re.compile(r"^[A-Za-zÀ-ÿ .'\-]+(straße|strasse|weg|gasse|platz|allee|laan|straat|rue|via|calle)\b", re.I)
_STREET_NUMBER_FIRST = re.compile(  # French, Spanish, Italian, Portuguese: "12 rue de la Paix", "Calle Mayor 5"
    r"^\d+[A-Za-z]?(,| bis| ter)? (rue|avenue|av|boulevard|bd|place|chemin|allée|allee|impasse|quai|route|cours|via|"
    r"viale|piazza|calle|avenida|rua|travessa|carrer|plaza|paseo)\b", re.IGNORECASE)
_STREET_NAME_FIRST = re.compile(  # German, Dutch, Nordic, Spanish: "Hauptstraße 5", "Calle Mayor 12, 3º"
    r"^[^\W\d_][\w .'\-]*(straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|laan|straat|gracht|plein|"
    r"vej|gatan|gata|veien|calle|avenida|rua|via)\b\.? ?\d+", re.IGNORECASE)
_UNIT_PREFIX = re.compile(r"^(flat|apt|apartment|suite|ste|unit|floor|fl|room|building|bldg|c/o|po box|p\.o\. box|"
                          r"appartement|app|étage|etage|bâtiment|wohnung|whg|piso|interno|dept|department)\b",
                          re.IGNORECASE)
_POSTCODE = re.compile(r"^(\d{5}(-\d{4})?|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|\d{4} ?[A-Z]{2}|[A-Z]\d[A-Z] ?\d[A-Z]\d)$",
                       re.IGNORECASE)
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d")
_GENDERS = {"m", "f", "male", "female", "man", "woman", "non-binary", "nonbinary", "non_binary", "other", "x", "u",
            "unknown", "undisclosed", "prefer not to say", "prefer_not_to_say", "diverse", "nb", "o", "n", "p", "d",
            "unspecified", "not specified", "declined", "she/her", "he/him", "they/them", "she/they", "he/they",
            "ze/zir", "any"}
_GENDER_WORDS_ONLY = {"male", "female", "man", "woman", "non-binary", "nonbinary", "diverse"}
_AGE_RANGE = re.compile(r"^(\d{1,3}\s?(-|–|to)\s?\d{1,3}|\d{1,3}\+|<\s?\d{1,3}|under \d{1,3}|over \d{1,3})$", re.I)
_INCOME_BAND = re.compile(
    r"^(<|>|under |over )?\s?[$€£]?\d{1,3}([,.]?\d{3})*\s?[kK]?\s?((-|–|to)\s?[$€£]?\d{1,3}([,.]?\d{3})*\s?[kK]?|\+)?$"
)
_INCOME_HINT = re.compile(r"[kK$€£+<>]|\d{2,3},\d{3}")
_FIRST_NAMES = frozenset(
    "james mary john patricia robert jennifer michael linda william elizabeth david barbara richard susan joseph "
    "jessica thomas sarah charles karen daniel nancy matthew lisa anthony betty mark margaret paul sandra steven "
    "ashley andrew emily joshua donna kevin michelle brian carol george amanda edward melissa ronald deborah "
    "anna emma olivia sophia mia lucas noah liam leon paul marie lea laura julia hannah lena sophie jan lukas "
    "pierre jean louis camille chloe manon hugo arthur jules giulia marco luca sofia alessandro carlos maria jose "
    "juan ana lucia pedro miguel ahmed fatima mohammed ali yuki hiro chen wei li priya raj amit anita".split()
)


def _is_email(v: str) -> bool:
    return bool(_EMAIL.match(v))


def _strip_phone(v: str) -> str:
    return re.sub(r"[\s.\-()]", "", v)


def _is_phone_formatted(v: str) -> bool:
    compact = _strip_phone(v)
    if not re.fullmatch(r"\+?\d{7,15}", compact):
        return False
    if _E164.match(compact) and v.lstrip().startswith("+"):
        return _possible_international(compact)
    if _PHONE_FORMATTED.match(v) and 9 <= len(compact.lstrip("+")) <= 13:
        return True
    return bool(_PHONE_NATIONAL_DIGITS.match(v))


def _possible_international(number: str) -> bool:
    """Whether ``+<digits>`` has a country code and a length some numbering plan allows (libphonenumber)."""
    import phonenumbers

    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def _is_phone_loose(v: str) -> bool:
    return _is_phone_formatted(v) or bool(_DIGITS.match(_strip_phone(v)))


def _is_ip(v: str) -> bool:
    """An IPv4/IPv6 address, with or without a port (``203.0.113.5:443``, ``[2001:db8::1]:443``), or a
    comma-separated list of them (``X-Forwarded-For``)."""
    return all(_is_one_ip(part.strip()) for part in v.split(",")) if "," in v else _is_one_ip(v)


def _is_one_ip(v: str) -> bool:
    candidates = [v]
    if v.startswith("[") and "]" in v:
        candidates.append(v[1:v.index("]")])
    elif v.count(":") == 1:
        candidates.append(v.split(":", 1)[0])
    for candidate in candidates:
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            continue
        return True
    return False


def luhn_valid(number: str) -> bool:
    """Whether a digit string passes the Luhn check."""
    if not number.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _is_card(v: str) -> bool:
    digits = re.sub(r"[\s\-]", "", v)
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    known_prefix = (
        digits[0] == "4"
        or digits[:2] in {"34", "37", "51", "52", "53", "54", "55", "36", "38", "65", "35"}
        or digits[:4] == "6011"
        or 2221 <= int(digits[:4]) <= 2720
    )
    return known_prefix and luhn_valid(digits)


def _as_date(v: Any) -> dt.date | None:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    text = str(v).strip()[:10]
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _is_birth_date(v: Any) -> bool:
    date = _as_date(v)
    today = dt.date.today()
    return date is not None and 1900 <= date.year <= today.year - 5


_EPOCH_DAYS_1900 = -25567
_MONTH_DAY = re.compile(r"^(0?[1-9]|1[0-2])[/\-.](0?[1-9]|[12]\d|3[01])$|^(0?[1-9]|[12]\d|3[01])[/\-.](0?[1-9]|1[0-2])$")


def _is_birth_value(v: Any) -> bool:
    """A birth date, as a named birth column may hold it: a full date, a month and day without the year
    (``07/19``, as mailing tools keep birthdays), or days since 1970 (a CDC image of a DATE column)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return _EPOCH_DAYS_1900 <= v <= (dt.date.today() - dt.date(1970, 1, 1)).days - 5 * 365
    return _is_birth_date(v) or bool(_MONTH_DAY.match(str(v).strip()))


_NAME_PARTICLES = {"van", "de", "von", "der", "den", "da", "di", "le", "la", "del", "dos", "das", "du", "bin", "ibn",
                   "al", "el", "ten", "ter", "y", "e", "mac", "ní", "ni", "nic", "ó", "o", "ua", "bint", "af", "zu"}


def _is_person_name(v: str) -> bool:
    """One to five capitalised words of letters (any script), apostrophes, hyphens and initials; no digits."""
    if len(v) > 60 or "@" in v or any(ch.isdigit() for ch in v):
        return False
    words = v.replace(",", " ").split()
    return 1 <= len(words) <= 5 and all(_is_name_word(w) for w in words) and \
        not all(w.lower() in _NAME_PARTICLES for w in words)


def _is_name_word(word: str) -> bool:
    if word.lower() in _NAME_PARTICLES:
        return True
    if not all(ch.isalpha() or ch in "'’-." for ch in word) or not word[0].isalpha():
        return False
    first = word[0]
    return first.isupper() or not (first.islower() or first.isupper())  # uncased scripts (CJK...) have no capitals


def _starts_with_first_name(v: str) -> bool:
    first = v.split(" ", 1)[0].lower()
    return first in _FIRST_NAMES


_UNIT_LEAD = re.compile(r"^(flat|apt|apartment|suite|ste|unit|floor|fl|room|building|bldg|appartement|app|wohnung|"
                        r"whg|piso|dept)\b\.?\s*[\w\-/º°]+\s*,?\s*", re.IGNORECASE)
_STREET_WORD_FIRST = re.compile(  # Spanish, Portuguese, Italian, Catalan: "Calle Mayor 12", "Rua Augusta, 274"
    r"^(calle|c/|avenida|avda\.?|rua|via|viale|carrer|plaza|paseo|camino|travessa|largo|piazza)\s[^\d,]+,?\s?\d+",
    re.IGNORECASE)
_STREET_PATTERNS = (_STREET, _STREET_EU, _STREET_NUMBER_FIRST, _STREET_NAME_FIRST, _STREET_WORD_FIRST)


def _is_address(v: str) -> bool:
    """A street line in US/UK, French/Spanish/Italian or German/Dutch order, after an optional unit."""
    rest = _UNIT_LEAD.sub("", v, count=1)
    return any(p.match(candidate) for candidate in {v, rest} for p in _STREET_PATTERNS)


def _is_address_part(v: str) -> bool:
    """A line of an address: a street line, a unit (``Apt 4B``, ``Flat 2``), a house name or number."""
    if len(v) > 100 or "@" in v or "://" in v or not any(ch.isalpha() for ch in v):
        return bool(v.strip().isdigit()) and len(v.strip()) <= 6
    return _is_address(v) or bool(_UNIT_PREFIX.match(v)) or any(ch.isdigit() for ch in v) or _is_person_name(v)


def _is_age(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return 0 <= v <= 120
    text = str(v).strip()
    return bool(_AGE_RANGE.match(text)) or (text.isdigit() and 0 <= int(text) <= 120)


def _is_income(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return 0 <= v <= 100_000_000
    return bool(_INCOME_BAND.match(str(v).strip()))


def _fraction(values: list[Any], check) -> float:
    if not values:
        return 0.0
    return sum(1 for v in values if check(v)) / len(values)


# -- decision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    category: str
    confidence: float
    method: str


def _combine(category: str, name_strength: float, value_share: float | None, values: int,
             value_only_ok: bool = True) -> _Candidate | None:
    """Confidence of ``category`` from the name strength (0..1) and the share of fitting values."""
    if value_share is not None and values > 0:
        if value_share >= 0.8 and (name_strength > 0 or value_only_ok):
            bonus = 0.05 if name_strength > 0 else 0.0
            method = "name+value" if name_strength > 0 else "value"
            return _Candidate(category, round(min(1.0, 0.75 + 0.2 * value_share + bonus), 3), method)
        if name_strength > 0 and value_share >= 0.4:
            return _Candidate(category, round(0.55 + 0.35 * value_share, 3), "name+value")
        if name_strength > 0 and values < _MIN_VALUES_TO_CONTRADICT and value_share > 0:
            return _Candidate(category, round(name_strength * 0.8, 3), "name")
        return None
    if name_strength > 0:
        return _Candidate(category, round(name_strength, 3), "name")
    return None


def _strings(values: list[Any]) -> list[str]:
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


_BOOLEAN_TEXT = {"true", "false"}
#: Values that stand for "no value" (the ``-`` of access logs): left out of every share.
_PLACEHOLDERS = {"-", "n/a", "null", "none", "nil", "(null)", "undefined"}


def _only_placeholders(values: list[Any]) -> bool:
    """Whether every one of enough sampled values is a placeholder (``-`` in every row of an access log)."""
    return len(values) >= _MIN_VALUES_TO_CONTRADICT and all(
        isinstance(v, str) and v.strip().lower() in _PLACEHOLDERS for v in values)


def _is_flag(scalars: list[Any]) -> bool:
    """Whether every value is a boolean (or its text): a flag is never personal data by itself."""
    return bool(scalars) and all(isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in _BOOLEAN_TEXT)
                                 for v in scalars)


def _with_context(candidate: _Candidate | None, used_context: bool) -> _Candidate | None:
    """``candidate`` as inferred from the enclosing struct's or the asset's name: capped below direct evidence."""
    if candidate is None or not used_context:
        return candidate
    return _Candidate(candidate.category, min(candidate.confidence, 0.9), f"context+{candidate.method}")


def _candidates(path: str, values: list[Any], asset_name: str | None = None,
                email_hashes: Mapping[str, str] | None = None) -> list[_Candidate]:
    name = _Name.of(path, asset_name)
    if _only_placeholders(values):
        return []  # a field the system did not log (cookie logging off): nothing of anyone's in it
    values = [v for v in values if not (isinstance(v, str) and v.strip().lower() in _PLACEHOLDERS)]
    strings = _strings(values)
    scalars = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
    if _is_flag(scalars):
        return []
    n_str, n_all = len(strings), len(scalars)
    share = (lambda check: _fraction(strings, check) if n_str else None)  # noqa: E731
    share_all = (lambda check: _fraction(scalars, check) if n_all else None)  # noqa: E731
    contact_ok = not name.has(_NOT_CONTACT)
    numeric = n_all > 0 and n_str == 0
    out: list[_Candidate | None] = []

    email_name = name.names(_EMAIL_WORDS)
    hash_name = name.has(_HASH_WORDS)
    email_share = share(_is_email) if not numeric else 0.0
    out.append(_combine("email", 0.7 if email_name and not hash_name and not numeric else 0.0, email_share, n_all))
    out.extend(_email_hash_candidates(name, strings, n_all, email_hashes or {}))
    phone_name = name.names(_PHONE_WORDS)
    phone_values = strings or [str(v) for v in scalars if isinstance(v, int) and not isinstance(v, bool)]
    phone_check = _is_phone_loose if phone_name else _is_phone_formatted
    out.append(_combine("phone", 0.7 if phone_name else 0.0,
                        _fraction(phone_values, phone_check) if phone_values else None, n_all,
                        value_only_ok=contact_ok))
    ip_name = name.names(_IP_WORDS) or {"remote", "addr"} <= name.tokens or {"client", "port"} <= name.tokens
    if not name.has(_SERVER_SIDE):  # the address of a server is nobody's personal data
        out.append(_combine("ip_address", 0.7 if ip_name else 0.0, share(_is_ip), n_all,
                            value_only_ok=contact_ok or ip_name))
    card_name = name.names(_CARD_WORDS) and not name.has({"type", "brand", "expiry", "exp", "cvv", "holder", "last4"})
    card_values = [str(v) for v in scalars if isinstance(v, (str, int)) and not isinstance(v, bool)]
    out.append(_combine("credit_card", 0.6 if card_name else 0.0,
                        _fraction(card_values, _is_card) if card_values else None, len(card_values)))
    if not email_share or email_share < 0.8:  # an email under an id's name is an email
        out.extend(_identifier_candidates(name, strings, scalars))
    out.append(_person_name_candidate(name, strings))
    out.append(_address_candidate(name, strings))
    if name.names(_DOB_WORDS):
        out.append(_combine("date_of_birth", 0.7, share_all(_is_birth_value), n_all))
    out.append(_gender_candidate(name, strings, scalars))
    age_name = name.names(_AGE_WORDS)
    age_values = share(lambda v: bool(_AGE_RANGE.match(v)))
    out.append(_combine("age_range", 0.7 if age_name else 0.0,
                        share_all(_is_age) if age_name else age_values, n_all, value_only_ok=contact_ok))
    income_name = name.names(_INCOME_WORDS) or {"revenue", "band"} <= name.tokens
    income_values = share(lambda v: bool(_INCOME_BAND.match(v)) and bool(_INCOME_HINT.search(v)))
    out.append(_combine("income_band", 0.7 if income_name else 0.0,
                        share_all(_is_income) if income_name else income_values, n_all,
                        value_only_ok=contact_ok and not age_values))
    return [c for c in out if c is not None]


def _email_hash_candidates(name: _Name, strings: list[str], n_all: int,
                           email_hashes: Mapping[str, str]) -> list[_Candidate | None]:
    """sha256/md5 of an email: by name (``hashed_email``, ``em`` of ad APIs), or because the values are the
    hashes of emails found elsewhere in the same sample (a member id that is the MD5 of the address)."""
    hex64 = _fraction(strings, lambda v: bool(_HEX64.match(v))) if strings else None
    hex32 = _fraction(strings, lambda v: bool(_HEX32.match(v))) if strings else None
    out: list[_Candidate | None] = []
    if email_hashes and strings and ((hex64 or 0) >= 0.8 or (hex32 or 0) >= 0.8):
        kinds = [email_hashes.get(v.lower()) for v in strings]
        for category in ("email_sha256", "email_md5"):
            matched = sum(1 for k in kinds if k == category) / len(strings)
            if matched >= 0.5:
                out.append(_Candidate(category, round(min(1.0, 0.8 + 0.2 * matched), 3), "value+cross-column"))
    coded = name.seq in (("em",), ("hem",))  # ad platforms' short names for the hashed email
    if not (name.has(_EMAIL_WORDS) or coded):
        return out
    strength = 0.6 if name.has({"sha256", "sha", "hash", "hashed", "hem"}) or coded else 0.0
    out.append(_combine("email_sha256", strength if "md5" not in name.tokens else 0.0, hex64, n_all))
    out.append(_combine("email_md5", 0.6 if "md5" in name.tokens else 0.0, hex32, n_all))
    return out


def _is_record_id(name: _Name) -> bool:
    """``id``, ``Id``, ``hs_object_id``, ``admin_graphql_api_id``, ``braze_id``: the id of the record it sits in."""
    return bool(name.seq) and name.head in _ID_HEADS and set(name.seq[:-1]) <= _RECORD_QUALIFIERS


def _is_subject_alias(name: _Name, head_is_id: bool) -> bool:
    """An alias of a person (``user_aliases.alias_name``, ``alias`` in a customer record): another id of that person.

    The alias must be named as one (``alias``, ``alias_name``, ``alias_id``; not ``alias_label``, which names the
    kind of alias) and sit in a struct or asset that describes a person.
    """
    if "alias" not in name.tokens or not head_is_id:
        return False
    # a struct of aliases alone (``aliases``) says whose they are no more than the alias does: the asset tells
    alias_structs = not name.from_asset and name.context <= {"alias", "aliases"}
    return bool(name.parent & _SUBJECT_CONTEXT) or name.in_context(_SUBJECT_CONTEXT) or \
        (alias_structs and bool(name.asset & _SUBJECT_CONTEXT))


def _is_address_id(name: _Name) -> bool:
    """``unique_email_id`` of a list's members: the id of a subscriber's address, so of the subscriber.

    The same name elsewhere (``email_id`` of a campaign's activity) is a message's id or a hash.
    """
    seq = name.seq
    return len(seq) >= 2 and seq[-1] in _ID_HEADS and seq[-2] in _EMAIL_WORDS and \
        set(seq[:-2]) <= _RECORD_QUALIFIERS and name.in_context(_SUBJECT_CONTEXT)


def _is_employer_account(name: _Name) -> bool:
    """``AccountId`` of a CRM contact or lead: the company the person works for (CRM accounts are companies).

    The account of a customer or user record stays that person's id.
    """
    return name.in_context(_B2B_PERSON_CONTEXT) and not name.in_context(_SUBJECT_CONTEXT - _B2B_PERSON_CONTEXT) \
        and not name.tokens & (_USER_SUBJECTS - {"account"})


def _identifier_candidates(name: _Name, strings: list[str], scalars: list[Any]) -> list[_Candidate | None]:
    tokens, seq = name.tokens, name.seq
    id_values = [str(v) for v in scalars if not isinstance(v, (bool, float))]
    if len(id_values) >= 5 and len(set(id_values)) == 1:
        return []  # a constant is nobody's id
    if tokens & _AD_IDS:  # IDFA, IDFV, GAID/AAID are UUIDs by their platforms' definition
        id_share = _fraction(id_values, lambda v: bool(_UUID.match(v))) if id_values else None
    else:  # a cookie's value is an id; a Cookie header's name=value pairs hold the browser's ids
        cookie = "cookie" in tokens
        id_share = _fraction(id_values, lambda v: (bool(_ID_LIKE.match(v)) and not _TIMESTAMP.match(v)) or
                             (cookie and bool(_COOKIE_HEADER.match(v)))) if id_values else None
    person_values = _fraction(id_values, lambda v: bool(_PERSON_ID_VALUE.match(v))) if id_values else 0.0
    head_is_id = name.head in _ID_WORDS or name.head in {"name", "login", "handle", "alias"} or \
        name.leaf in _USER_NAMES
    device_name = bool(tokens & _DEVICE_STRONG) or (bool(tokens & _DEVICE_WORDS) and head_is_id) or \
        (bool(tokens & {"domain", "network"}) and {"user", "id"} <= tokens) or \
        ("fingerprint" in tokens and bool(tokens & {"user", "browser", "device", "visitor"}))
    user_name = (bool(tokens & _USER_SUBJECTS) and head_is_id) or name.leaf in _USER_NAMES or seq == ("uid",) or \
        (len(seq) <= 2 and name.head == "user") or (len(seq) == 2 and seq[0] in _PERSON_TOOLS and name.head in _ID_HEADS)
    used_context = False
    if _is_record_id(name) and not device_name and not user_name:
        if name.in_context(_DEVICE_CONTEXT) or name.parent & _DEVICE_CONTEXT:
            device_name, used_context = True, True
        elif name.in_context(_SUBJECT_CONTEXT):
            user_name, used_context = True, True
    if name.in_context(_DEVICE_CONTEXT) and tokens & {"vendor", "advertising", "ad"} and head_is_id:
        device_name, used_context = True, True
    if (_is_subject_alias(name, head_is_id) or _is_address_id(name)) and not device_name and not user_name:
        user_name, used_context = True, True
    if tokens & {"account"} and (tokens & {"number", "no"} or _is_employer_account(name)):
        user_name = False
    out: list[_Candidate | None] = []
    if device_name:
        out.append(_with_context(_combine("device_id", 0.75, id_share, len(id_values)), used_context))
    elif user_name:
        strength = 0.75 if "name" not in tokens else 0.6
        out.append(_with_context(_combine("user_id", strength, id_share, len(id_values)), used_context))
    elif person_values >= 0.8:
        out.append(_Candidate("user_id", round(0.75 + 0.2 * person_values, 3), "value"))
    return out


def _person_name_candidate(name: _Name, strings: list[str]) -> _Candidate | None:
    tokens = name.tokens
    if tokens & (_NOT_PERSON_NAME | _HASH_WORDS):
        return None
    strong = bool(tokens & _NAME_WORDS) or ("name" in tokens and bool(tokens & _NAME_QUALIFIERS))
    bare = bool(name.seq) and set(name.seq) <= {"name", "display", "full"}
    contextual = bare and name.in_context(_PERSON_CONTEXT)
    share = _fraction(strings, _is_person_name) if strings else None
    if strong or contextual:
        candidate = _combine("person_name", 0.75 if strong else 0.65, share, len(strings))
        return _with_context(candidate, contextual and not strong)
    if "name" in tokens and share is not None and share >= 0.8 and _fraction(strings, _starts_with_first_name) >= 0.5:
        return _Candidate("person_name", 0.7, "name+value")
    if not tokens & _ID_WORDS and share is not None and share >= 0.9 \
            and _fraction(strings, _starts_with_first_name) >= 0.6 and all(" " in s for s in strings[:50]):
        return _Candidate("person_name", 0.65, "value")
    return None


def _address_candidate(name: _Name, strings: list[str]) -> _Candidate | None:
    tokens = name.tokens
    if tokens & _HASH_WORDS:
        return None
    if tokens & _POSTCODE_WORDS and not name.names({"type", "valid", "validated"}):
        return _combine("postal_address", 0.6, _fraction(strings, lambda v: bool(_POSTCODE.match(v))) if strings
                        else None, len(strings))
    in_address = name.in_context(_ADDRESS_CONTEXT) or bool(name.parent & _ADDRESS_CONTEXT)
    line_name = bool(tokens & _ADDRESS_STRONG) or (bool(tokens & {"line", "house"}) and in_address)
    if tokens & _NOT_ADDRESS or (tokens & _NOT_ADDRESS_BUT_A_LINE and not line_name):
        return None
    if line_name:
        candidate = _combine("postal_address", 0.7, _fraction(strings, _is_address_part) if strings else None,
                             len(strings))
        return _with_context(candidate, not tokens & _ADDRESS_STRONG)
    return _combine("postal_address", 0.0, _fraction(strings, _is_address) if strings else None, len(strings))


def _gender_candidate(name: _Name, strings: list[str], scalars: list[Any]) -> _Candidate | None:
    lowered = [s.lower() for s in strings]
    gender_name = name.names(_GENDER_WORDS)
    share = _fraction(lowered, lambda v: v in _GENDERS) if lowered else None
    if gender_name:
        return _combine("gender", 0.7, share, len(lowered))
    words = set(lowered)
    if share is not None and share >= 0.95 and len(words & _GENDER_WORDS_ONLY) >= 2 and len(lowered) >= 5:
        return _Candidate("gender", 0.75, "value")
    return None


def classify_column(path: str, values: Iterable[Any], data_type: str = "string",
                    min_confidence: float = 0.5, asset_name: str | None = None,
                    email_hashes: Mapping[str, str] | None = None) -> ColumnClass:
    """Classifies one column from its dot path, its place and its sampled values.

    Args:
        path: Dot path; the last segment is the column name, the enclosing structs give context.
        values: Sampled values (``None`` ignored).
        data_type: Spark type name, recorded as is.
        min_confidence: Lowest confidence that assigns a category.
        asset_name: Name of the asset (``crm/contacts``): context for a top-level ``id`` or ``name``.
        email_hashes: sha256 and md5 hex digests of the emails seen in the same sample ->
            ``email_sha256``/``email_md5`` (see :func:`sample_email_hashes`).

    The ``method`` of the result names the evidence that agreed: ``name``, ``value``,
    ``context`` (the enclosing struct's or the asset's name), ``cross-column``.
    """
    kept = [v for v in values if v is not None][:_MAX_VALUES_PER_COLUMN]
    candidates = [c for c in _candidates(path, kept, asset_name, email_hashes) if c.confidence >= min_confidence]
    if not candidates:
        return ColumnClass(path, data_type, None, None, 0.0, None)
    best = max(candidates, key=lambda c: (c.confidence, c.category in IDENTITY_TYPES))
    return ColumnClass(path, data_type, best.category, identity_type_of(best.category), best.confidence, best.method)


def sample_email_hashes(leaves: Mapping[str, tuple[str, list[Any]]]) -> dict[str, str]:
    """Hex sha256 and md5 of every email value of a sample (trimmed, lower case) -> the hash's category."""
    hashes: dict[str, str] = {}
    for _, values in leaves.values():
        for value in values:
            if isinstance(value, str) and "@" in value and _is_email(value.strip()):
                normal = value.strip().lower().encode("utf-8")
                hashes[hashlib.sha256(normal).hexdigest()] = "email_sha256"
                hashes[hashlib.md5(normal, usedforsecurity=False).hexdigest()] = "email_md5"
    return hashes


# -- nested values -------------------------------------------------------------------------------


def _schema_leaves(dtype: T.DataType, path: str, out: dict[str, str]) -> None:
    if isinstance(dtype, T.StructType):
        for f in dtype.fields:
            _schema_leaves(f.dataType, f"{path}.{f.name}" if path else f.name, out)
    elif isinstance(dtype, T.ArrayType):
        if isinstance(dtype.elementType, (T.StructType, T.ArrayType)):
            _schema_leaves(dtype.elementType, path, out)
        else:
            out[path] = dtype.simpleString()
    elif isinstance(dtype, T.MapType):
        out.setdefault(path, "map:" + dtype.simpleString())
    else:
        out[path] = dtype.simpleString()


def _parse_json_document(value: str) -> Any:
    text = value.strip()
    if not (text.startswith("{") and text.endswith("}")) and not (text.startswith("[{") and text.endswith("]")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _walk(value: Any, path: str, sink: dict[str, list[Any]], types: dict[str, str], in_json: bool) -> None:
    if value is None:
        return
    if isinstance(value, T.Row):
        value = value.asDict(recursive=True)
    if isinstance(value, Mapping):
        for key, child in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            _walk(child, child_path, sink, types, in_json)
        return
    if isinstance(value, (list, tuple)):
        for child in value:
            _walk(child, path, sink, types, in_json)
        return
    if isinstance(value, str):
        document = _parse_json_document(value)
        if document is not None:
            if isinstance(document, Mapping) or isinstance(document, list):
                sink.setdefault(f"{path}#json", []).append(1)
                _walk(document, path, sink, types, True)
                return
    if in_json:
        types.setdefault(path, f"json:{type(value).__name__}")
    sink.setdefault(path, []).append(value)


def leaf_values(
    rows: Iterable[Mapping[str, Any] | T.Row], schema: T.StructType | None = None
) -> dict[str, tuple[str, list[Any]]]:
    """Every leaf path of the rows with its type and values.

    Structs and map keys extend the path; arrays contribute their elements to the
    same path; a string holding a JSON object is parsed and walked under its own
    path (``payload.user.email``). Paths known from ``schema`` are kept even when
    the sample holds no value for them.
    """
    types: dict[str, str] = {}
    if schema is not None:
        _schema_leaves(schema, "", types)
    sink: dict[str, list[Any]] = {}
    for row in rows:
        record = row.asDict(recursive=True) if isinstance(row, T.Row) else dict(row)
        _walk(record, "", sink, types, False)
    json_containers = {p[: -len("#json")] for p in sink if p.endswith("#json")}
    result: dict[str, tuple[str, list[Any]]] = {}
    for path in sorted(set(types) | {p for p in sink if not p.endswith("#json")}):
        values = sink.get(path, [])
        if (path in json_containers or types.get(path, "").startswith("map:")) and not values \
                and any(p.startswith(path + ".") for p in sink):
            continue
        if path in json_containers and not values:
            continue
        dtype = (types.get(path) or _python_type(values)).removeprefix("map:")
        result[path] = (dtype, values)
    return result


def _python_type(values: list[Any]) -> str:
    kinds = sorted({type(v).__name__ for v in values})
    return "json:" + "|".join(kinds) if kinds else "unknown"


def classify_rows(rows: Iterable[Mapping[str, Any] | T.Row], schema: T.StructType | None = None,
                  min_confidence: float = 0.5, asset_name: str | None = None) -> list[ColumnClass]:
    """Classifies every leaf path of already collected rows (``asset_name``: the asset's name, as context)."""
    leaves = leaf_values(rows, schema)
    hashes = sample_email_hashes(leaves)
    return [
        classify_column(path, values, dtype, min_confidence, asset_name, hashes)
        for path, (dtype, values) in leaves.items()
    ]


def apply_overrides(classes: list[ColumnClass], overrides: Iterable[Override], location: str,
                    name: str | None = None, asset_id: str | None = None) -> list[ColumnClass]:
    """Applies configured overrides (they always win); an exact path not in the sample is added."""
    result = {c.column: c for c in classes}
    for override in overrides:
        if not override.matches_asset(location, name, asset_id):
            continue
        targets = [p for p in result if fnmatch.fnmatchcase(p, override.column)]
        if not targets and not any(ch in override.column for ch in "*?["):
            targets = [override.column]
        for path in targets:
            data_type = result[path].data_type if path in result else "unknown"
            category = None if override.exclude else override.category
            result[path] = ColumnClass(path, data_type, category, identity_type_of(category), 1.0, "override")
    return [result[p] for p in sorted(result)]


def classify_sample(sample_df: DataFrame, settings: ClassifierSettings | None = None, location: str = "",
                    name: str | None = None, asset_id: str | None = None) -> list[ColumnClass]:
    """Classifies the columns of a sample DataFrame (at most ``settings.sample_rows`` rows are read).

    Args:
        sample_df: A bounded sample (e.g. from :meth:`Connector.sample`).
        settings: Sampling, threshold and overrides; defaults when ``None``.
        location: Asset location, matched by overrides.
        name: Asset name, matched by overrides.
        asset_id: Asset id, matched by overrides.
    """
    settings = settings or ClassifierSettings()
    rows = sample_df.limit(settings.sample_rows).collect()
    return classify_collected(rows, sample_df.schema, settings, location, name, asset_id)


def classify_collected(rows: list[T.Row], schema: T.StructType | None, settings: ClassifierSettings | None = None,
                       location: str = "", name: str | None = None,
                       asset_id: str | None = None) -> list[ColumnClass]:
    """Classifies an asset's already collected sample rows, as :func:`classify_sample` does its DataFrame.

    Args:
        rows: The sample (at most ``settings.sample_rows`` of them are used).
        schema: The sample's schema.
        settings: Threshold and overrides; defaults when ``None``.
        location: Asset location, matched by overrides.
        name: Asset name, matched by overrides.
        asset_id: Asset id, matched by overrides.
    """
    settings = settings or ClassifierSettings()
    classes = classify_rows(rows[:settings.sample_rows], schema, settings.min_confidence, name or location or None)
    return apply_overrides(classes, settings.overrides, location, name, asset_id)
