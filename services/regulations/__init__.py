"""Regulations: suppress, delete and unsuppress users (README: "Privacy: suppression and
deletion")."""
