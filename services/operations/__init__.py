"""The ops function on AWS: the operations the platform's DAGs invoke, in one function."""
