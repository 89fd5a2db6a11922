"""Command line: ``python -m workbench {summary,download,prepare} ...``.

python -m workbench summary                       # the offline phantom dataset
python -m workbench summary data/pneumoniamnist.npz ../shared/data/pneumoniamnist.npz
python -m workbench download breastmnist          # into data/, MD5-checked
python -m workbench prepare                       # generate the phantom volumes now
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run one subcommand; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the workbench does")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    summary = commands.add_parser("summary", help="print sizes, class balance and image shape of datasets")
    summary.add_argument(
        "datasets", nargs="*", default=["phantom"], help="'phantom', a MedMNIST name, .npz or folder"
    )
    summary.set_defaults(run=_summary)

    fetch = commands.add_parser("download", help="download a MedMNIST dataset into data/ (MD5-checked)")
    fetch.add_argument("name", help="e.g. pneumoniamnist, breastmnist, dermamnist")
    fetch.set_defaults(run=_download)

    prepare = commands.add_parser("prepare", help="generate the offline phantom dataset if it is missing")
    prepare.set_defaults(run=_prepare)
    return parser


def _summary(args) -> int:
    from workbench.sources import load_dataset

    for spec in args.datasets:
        print(load_dataset(spec).summary())
    return 0


def _download(args) -> int:
    from workbench.medmnist import download
    from workbench.paths import data_dir

    print(f"saved {download(args.name, data_dir())}")
    return 0


def _prepare(args) -> int:
    from workbench.paths import data_dir
    from workbench.phantom import ensure_phantoms

    print(f"phantom volumes ready in {ensure_phantoms(data_dir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
