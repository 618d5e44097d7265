"""Draw assets/sample.png: a synthetic 160x120 test scene (shapes, stripes, text, texture).

Made by this script so the sample carries no licence questions; re-run it to regenerate:
    uv run python assets/make_sample.py
"""

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFilter


def make_sample(path: Path) -> None:
    width, height = 160, 120
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    sky = torch.stack([0.35 + 0.3 * y, 0.55 + 0.25 * y, 0.9 - 0.2 * y])  # a vertical gradient
    grain = 0.04 * torch.randn(3, height, width, generator=g)  # film-like grain
    rgb = ((sky + grain).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 85, width, height), fill=(70, 110, 45))  # grass
    for i in range(0, width, 6):  # fence stripes: fine detail that bicubic blurs
        draw.line((i, 70, i, 95), fill=(235, 225, 200), width=2)
    draw.line((0, 75, width, 75), fill=(120, 80, 50), width=2)
    draw.ellipse((110, 10, 145, 45), fill=(250, 210, 60), outline=(200, 120, 20), width=2)
    draw.polygon([(20, 70), (45, 35), (70, 70)], fill=(150, 60, 50), outline=(60, 20, 20))
    draw.text((8, 100), "srgan 4x", fill=(255, 255, 255))
    im = im.filter(ImageFilter.SMOOTH_MORE)
    im.save(path, optimize=True)


if __name__ == "__main__":
    make_sample(Path(__file__).with_name("sample.png"))
