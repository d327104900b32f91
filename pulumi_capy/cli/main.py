"""``capy``: the command line of pulumi_capy.

Only ``--help``, ``version`` and ``schema`` exist so far; the commands of the
self-hosted server issue (serve, worker, projects, keys, backups,
restore-points, restore, jobs, previews) arrive with it.
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
    schema = commands.add_parser(
        "schema",
        help="print the Pulumi package schema (schema.json)",
        description="Print the Pulumi package schema of capy, generated from the code.",
        epilog="example:\n  capy schema --output schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.add_argument("--output", "-o", help="write to this file instead of stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"pulumi-capy {__version__}")
        return 0
    if args.command == "schema":
        from pulumi_capy.schema import render

        text = render()
        if args.output:
            with open(args.output, "w", encoding="utf-8") as handle:
                handle.write(text)
        else:
            sys.stdout.write(text)
        return 0
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
