"""Point-in-time recovery of PostgreSQL projects: the log streamed into blobs
(``stream``) or pushed by ``archive_command`` (``archive``), base backups, the window,
and restores to any moment in it (``recovery``)."""
