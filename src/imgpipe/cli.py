"""The `imgpipe` command: one sub-command per job; each only wires a module's main()."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("consumer", help="run the SQS -> thumbnail -> S3 consumer")
    args, rest = parser.parse_known_args(argv)

    if args.command == "consumer":
        from imgpipe import consumer

        return consumer.main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
