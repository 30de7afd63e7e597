"""Data-subject rights: intake, erasure, access export, verification and audit."""
