"""Warehouse reconciliation: the events of an archived hour the warehouse lacks."""
