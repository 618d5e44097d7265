"""A PNG of training curves drawn with Pillow: one panel per quantity, step on the x axis.

``plot_curves({"loss (log10)": {"pixel": [(step, value), ...], ...}, "PSNR-Y (dB)": ...}, path)``
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Series = list[tuple[float, float]]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
WIDTH, PANEL_HEIGHT = 900, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 20, 28, 30


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def draw_panel(draw: ImageDraw.ImageDraw, top: int, title: str, curves: dict[str, Series],
               font: ImageFont.ImageFont) -> None:
    """Axes, ticks, one polyline per series and a legend, in the band starting at ``top``."""
    x0, x1 = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    y0, y1 = top + MARGIN_TOP, top + PANEL_HEIGHT - MARGIN_BOTTOM
    points = [p for series in curves.values() for p in series]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if x_high == x_low:
        x_high = x_low + 1
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    pad = (y_high - y_low) * 0.05
    y_low, y_high = y_low - pad, y_high + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x0 + (x - x_low) / (x_high - x_low) * (x1 - x0),
                y1 - (y - y_low) / (y_high - y_low) * (y1 - y0))

    draw.text((x0, top + 8), title, fill="black", font=font)
    for y in nice_ticks(y_low, y_high):
        _, py = to_px(x_low, y)
        draw.line([(x0, py), (x1, py)], fill="#e6e6e6")
        draw.text((x0 - 6, py), f"{y:.4g}", fill="#444444", font=font, anchor="rm")
    for x in nice_ticks(x_low, x_high, 8):
        px, _ = to_px(x, y_low)
        draw.line([(px, y1), (px, y1 + 4)], fill="black")
        draw.text((px, y1 + 6), f"{x:g}", fill="#444444", font=font, anchor="mt")
    draw.rectangle([x0, y0, x1, y1], outline="black")
    draw.text((x0 - 6, y1 + 6), "step", fill="#444444", font=font, anchor="rt")
    legend_x = x1 - 10
    for colour, (name, series) in zip(COLOURS * 3, curves.items(), strict=False):
        pixels = [to_px(x, y) for x, y in series]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels if len(pixels) < 30 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((legend_x, top + 8), name, fill=colour, font=font, anchor="ra")
        legend_x -= int(draw.textlength(name, font=font)) + 16


def plot_curves(panels: dict[str, dict[str, Series]], path: str | os.PathLike) -> Path | None:
    """Draw each non-empty panel (title -> {series name -> [(step, value)]}) into a PNG."""
    panels = {title: {name: s for name, s in curves.items() if s}
              for title, curves in panels.items()}
    panels = {title: curves for title, curves in panels.items() if curves}
    if not panels:
        return None
    image = Image.new("RGB", (WIDTH, PANEL_HEIGHT * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for i, (title, curves) in enumerate(panels.items()):
        draw_panel(draw, i * PANEL_HEIGHT, title, curves, font)
    path = Path(path)
    image.save(path)
    return path
