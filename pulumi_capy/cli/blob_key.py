"""``capy blob-key generate``: a new key for encrypting backup blobs at rest.

Offline: nothing is read or written but the key printed. The key goes first in
``CAPY_BLOB_KEY`` (or first in the file ``CAPY_BLOB_KEY_FILE`` names); the keys
after it stay readable (``engine.blob_keys``).
"""

from __future__ import annotations

import click

from pulumi_capy.cli.common import CapyGroup, echo, emit, example, json_option, note
from pulumi_capy.engine.blob_keys import ENV_BLOB_KEY, ENV_BLOB_KEY_FILE, BlobKey, generate_blob_key

__all__ = ["blob_key"]


@click.group(
    "blob-key",
    cls=CapyGroup,
    epilog=example("capy blob-key generate > blob.key && chmod 600 blob.key"),
)
def blob_key() -> None:
    """Keys that encrypt backup blobs at rest (CAPY_BLOB_KEY, CAPY_BLOB_KEY_FILE)."""


@blob_key.command(
    epilog=example(
        "capy blob-key generate",
        'CAPY_BLOB_KEY="$(capy blob-key generate),$CAPY_BLOB_KEY"  # rotate: new key first',
        "capy blob-key generate --json",
    )
)
@json_option
def generate() -> None:
    """Print a new random key (32 bytes, url-safe base64) and its id.

    The key alone goes to stdout; its id (what messages and blob headers show)
    goes to stderr. Keep the key with the deployment's secrets: a blob cannot be
    read without the key it was written with.
    """
    key = generate_blob_key()
    key_id = BlobKey.from_text(key).key_id_hex

    def human() -> None:
        echo(key)
        note(
            f"blob key {key_id}: put it first in {ENV_BLOB_KEY} (comma-separated, newest first) "
            f"or in the file {ENV_BLOB_KEY_FILE} names (one a line, mode 0600), and keep the "
            "older keys after it while blobs written with them remain"
        )

    emit({"key": key, "key_id": key_id}, human)
