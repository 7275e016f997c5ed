"""Operator work: alert review and decisions, maintenance orders, the audit log."""
