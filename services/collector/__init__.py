"""The collector side: the Segment-compatible ingestion API (ASGI app and the Lambda
adapter), its limits, write keys, origins and quarantine."""
