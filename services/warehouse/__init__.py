"""The typed warehouse layer: Segment's warehouse schema derived from the raw ``events`` table's
events (:mod:`services.warehouse.typed`: names, rows, types) and written per source schema
(:mod:`services.warehouse.writer`)."""
