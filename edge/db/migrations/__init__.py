"""Ordered SQL files of the gateway database (package data, applied by edge.db.migrate)."""
