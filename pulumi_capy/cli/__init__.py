"""The ``capy`` command line (click): one module per command group, ``main`` the entry."""
