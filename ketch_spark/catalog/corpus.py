"""A seeded, labelled corpus of tables for measuring the classifier.

Each table holds personal columns under varied names (``email``, ``contactEmail``,
``msisdn``...), placed at the top level, in structs, in arrays of structs, in maps
and in JSON documents held in strings, plus decoys that look personal and are not:
order numbers formatted like phone numbers, hex digests of non-personal data, free
text with an occasional email, version strings shaped like IPv4 addresses, event
UUIDs. Every column's true category (``None`` for non-personal) is known.

Values are built with Spark expressions over ``spark.range``, so large tables
cost no Python loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ketch_spark.catalog.classify import luhn_valid

__all__ = ["CorpusTable", "corpus_tables", "corpus_table", "valid_card_numbers"]

_FIRST = ["Jane", "John", "Maria", "Ahmed", "Yuki", "Olivia", "Lukas", "Chloe", "Priya", "Carlos", "Emma", "Noah",
          "Fatima", "Wei", "Giulia", "Pierre", "Hannah", "Raj", "Sofia", "Daniel", "Ingrid", "Tomasz", "Aoife", "Kwame"]
_LAST = ["Doe", "Smith", "Garcia", "Khan", "Tanaka", "Brown", "Muller", "Martin", "Patel", "Lopez", "Rossi",
         "Nguyen", "Kowalski", "Okafor", "Johansson", "Dubois", "Murphy", "Silva", "Schmidt", "Chen"]
_DOMAINS = ["example.com", "mail.test", "example.org", "inbox.example.net", "corp.example.co.uk"]
_STREETS = ["Main", "Oak", "Maple", "Elm", "High", "Church", "Park", "Station", "Mill", "Victoria"]
_STREET_TYPES = ["Street", "Ave", "Road", "Lane", "Drive", "Way", "Court", "Place", "Blvd", "Terrace"]
_CITIES = ["Springfield", "London", "Berlin", "Paris", "Dublin", "Madrid"]
_GENDERS = ["female", "male", "non-binary", "female", "male", "undisclosed"]
_GENDER_CODES = ["F", "M", "X", "F", "M"]
_AGE_RANGES = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
_INCOME_BANDS = ["<25k", "25k-50k", "50k-75k", "75k-100k", "100k-150k", "150k+"]
_PRODUCTS = ["Blue Widget", "Red Gadget", "Garden Hose", "Desk Lamp", "Coffee Mug", "Running Shoes"]
_SENTENCES = ["great product, fast delivery", "item arrived damaged", "would buy again", "size runs small",
              "left at the front door", "call before delivery", "no comment", "gift wrap please"]
_STATUSES = ["new", "paid", "shipped", "returned", "cancelled"]
_COUNTRIES = ["DE", "FR", "GB", "US", "ES", "IE"]

#: Category -> names a column of that category goes by in the corpus.
_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "email": ("email", "email_address", "contactEmail", "user_email", "mail", "contact"),
    "email_sha256": ("email_sha256", "hashed_email", "email_hash", "sha256_email"),
    "email_md5": ("email_md5", "md5_email"),
    "phone": ("phone", "phone_number", "mobile", "msisdn", "tel", "primary_contact"),
    "ip_address": ("ip", "ip_address", "client_ip", "remote_addr", "last_seen_from"),
    "user_id": ("user_id", "uid", "customer_id", "userId", "member_id"),
    "device_id": ("device_id", "idfa", "gaid", "advertising_id", "deviceId"),
    "person_name": ("full_name", "first_name", "last_name", "customer_name", "holder_name"),
    "postal_address": ("address", "shipping_address", "street_address", "billing_address", "home_address"),
    "date_of_birth": ("dob", "date_of_birth", "birth_date", "birthday"),
    "credit_card": ("card_number", "cc_number", "credit_card", "pan"),
    "gender": ("gender", "sex"),
    "age_range": ("age_range", "age_group", "age_band", "age"),
    "income_band": ("income_band", "income", "household_income", "salary_band"),
}
#: Decoy name -> builder key; all of them are non-personal.
_DECOYS = ("order_number", "order_id", "content_sha256", "checksum", "notes", "app_version", "event_id",
           "product_name", "amount", "created_at", "status", "country", "tracking_code", "session_digest")
_CONTAINERS = ("top", "top", "top", "top", "struct", "array", "map", "json")


@dataclass(frozen=True)
class CorpusTable:
    """One labelled table.

    Attributes:
        name: Table name.
        df: The data.
        labels: Column dot path -> true category (``None`` for non-personal columns).
    """

    name: str
    df: DataFrame
    labels: Mapping[str, str | None]


def valid_card_numbers(count: int, seed: int = 0) -> list[str]:
    """``count`` Luhn-valid 16-digit card numbers with Visa/Mastercard prefixes."""
    rng = random.Random(seed)
    numbers = []
    while len(numbers) < count:
        body = rng.choice(["4", "51", "52", "55"]) + "".join(rng.choice("0123456789") for _ in range(13))
        body = body[:15]
        check = next(d for d in "0123456789" if luhn_valid(body + d))
        numbers.append(body + check)
    return numbers


def _h(salt: str) -> Column:
    return F.abs(F.xxhash64(F.col("id"), F.lit(salt)))


def _pick(options: list[str], salt: str) -> Column:
    return F.element_at(F.array(*[F.lit(o) for o in options]), (F.pmod(_h(salt), F.lit(len(options))) + 1).cast("int"))


def _digits(salt: str, n: int) -> Column:
    return F.lpad(F.pmod(_h(salt), F.lit(10**n)).cast("string"), n, "0")


def _uuid_of(salt: str) -> Column:
    digest = F.md5(F.concat(F.lit(salt), F.col("id").cast("string")))
    return F.concat_ws("-", *[F.substring(digest, start, length) for start, length in
                             ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))])


def _email(table_salt: str) -> Column:
    return F.lower(F.concat(_pick(_FIRST, "first"), F.lit("."), _pick(_LAST, "last"), F.col("id").cast("string"),
                            F.lit("@"), _pick(_DOMAINS, table_salt + "dom")))


def _value(category: str, name: str, salt: str, cards: list[str]) -> Column:
    """The value expression of a personal column."""
    if category == "email":
        return _email(salt)
    if category == "email_sha256":
        return F.sha2(F.lower(F.trim(_email(salt))), 256)
    if category == "email_md5":
        return F.md5(F.lower(F.trim(_email(salt))))
    if category == "phone":
        e164 = F.concat(F.lit("+"), _pick(["1", "44", "49", "33"], salt + "cc"), F.lit("7"), _digits(salt + "p", 9))
        national = F.concat(F.lit("("), F.lit("4"), _digits(salt + "a", 2), F.lit(") "), _digits(salt + "b", 3),
                            F.lit("-"), _digits(salt + "c", 4))
        return F.when(F.pmod(_h(salt + "fmt"), F.lit(3)) == 0, national).otherwise(e164)
    if category == "ip_address":
        v4 = F.concat_ws(".", *[(F.pmod(_h(salt + str(i)), F.lit(223)) + 1).cast("string") for i in range(4)])
        v6 = F.concat_ws(":", F.lit("2001"), F.lit("db8"),
                         *[F.lower(F.hex(F.pmod(_h(salt + "g" + str(i)), F.lit(65536)))) for i in range(6)])
        return F.when(F.pmod(_h(salt + "v"), F.lit(4)) == 0, v6).otherwise(v4)
    if category == "user_id":
        return F.concat(F.lit("u-"), F.col("id").cast("string"))
    if category == "device_id":
        return F.upper(_uuid_of("device" + salt))
    if category == "person_name":
        if name == "first_name":
            return _pick(_FIRST, "first")
        if name == "last_name":
            return _pick(_LAST, "last")
        return F.concat_ws(" ", _pick(_FIRST, "first"), _pick(_LAST, "last"))
    if category == "postal_address":
        return F.concat((F.pmod(_h(salt + "no"), F.lit(400)) + 1).cast("string"), F.lit(" "),
                        _pick(_STREETS, salt + "st"), F.lit(" "), _pick(_STREET_TYPES, salt + "ty"), F.lit(", "),
                        _pick(_CITIES, salt + "city"))
    if category == "date_of_birth":
        return F.date_add(F.lit("1940-01-01").cast("date"), F.pmod(_h(salt), F.lit(24000)).cast("int")).cast("string")
    if category == "credit_card":
        return _pick(cards, salt)
    if category == "gender":
        return _pick(_GENDER_CODES if name == "sex" else _GENDERS, salt)
    if category == "age_range":
        return _pick(_AGE_RANGES, salt) if name != "age" else (F.pmod(_h(salt), F.lit(70)) + 18).cast("string")
    if category == "income_band":
        return _pick(_INCOME_BANDS, salt)
    raise ValueError(f"unknown corpus category {category!r}")


def _decoy(name: str, salt: str) -> Column:
    """The value expression of a non-personal column that may look personal."""
    if name == "order_number":  # formatted exactly like a US phone number
        return F.concat(_digits(salt + "a", 3), F.lit("-"), _digits(salt + "b", 3), F.lit("-"), _digits(salt + "c", 4))
    if name == "order_id":
        return F.concat(F.lit("4"), _digits(salt, 9))
    if name == "content_sha256":
        return F.sha2(F.concat(F.lit("content-"), F.col("id").cast("string")), 256)
    if name == "checksum":
        return F.md5(F.concat(F.lit("blob-"), F.col("id").cast("string")))
    if name == "session_digest":
        return F.sha2(F.concat(F.lit("session-"), F.col("id").cast("string")), 256)
    if name == "notes":  # free text with an occasional email
        return F.when(F.pmod(_h(salt + "e"), F.lit(20)) == 0,
                      F.concat(F.lit("please write to "), _email(salt), F.lit(" about the delivery"))) \
            .otherwise(_pick(_SENTENCES, salt))
    if name == "app_version":  # four numbers: shaped like an IPv4 address
        return F.concat_ws(".", *[F.pmod(_h(salt + str(i)), F.lit(20)).cast("string") for i in range(4)])
    if name == "event_id":
        return _uuid_of("event" + salt)
    if name == "product_name":
        return _pick(_PRODUCTS, salt)
    if name == "amount":
        return (F.pmod(_h(salt), F.lit(100000)) / 100).cast("double")
    if name == "created_at":
        return F.timestamp_seconds(F.lit(1_700_000_000) + F.pmod(_h(salt), F.lit(30_000_000)))
    if name == "status":
        return _pick(_STATUSES, salt)
    if name == "country":
        return _pick(_COUNTRIES, salt)
    if name == "tracking_code":
        return F.concat(F.lit("1Z"), _digits(salt, 12))
    raise ValueError(f"unknown decoy {name!r}")


def corpus_table(
    spark: SparkSession, name: str, rows: int, seed: int = 0, cards: list[str] | None = None
) -> CorpusTable:
    """One labelled table of ``rows`` rows; ``seed`` picks its columns, names and nesting."""
    rng = random.Random(f"{name}:{seed}")
    cards = cards or valid_card_numbers(200, seed)
    fields: list[tuple[str, Column, str | None, str]] = []
    used: set[str] = set()
    for category, names in _SYNONYMS.items():
        if rng.random() < 0.8:
            column = rng.choice(names)
            if column not in used:
                used.add(column)
                fields.append((column, _value(category, column, f"{name}{category}", cards), category,
                               rng.choice(_CONTAINERS)))
    for decoy in rng.sample(_DECOYS, 6):
        if decoy not in used:
            used.add(decoy)
            fields.append((decoy, _decoy(decoy, f"{name}{decoy}"), None, rng.choice(_CONTAINERS)))
    return _assemble(spark, name, rows, fields)


def _assemble(
    spark: SparkSession, name: str, rows: int, fields: list[tuple[str, Column, str | None, str]]
) -> CorpusTable:
    top, struct_fields, array_fields, map_fields, json_fields = [], [], [], [], []
    labels: dict[str, str | None] = {}
    for column, expr, category, container in fields:
        if container == "struct":
            struct_fields.append(expr.alias(column))
            labels[f"customer.contact.{column}"] = category
        elif container == "array":
            array_fields.append(expr.alias(column))
            labels[f"orders.{column}"] = category
        elif container == "map" and category is not None:
            map_fields.extend([F.lit(column), expr.cast("string")])
            labels[f"attributes.{column}"] = category
        elif container == "json":
            json_fields.append(expr.alias(column))
            labels[f"payload.{column}"] = category
        else:
            top.append(expr.alias(column))
            labels[column] = category
    columns = [F.col("id").alias("row_id"), *top]
    labels["row_id"] = None
    if struct_fields:
        columns.append(F.struct(F.struct(*struct_fields).alias("contact")).alias("customer"))
    if array_fields:
        columns.append(F.array(F.struct(*array_fields)).alias("orders"))
    if map_fields:
        columns.append(F.create_map(*map_fields).alias("attributes"))
    if json_fields:
        columns.append(F.to_json(F.struct(*json_fields)).alias("payload"))
    df = spark.range(rows).select(*columns)
    return CorpusTable(name=name, df=df, labels=labels)


def corpus_tables(spark: SparkSession, tables: int = 20, rows: int = 200, seed: int = 0) -> list[CorpusTable]:
    """``tables`` labelled tables of ``rows`` rows each (deterministic for a seed)."""
    cards = valid_card_numbers(200, seed)
    return [corpus_table(spark, f"corpus_{i:03d}", rows, seed, cards) for i in range(tables)]
