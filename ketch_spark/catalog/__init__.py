"""The Delta-backed catalog of data assets and their classified columns."""
