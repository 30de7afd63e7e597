"""Column expressions that obfuscate personal columns, nested ones included.

Obfuscation is the soft form of erasure: the matched rows stay, their personal
values are replaced according to :class:`ketch_spark.config.ObfuscationRule`
(``null``, ``constant``, ``sha256``, ``hmac``, ``random``). Everything here is
built from the public Column API (``withField``, ``transform``, ``sha2``...), so it
runs on classic Spark and on Spark Connect alike, without Python UDFs.

A leaf at a dot path (``user.contact.email``, ``items.card_number``) is replaced
in place: sibling fields are kept, a null parent struct stays null, arrays of
structs are mapped element by element. Every leaf of one top-level column ends
up in one expression (:func:`obfuscation_assignments`), which
:func:`obfuscate_rows` applies to the matched rows only.

Example:
    >>> assignments = obfuscation_assignments(df.schema, asset.personal_columns, cfg.dsr,
    ...                                       hmac_key_from_env(cfg.dsr))
    >>> obfuscated_df = obfuscate_rows(df, plan.condition, assignments)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any, Callable, Mapping, Sequence, Union

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ketch_spark.config import DsrSettings, ObfuscationRule
from ketch_spark.connectors.base import PersonalColumn
from ketch_spark.errors import ObfuscationError

__all__ = [
    "obfuscated_value",
    "hmac_sha256_hex",
    "assign_nested",
    "obfuscation_assignments",
    "obfuscate_rows",
    "hmac_key_from_env",
    "hmac_pads",
]

logger = logging.getLogger(__name__)

#: New value of a leaf from its current value and its type.
LeafFunction = Callable[[Column, T.DataType], Column]
#: Assignments below one column: a leaf function, or child field name -> subtree.
_Tree = Union[LeafFunction, "dict[str, _Tree]"]

_HMAC_BLOCK_BYTES = 64
_STRING_ONLY_METHODS = ("sha256", "hmac", "random")
_INTEGRAL_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_FRACTIONAL_TYPES = (T.FloatType, T.DoubleType)
_DATETIME_TYPES = (T.DateType, T.TimestampType, T.TimestampNTZType)
_COMPLEX_TYPES = (T.StructType, T.ArrayType, T.MapType)
_INTEGRAL_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_DECIMAL_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_SPECIAL_FLOAT_TEXT = re.compile(r"\s*[+-]?(nan|inf|infinity)\s*", re.IGNORECASE)
_DATETIME_TEXT = re.compile(r"\s*[+-]?\d")
_BOOLEAN_TEXT = ("t", "true", "y", "yes", "1", "f", "false", "n", "no", "0")


def _quote(name: str) -> str:
    """``name`` as one identifier part (backticks, inner backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def _type_name(data_type: T.DataType) -> str:
    return data_type.simpleString()


def _constant_problem(value: Any, data_type: T.DataType) -> str | None:
    """Why ``value`` can obviously not be cast to ``data_type``, or ``None`` (Spark decides)."""
    if value is None:
        return None
    if isinstance(data_type, _COMPLEX_TYPES):
        return "a constant cannot replace a struct, array or map; use null"
    if isinstance(value, bool):
        if isinstance(data_type, _DATETIME_TYPES + (T.BinaryType,)):
            return "a boolean cannot be cast to it"
        return None
    if isinstance(value, (int, float)):
        if isinstance(data_type, (T.DateType, T.BinaryType)):
            return "a number cannot be cast to it"
        return None
    text = str(value)
    if isinstance(data_type, _INTEGRAL_TYPES) and not _INTEGRAL_TEXT.fullmatch(text):
        return "the value is not a whole number"
    if isinstance(data_type, T.DecimalType) and not _DECIMAL_TEXT.fullmatch(text):
        return "the value is not a number"
    if isinstance(data_type, _FRACTIONAL_TYPES) and not (
        _DECIMAL_TEXT.fullmatch(text) or _SPECIAL_FLOAT_TEXT.fullmatch(text)
    ):
        return "the value is not a number"
    if isinstance(data_type, T.BooleanType) and text.strip().lower() not in _BOOLEAN_TEXT:
        return f"the value is not one of {', '.join(_BOOLEAN_TEXT)}"
    if isinstance(data_type, _DATETIME_TYPES) and not _DATETIME_TEXT.match(text):
        return "the value is not a date or timestamp"
    return None


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256 (RFC 2104)."""
    if len(key) > _HMAC_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_HMAC_BLOCK_BYTES, b"\x00")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_sha256_hex(value: Column, key: bytes) -> Column:
    """Lower-case hex HMAC-SHA256 of ``value``'s UTF-8 bytes with ``key``; null stays null.

    Equal to ``hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()``,
    built from ``sha2``, ``concat``, ``unhex`` and ``encode`` only: the padded keys
    are computed here and shipped as binary literals.

    Args:
        value: A string column.
        key: The secret key (any length; hashed first when longer than 64 bytes).
    """
    inner_key, outer_key = hmac_pads(key)
    inner = F.sha2(F.concat(F.lit(inner_key), F.encode(value, "UTF-8")), 256)
    return F.sha2(F.concat(F.lit(outer_key), F.unhex(inner)), 256)


def obfuscated_value(
    value: Column,
    data_type: T.DataType,
    rule: ObfuscationRule,
    hmac_key: bytes | None,
    column: str,
    *,
    secret_env: str = "KETCH_DSR_HMAC_SECRET",
) -> Column:
    """The obfuscated replacement of ``value`` (of type ``data_type``) under ``rule``.

    ``null``, ``constant``, ``random`` and the sha256 of a constant replace every
    value, nulls included; ``sha256`` and ``hmac`` of the value keep a null null
    (a null has nothing to hide).

    Args:
        value: The current value.
        data_type: Its Spark type; the result has the same type.
        rule: How to obfuscate it.
        hmac_key: Key of the ``hmac`` method (see :func:`hmac_key_from_env`).
        column: Dot path of the column, for error messages.
        secret_env: Environment variable that holds the ``hmac`` key (error messages).

    Raises:
        ObfuscationError: The method does not apply to the column's type, the
            constant obviously cannot be cast to it, or ``hmac`` has no key.
    """
    method = rule.method
    if method == "null":
        return F.lit(None).cast(data_type)
    if method == "constant":
        problem = _constant_problem(rule.value, data_type)
        if problem is not None:
            raise ObfuscationError(
                f"column {column} ({_type_name(data_type)}): cannot obfuscate with the constant "
                f"{rule.value!r}: {problem}"
            )
        return F.lit(rule.value).cast(data_type)
    if method not in _STRING_ONLY_METHODS:
        raise ObfuscationError(f"column {column}: unknown obfuscation method {method!r}")
    if not isinstance(data_type, T.StringType):
        raise ObfuscationError(
            f"column {column} is {_type_name(data_type)}: method {method} applies to string columns only; "
            "use null or constant for it (dsr.obfuscate.columns)"
        )
    if method == "random":
        return F.expr("uuid()")
    if method == "sha256":
        source = value if rule.value is None else F.lit(rule.value).cast("string")
        return F.sha2(source, 256)
    if hmac_key is None:
        raise ObfuscationError(
            f"column {column}: method hmac needs a secret key; set the environment variable {secret_env}"
        )
    return hmac_sha256_hex(value, hmac_key)


def _leaf_tree(parts: Sequence[str], leaf: LeafFunction) -> _Tree:
    tree: _Tree = leaf
    for part in reversed(parts):
        tree = {part: tree}
    return tree


def _merge(tree: _Tree, parts: Sequence[str], leaf: LeafFunction) -> _Tree:
    """``tree`` with ``leaf`` added at ``parts``; a whole-value replacement wins over deeper ones."""
    if not parts:
        return leaf
    if not isinstance(tree, dict):
        return tree
    head, rest = parts[0], parts[1:]
    merged = dict(tree)
    merged[head] = _merge(tree[head], rest, leaf) if head in tree else _leaf_tree(rest, leaf)
    return merged


def _check_path(schema: T.StructType, parts: Sequence[str], path: str) -> None:
    """Raises :class:`ObfuscationError` unless ``parts`` resolve inside ``schema``."""
    data_type: T.DataType = schema
    for index, part in enumerate(parts):
        if isinstance(data_type, T.ArrayType):
            data_type = data_type.elementType
            if isinstance(data_type, T.ArrayType):
                raise ObfuscationError(
                    f"column {path}: {'.'.join(parts[:index])} is an array of arrays; "
                    "only arrays of structs can be crossed"
                )
        if not isinstance(data_type, T.StructType):
            raise ObfuscationError(
                f"column {path}: {'.'.join(parts[:index])} is {_type_name(data_type)}, "
                f"not a struct with a field {part!r}"
            )
        if part not in data_type.fieldNames():
            where = "the schema" if index == 0 else f"{'.'.join(parts[:index])} ({_type_name(data_type)})"
            raise ObfuscationError(f"column {path}: no field {part!r} in {where}")
        data_type = data_type[part].dataType


def _assigned(value: Column, data_type: T.DataType, tree: _Tree) -> Column:
    """``value`` with ``tree``'s assignments applied (paths already checked)."""
    if not isinstance(tree, dict):
        if isinstance(data_type, T.ArrayType) and not isinstance(data_type.elementType, _COMPLEX_TYPES):
            element_type = data_type.elementType
            return F.transform(value, lambda element: tree(element, element_type))
        return tree(value, data_type)
    if isinstance(data_type, T.ArrayType):
        element_type = data_type.elementType
        return F.transform(value, lambda element: _assigned(element, element_type, tree))
    assert isinstance(data_type, T.StructType)
    updated = value
    for name, subtree in tree.items():
        field_value = _assigned(value.getField(name), data_type[name].dataType, subtree)
        updated = updated.withField(_quote(name), field_value)
    return F.when(value.isNull(), value).otherwise(updated)


def _split(schema: T.StructType, path: str) -> tuple[str, list[str]]:
    parts = path.split(".")
    if any(not part for part in parts):
        raise ObfuscationError(f"column {path!r}: not a dot path")
    _check_path(schema, parts, path)
    return parts[0], parts[1:]


def assign_nested(schema: T.StructType, path: str, new_value: LeafFunction) -> tuple[str, Column]:
    """The top-level column holding ``path`` with that leaf replaced, everything else kept.

    Struct fields are replaced with ``withField`` (a null struct stays null);
    arrays of structs on the way are mapped with ``transform``; a leaf that is an
    array of scalars is mapped element by element. A leaf that is a struct, a map
    or an array of complex values is handed to ``new_value`` whole.

    Args:
        schema: Schema of the DataFrame.
        path: Dot path of the leaf (``user.contact.email``, ``items.card_number``).
        new_value: The new value of the leaf (or of each element) from its current
            value and its type.

    Returns:
        The top-level column's name and the expression of its new value.

    Raises:
        ObfuscationError: ``path`` does not resolve in ``schema`` or crosses an
            array of arrays.
    """
    top, rest = _split(schema, path)
    return top, _assigned(F.col(_quote(top)), schema[top].dataType, _leaf_tree(rest, new_value))


def _path_exists(schema: T.StructType, path: str) -> bool:
    try:
        _split(schema, path)
    except ObfuscationError:
        return False
    return True


def obfuscation_assignments(
    schema: T.StructType,
    personal_columns: Sequence[PersonalColumn],
    settings: DsrSettings,
    hmac_key: bytes | None,
) -> dict[str, Column]:
    """New expression of each top-level column that obfuscation changes.

    Every personal column gets the rule of ``settings.rule_for`` (column path, leaf
    name, category, default); every path named in ``settings.obfuscate_columns``
    that exists in ``schema`` gets its rule too, personal or not (``is_deleted``).
    The leaves of one top-level column are composed into one expression.

    Args:
        schema: Schema of the DataFrame being obfuscated.
        personal_columns: The asset's personal columns (from the catalog).
        settings: The ``dsr`` settings holding the rules.
        hmac_key: Key of the ``hmac`` method, or ``None`` when unset.

    Returns:
        ``{top-level column name: new expression}``, in the order first assigned.

    A personal column that does not resolve in ``schema`` (a field inside a JSON
    string, a column gone since the scan) is skipped with a warning, as matching
    skips it.

    Raises:
        ObfuscationError: A rule does not fit its column (``hmac`` of a number,
            ``hmac`` without a key, a constant that cannot be cast).
    """
    rules: dict[str, ObfuscationRule] = {}
    skipped: list[str] = []
    for personal in personal_columns:
        rule = settings.rule_for(personal.column, personal.category)
        if rule is None or personal.column in rules:
            continue
        if _path_exists(schema, personal.column):
            rules[personal.column] = rule
        else:
            skipped.append(personal.column)
    for path, rule in settings.obfuscate_columns.items():
        if path not in rules and _path_exists(schema, path):
            rules[path] = rule
    if skipped:
        logger.warning("not obfuscated (not readable as columns of the schema): %s", ", ".join(skipped))
    trees: dict[str, _Tree] = {}
    for path, rule in rules.items():
        top, rest = _split(schema, path)

        def leaf(value: Column, data_type: T.DataType, rule: ObfuscationRule = rule, path: str = path) -> Column:
            return obfuscated_value(value, data_type, rule, hmac_key, path, secret_env=settings.hmac_secret_env)

        trees[top] = _merge(trees[top], rest, leaf) if top in trees else _leaf_tree(rest, leaf)
    logger.debug("obfuscating %d column(s) under %s", len(rules), ", ".join(trees))
    return {top: _assigned(F.col(_quote(top)), schema[top].dataType, tree) for top, tree in trees.items()}


def obfuscate_rows(df: DataFrame, condition: Column, assignments: Mapping[str, Column]) -> DataFrame:
    """``df`` with ``assignments`` applied to the rows where ``condition`` is true.

    The other rows (``condition`` false or null) keep their values exactly; the
    column order is kept.

    Args:
        df: The rows to obfuscate.
        condition: Which rows to obfuscate (e.g. ``MatchPlan.condition``).
        assignments: New expression per top-level column (:func:`obfuscation_assignments`).

    Raises:
        ObfuscationError: An assignment names a column ``df`` lacks.
    """
    missing = sorted(set(assignments) - set(df.columns))
    if missing:
        raise ObfuscationError(f"cannot obfuscate column(s) {', '.join(missing)}: not in the DataFrame")
    return df.select(
        *[
            F.when(condition, assignments[name]).otherwise(F.col(_quote(name))).alias(name)
            if name in assignments
            else F.col(_quote(name))
            for name in df.columns
        ]
    )


def hmac_key_from_env(settings: DsrSettings) -> bytes | None:
    """The ``hmac`` key: UTF-8 bytes of the variable ``settings.hmac_secret_env``, or ``None`` if unset or empty."""
    secret = os.environ.get(settings.hmac_secret_env)
    return secret.encode("utf-8") if secret else None
