"""Compare this checkout's PNG output with an older ``srgan_cli/images.py``, side by side.

    git show f59aac9:srgan_cli/images.py > /tmp/old_images.py
    uv run --frozen python scripts/png_writer_compare.py /tmp/old_images.py IMAGE.png ...

Each image is resized 8x with Lanczos (about what a x4 upscale of a 2x upscale looks like),
then written by both versions' ``write_image`` at the default PNG level, as 8-bit and as
16-bit (the same pixels x257). Prints, per image and bit depth: file sizes, write times
(wall-clock, one run each), their ratios new/old, and whether the decoded pixels are equal.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan_cli import images as new


def load_old(path: Path):
    """The old images module, imported under the name ``old_images``."""
    spec = importlib.util.spec_from_file_location("old_images", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_images"] = module
    spec.loader.exec_module(module)
    return module


def write(module, pixels: torch.Tensor, bits: int, path: Path) -> tuple[float, int]:
    """Seconds and bytes of one write_image call."""
    start = time.perf_counter()
    module.write_image(module.Picture(rgb=pixels, bit_depth=bits), path)
    return time.perf_counter() - start, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="an older srgan_cli/images.py")
    parser.add_argument("images", type=Path, nargs="+")
    args = parser.parse_args()
    old = load_old(args.old)
    with tempfile.TemporaryDirectory() as folder:
        before, after = Path(folder) / "old.png", Path(folder) / "new.png"
        for source in args.images:
            image = Image.open(source).convert("RGB")
            image = image.resize((image.width * 8, image.height * 8), Image.LANCZOS)
            rgb8 = torch.from_numpy(np.array(image)).permute(2, 0, 1)
            rgb16 = (rgb8.to(torch.int32) * 257).to(torch.uint16)
            for bits, pixels in ((8, rgb8), (16, rgb16)):
                old_s, old_b = write(old, pixels, bits, before)
                new_s, new_b = write(new, pixels, bits, after)
                same = torch.equal(new.read_image(before).rgb, new.read_image(after).rgb)
                print(f"{source.stem} {image.width}x{image.height} {bits}-bit: "
                      f"old {old_b / 1e6:.2f} MB {old_s:.2f} s, new {new_b / 1e6:.2f} MB "
                      f"{new_s:.2f} s; size new/old {new_b / old_b:.4f}, time new/old "
                      f"{new_s / old_s:.2f}; decoded pixels equal: {same}")


if __name__ == "__main__":
    main()
