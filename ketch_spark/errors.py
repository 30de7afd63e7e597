"""The one exception hierarchy of ketch-spark.

Every error the library raises on purpose derives from :class:`KetchError`, so a
caller can catch them all at once. Problems with values or columns also derive
from :class:`ValueError`; problems with missing tables or files from
:class:`LookupError`.
"""

from __future__ import annotations

__all__ = [
    "KetchError",
    "ConfigError",
    "PolicyError",
    "SchemaError",
    "TableNotFoundError",
    "UnknownPurposeError",
    "ConnectorError",
    "PartialErasureError",
    "JarsNotInstalledError",
    "InvalidRequestError",
    "ObfuscationError",
]


class KetchError(Exception):
    """Base class of every error raised by ketch-spark."""


class ConfigError(KetchError, ValueError):
    """A configuration file or value is missing or invalid."""


class PolicyError(ConfigError):
    """The purpose policy (conf/policy.yaml) is invalid."""


class SchemaError(KetchError, ValueError):
    """A DataFrame lacks the columns or types an operation needs."""


class UnknownPurposeError(KetchError, ValueError):
    """A purpose name is not declared in the policy."""


class TableNotFoundError(KetchError, LookupError):
    """A Delta table that an operation reads does not exist yet."""


class ConnectorError(KetchError):
    """A data store could not be reached, listed or read."""


class JarsNotInstalledError(KetchError, LookupError):
    """The JVM jars Spark needs (Delta, JDBC, S3) are not in the jars folder."""


class InvalidRequestError(KetchError, ValueError):
    """A data-subject request (or an update of one) is invalid; the message is the reason.

    Messages name the field at fault and never contain an identity's value.
    """


class ObfuscationError(KetchError, ValueError):
    """A column cannot be obfuscated as configured (path, type, constant or missing key)."""


class PartialErasureError(KetchError):
    """An erasure committed its change, then a later step (purge, vacuum) failed.

    Attributes:
        counts: What was done before the failure (an ``EraseCounts``); a rerun
            finishes the remaining steps and counts nothing twice.
    """

    def __init__(self, message: str, counts: object) -> None:
        super().__init__(message)
        self.counts = counts
