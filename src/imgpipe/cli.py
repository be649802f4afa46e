"""The `imgpipe` command: one sub-command per job; each only wires a module's function."""

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgpipe", description="imgpipe: S3 image thumbnails")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("consumer", help="run the SQS -> thumbnail -> S3 consumer")
    commands.add_parser("emulator", help="run the local AWS emulator with a Lambda runtime")
    up = commands.add_parser("upload", help="upload images under raw-images/")
    up.add_argument("files", nargs="+", metavar="FILE")
    up.add_argument("--wait", action="store_true", help="wait for each thumbnail; print latency")
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait (default 120)")
    commands.add_parser("status", help="queue depth, in flight, dead letters, thumbnails, alarms")
    logs = commands.add_parser("logs", help="the Lambda's or the consumer's CloudWatch logs")
    logs.add_argument("which", choices=["lambda", "consumer"])
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--since", type=int, default=60, metavar="MINUTES")
    dlq = commands.add_parser("dlq", help="list or redrive dead letters")
    dlq.add_argument("action", choices=["list", "redrive"])
    args, rest = parser.parse_known_args(argv)

    if args.command == "consumer":
        from imgpipe import consumer

        return consumer.main(rest)
    if args.command == "emulator":
        from imgpipe.local import emulator

        return emulator.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    from imgpipe import admin

    admin.load_env_files()
    dep = admin.Deployment(dict(os.environ))
    try:
        if args.command == "upload":
            return admin.upload(dep, args.files, args.wait, args.timeout)
        if args.command == "status":
            return admin.status(dep)
        if args.command == "logs":
            return admin.logs(dep, args.which, args.follow, args.since)
        return admin.dlq_list(dep) if args.action == "list" else admin.dlq_redrive(dep)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for an operator, not a traceback
        print(f"imgpipe {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
