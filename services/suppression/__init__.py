"""The suppression list: keyed hashes of suppressed ids, and how readers hold it."""
