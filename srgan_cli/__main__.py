"""``python -m srgan_cli`` and the ``srgan`` console script."""

import signal
import sys


def run() -> None:
    """Start the CLI; Ctrl-C while torch and friends are still importing exits with one
    line and status 130, like Ctrl-C anywhere later (``cli.friendly_errors``).

    SIGINT is held back while the modules import, so a Ctrl-C can never leave a third-party
    module half-imported (which would fail later with a confusing error); it is delivered
    as soon as the imports are done.
    """
    can_block = hasattr(signal, "pthread_sigmask")
    try:
        if can_block:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            from .cli import main
        finally:
            if can_block:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
