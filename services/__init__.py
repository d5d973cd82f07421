"""Runtime code the liftoff platform deploys: event model, collector, stream adapters.

Never imports Pulumi. Entry points: ``python -m services <command>`` (:mod:`services.cli`) and the
AWS Lambda handler :func:`services.aws_lambda.collector_handler`.
"""
