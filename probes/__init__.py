"""The probe daemon (see README)."""
