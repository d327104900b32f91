"""The ``capy`` command line."""
