"""``capy``: the command line of pulumi_capy.

Only ``--help`` and ``version`` exist so far; the commands of the self-hosted
server issue (serve, worker, projects, keys, backups, restore-points, restore,
jobs, previews, schema) arrive with it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pulumi_capy._version import __version__

EPILOG = """example:
  capy version        print the installed version
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capy",
        description="Database restore points and restores as code (pulumi_capy).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "version",
        help="print the installed version",
        description="Print the installed pulumi_capy version.",
        epilog="example:\n  capy version",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"pulumi-capy {__version__}")
        return 0
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
