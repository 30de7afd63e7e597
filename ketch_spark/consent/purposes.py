"""Purpose-declared jobs: every input a job reads through its context is consent-filtered.

A job declares its purpose once, as a decorator or a context manager
(:func:`purpose`); the inputs it reads through the context are filtered with
:func:`~ketch_spark.consent.filter.consent_filter`, all at the same version of
consent/state, and its summary gets the purpose and that version.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession

from ketch_spark.config import KetchConfig
from ketch_spark.consent.filter import consent_filter
from ketch_spark.consent.snapshot import AsOf, check_as_of, check_sources, policy_of
from ketch_spark.errors import KetchError
from ketch_spark.policy import Policy

__all__ = ["PurposeContext", "purpose"]


class PurposeContext:
    """The purpose a job works for: every input read through it is consent-filtered.

    Use :func:`purpose` to make one. As a decorator, each call of the job gets a
    fresh context as its first argument and returns the job's summary dict with
    the purpose and the consent version added; as a context manager, ``with``
    yields a fresh context. All inputs of one run use the same consent version
    (the first read pins it).

    Example:
        >>> @ks.purpose("analytics")
        ... def site_audience(job, spark, cfg, events_path):
        ...     events_df = job.read(events_path, spark=spark)          # already filtered
        ...     audience_df = events_df.groupBy("event_site").agg(F.countDistinct("user_id"))
        ...     audience_df.write.format("delta").mode("overwrite").save(cfg.path("reports/audience"))
        ...     return {"sites": audience_df.count()}
        >>> site_audience(spark, cfg, "s3a://lake/user_events")
        {'sites': 12, 'purpose': 'analytics', 'legal_basis': 'consent', 'consent_version': 12, 'inputs': [...]}

        >>> with ks.purpose("advertising", cfg) as job:
        ...     profiles_df = job.read(profiles_df)                         # a DataFrame works too
        ...     summary = job.summary({"rows": profiles_df.count()})

    Attributes:
        name: Purpose name.
        inputs: One dict per input read in this run (source and filter info).
    """

    def __init__(
        self,
        name: str,
        cfg: KetchConfig | None = None,
        *,
        consent: DataFrame | None = None,
        policy: Policy | None = None,
        as_of: AsOf | None = None,
    ) -> None:
        if cfg is not None or consent is not None:
            check_sources(cfg, consent, policy, as_of)
            policy_of(cfg, policy).purpose(name)
        elif policy is not None:
            policy.purpose(name)
        check_as_of(as_of)
        self.name = name
        self.inputs: list[dict[str, Any]] = []
        self._cfg = cfg
        self._consent = consent
        self._policy = policy
        self._as_of = as_of
        self._version: int | None = None
        self._legal_basis: str | None = None

    def __repr__(self) -> str:
        return f"PurposeContext({self.name!r}, consent_version={self._version!r})"

    def _fresh(self, cfg: KetchConfig | None = None) -> PurposeContext:
        return PurposeContext(
            self.name, cfg if self._cfg is None else self._cfg, consent=self._consent, policy=self._policy, as_of=self._as_of
        )

    @property
    def consent_version(self) -> int | None:
        """Delta version of consent/state this run reads (``None`` before the first read)."""
        return self._version

    def apply(self, df: DataFrame, *, user_col: str = "user_id", org_col: str = "org_id", source: str | None = None) -> DataFrame:
        """Filters an input DataFrame for this purpose and records it.

        Raises:
            TypeError: The context has no cfg (nor consent and policy).
            SchemaError, TableNotFoundError: As :func:`consent_filter`.
        """
        as_of = self._version if self._version is not None else self._as_of
        f = consent_filter(
            self.name, self._cfg, consent=self._consent, policy=self._policy, user_col=user_col, org_col=org_col,
            as_of=None if self._consent is not None else as_of,
        )
        filtered_df = df.transform(f)
        assert f.info is not None
        self._version = f.info.consent_version
        self._legal_basis = f.info.legal_basis
        self.inputs.append({"source": source or "<DataFrame>", "join": f.info.join, "strategy": f.info.strategy})
        return filtered_df

    def read(
        self,
        source: str | DataFrame,
        *,
        spark: SparkSession | None = None,
        format: str = "delta",  # noqa: A002 - same word as DataFrameReader.format
        user_col: str = "user_id",
        org_col: str = "org_id",
        options: Mapping[str, str] | None = None,
    ) -> DataFrame:
        """Reads an input (a path, or a DataFrame already loaded) with the consent filter applied.

        Args:
            source: A path or URI (read with ``format``) or a DataFrame.
            spark: Session to read with; default the active one.
            format: Reader format for a path: delta, parquet, json, ...
            user_col: The input's user id column.
            org_col: The input's org id column.
            options: Reader options.
        """
        if isinstance(source, DataFrame):
            return self.apply(source, user_col=user_col, org_col=org_col)
        if not isinstance(source, str):
            raise TypeError(f"source must be a path or a DataFrame, got {type(source).__name__}")
        spark = spark or SparkSession.getActiveSession()
        if spark is None:
            raise KetchError("no active SparkSession; pass spark= to PurposeContext.read")
        df = spark.read.format(format).options(**dict(options or {})).load(source)
        return self.apply(df, user_col=user_col, org_col=org_col, source=source)

    def summary(self, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The job summary: ``result`` plus purpose, legal basis, consent version and inputs.

        The purpose keys win over keys of the same name in ``result``.
        """
        return {
            **dict(result or {}),
            "purpose": self.name,
            "legal_basis": self._legal_basis,
            "consent_version": self._version,
            "inputs": [dict(i) for i in self.inputs],
        }

    def __enter__(self) -> PurposeContext:
        return self._fresh()

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, fn: Callable[..., Mapping[str, Any] | None]) -> Callable[..., dict[str, Any]]:
        """Declares ``fn`` a job of this purpose (see the class example).

        ``fn`` receives a fresh context as its first argument. Without a cfg in
        :func:`purpose`, the job's own ``cfg`` argument is used. The wrapped job
        returns ``fn``'s dict (or ``{}`` for None) merged into :meth:`summary`.
        """
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def job(*args: Any, **kwargs: Any) -> dict[str, Any]:
            ctx = self._fresh(_cfg_argument(signature, args, kwargs))
            result = fn(ctx, *args, **kwargs)
            if result is not None and not isinstance(result, Mapping):
                raise TypeError(f"job {fn.__name__} of purpose {self.name!r} must return a dict or None, got {type(result).__name__}")
            return ctx.summary(result)

        return job


def _cfg_argument(signature: inspect.Signature, args: Sequence[Any], kwargs: Mapping[str, Any]) -> KetchConfig | None:
    """The ``cfg`` argument a job was called with, if its signature has one."""
    if "cfg" not in signature.parameters:
        return None
    try:
        bound = signature.bind_partial(None, *args, **kwargs)
    except TypeError:
        return None
    value = bound.arguments.get("cfg")
    return value if isinstance(value, KetchConfig) else None


def purpose(
    name: str,
    cfg: KetchConfig | None = None,
    *,
    consent: DataFrame | None = None,
    policy: Policy | None = None,
    as_of: AsOf | None = None,
) -> PurposeContext:
    """Declares the purpose of a job: a decorator, or a context manager.

    Inputs the job reads through the context (:meth:`PurposeContext.read`) are
    consent-filtered for ``name``; the job's summary gets the purpose and the
    consent version. See :class:`PurposeContext` for an example.

    Raises:
        UnknownPurposeError: ``name`` is not in the policy (checked when a cfg or
            policy is given, otherwise at the first read).
    """
    return PurposeContext(name, cfg, consent=consent, policy=policy, as_of=as_of)
