"""``python -m srgan_cli`` and the ``srgan`` console script."""

import sys


def run() -> None:
    """Start the CLI; Ctrl-C while torch and friends are still importing exits with one
    line and status 130, like Ctrl-C anywhere later (``cli.friendly_errors``)."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
