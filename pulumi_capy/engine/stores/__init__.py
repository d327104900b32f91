"""The engine's metadata stores.

``contract`` is what the engine asks of a store (the ``Store`` protocol, its
records and the opaque ``Transaction``); ``sqlite`` is the store of one engine
directory, its schema built by ``sqlite_migrations``. Nothing outside this
package sees a store's connections or SQL.
"""
