"""liftoff's Pulumi components: one folder per capability, each with a target-neutral contract
in its `__init__.py` and its AWS and Kubernetes realizations in `aws.py` / `kubernetes.py`."""
