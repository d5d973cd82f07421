"""Credentials of the local servers: generated once into ``<data>/secrets/`` (mode 0600) and
kept, handed to the processes as files, as the platform hands them its Secrets.

- NATS: a user and password (nats-server's ``authorization`` block); the processes read
  them from ``LIFTOFF_STREAM_CREDENTIALS_FILE`` (services' own builder writes that file).
- The S3 store: an access key pair in an AWS shared-credentials file
  (``AWS_SHARED_CREDENTIALS_FILE``); the store refuses requests not signed with it.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable
from pathlib import Path

from services.stream.jetstream import stream_credentials_document

KEY_ALPHABET = string.ascii_letters + string.digits
NATS_USER = "liftoff"
NATS_CREDENTIALS = "nats-credentials.json"
NATS_CONFIG = "nats.conf"
S3_CREDENTIALS = "s3-credentials"
_OLD_S3_KEY = "aws_access_key_id = liftoff-local\n"
"""The fixed pair earlier versions wrote: replaced by a generated one."""

SecretFile = Callable[[str, Callable[[], str] | None], Path]
"""DataDir.secret_file: a file under secrets/, made once by the callable and kept."""


def generate_key(length: int = 32, alphabet: str = KEY_ALPHABET) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def nats_credentials(secret_file: SecretFile) -> Path:
    """The processes' credentials file (JSON user/password), generated once."""
    return secret_file(
        NATS_CREDENTIALS, lambda: stream_credentials_document(NATS_USER, generate_key())
    )


def nats_config(secret_file: SecretFile, sync_always: bool) -> Path:
    """nats-server's config file (rewritten on every start, beside the password it holds):
    the login the credentials file names, and fsync before every acknowledgement if asked."""
    credentials = json.loads(nats_credentials(secret_file).read_text())
    config = secret_file(NATS_CONFIG, None)
    lines = [
        "authorization {",
        f"  user: {json.dumps(credentials['user'])}",
        f"  password: {json.dumps(credentials['password'])}",
        "}",
    ]
    if sync_always:
        lines += ["jetstream {", "  sync_interval: always", "}"]
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    return config


def s3_credentials(secret_file: SecretFile) -> Path:
    """The store's key pair as an AWS shared-credentials file, generated once (AWS's shapes:
    a 20-character key id starting AKIA, a 40-character secret)."""

    def make() -> str:
        key_id = "AKIA" + generate_key(16, string.ascii_uppercase + string.digits)
        return (
            f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {generate_key(40)}\n"
        )

    path = secret_file(S3_CREDENTIALS, make)
    if _OLD_S3_KEY in path.read_text():
        path.write_text(make())
    return path
