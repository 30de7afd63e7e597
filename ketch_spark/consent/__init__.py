"""Consent: raw signals -> events (sources, tcf) -> per-user state (compact) -> filter."""
