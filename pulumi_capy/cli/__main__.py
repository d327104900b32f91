"""``python -m pulumi_capy.cli``."""

from pulumi_capy.cli.main import main

main()
