"""liftoff's policy rules as plain functions (`aws`, `kubernetes`), their catalogue
(`registry`), the `pulumi_policy` wrapping (`pack`) and config derivation (`stack_config`)."""
