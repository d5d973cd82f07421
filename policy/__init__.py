"""liftoff's Pulumi policy pack (`policy/__main__.py`) and its rules (`policy/liftoff_policy`)."""
