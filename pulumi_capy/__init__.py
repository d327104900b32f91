"""pulumi_capy: database restore points and restores as Pulumi resources.

The public surface grows with the resources; ``pulumi_capy.api`` holds the
CapyDB contract (models, errors, the ``Backend`` protocol, the HTTP client).
"""

from pulumi_capy._version import __version__

__all__ = ["__version__"]
