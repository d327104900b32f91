"""The API's routes, one ``APIRouter`` per noun; ``create_app`` includes them all.

Every route takes the caller (``Caller``) and the engine (``AppEngine``) as
dependencies (``server/dependencies.py``), and declares the error envelope for
each error status (``server/responses.py``).

Reads are ``async def``: they run on the event loop, not in the thread pool. A
read is a few indexed SQLite queries on this thread's own WAL reading
connection, which never waits for a writer; in a thread, each query would drop
the GIL and then queue for it behind the other threads (``bench/server_load.py``
with the read cache off measures it). Writes stay in the thread pool: they may
wait for SQLite's write lock.
"""
