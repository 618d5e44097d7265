"""What a person sees while training runs: a live progress line and messages (Ctrl-C and
SIGTERM are handled by ``srgan_cli.signals``)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .speed import Speed


class Display:
    """The live progress line (step, speed, ETA, losses, last validation) and messages."""

    def __init__(self, quiet: bool, console: Console | None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, disable=quiet,
        )
        self.task = self.progress.add_task("", total=1, rate="", info="", visible=False)
        self.losses, self.val = "", ""

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def phase(self, name: str, step: int, end: int) -> None:
        """Show phase ``name``: ``step`` of ``end`` steps done."""
        self.progress.reset(self.task, total=end, completed=step, description=name, visible=True)

    def update(self, step: int, speed: Speed | None = None, losses: dict | None = None,
               val: dict | None = None) -> None:
        if losses is not None:
            self.losses = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
        if val is not None:
            self.val = "val " + " ".join(f"{k} {v:.4g}" for k, v in val.items())
        fields = {"info": f"{self.losses}  {self.val}".strip()}
        if speed is not None:
            fields["rate"] = speed_text(speed)
        self.progress.update(self.task, completed=step, **fields)

    def message(self, text: str) -> None:
        if not self.quiet:
            self.progress.console.print(text, highlight=False, soft_wrap=True)


def speed_text(speed: Speed) -> str:
    """The progress line's speed: steps/s, samples/s and the share of time spent on data."""
    return (f"{speed.it_s:.2f} it/s {speed.samples_s:.1f} samples/s "
            f"data {speed.data_wait:.0%}")
