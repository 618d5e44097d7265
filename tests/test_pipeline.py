"""Issues 12 and 21: the pipelined batch loop (readers, device, writers; limits scaled with
the cores under a memory budget) and PNG compression levels."""

import threading
import time

import numpy as np
import pytest
import torch
from conftest import make_generator
from PIL import Image

from srgan_cli import images, memory
from srgan_cli.images import Picture, read_image, write_image
from srgan_cli.upscale import PipelineLimits, Upscaler, upscale_batch


def make_folder(folder, n=6):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        size = (9 + i, 12 - i)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png")
    Image.fromarray(rng.integers(0, 256, (7, 5, 4), dtype=np.uint8), "RGBA").save(
        folder / "img3_alpha.png")
    (folder / "img2_bad.png").write_text("not a png")
    return sorted(folder.iterdir())


def run(tmp_path, name, pipeline, **kwargs):
    inputs = sorted((tmp_path / "in").iterdir())
    jobs = [(p, tmp_path / name / p.name) for p in inputs]
    up = Upscaler(make_generator(), device="cpu", precision="fp32", tile=8)
    done = []
    summary = upscale_batch(up, jobs, pipeline=pipeline, on_done=done.append, **kwargs)
    return jobs, summary, done


def test_pipeline_is_bit_identical_to_serial_and_keeps_input_order(tmp_path):
    make_folder(tmp_path / "in")
    jobs, serial, _ = run(tmp_path, "serial", pipeline=False)
    jobs, piped, done = run(tmp_path, "piped", pipeline=True)
    assert [r.src for r in piped.results] == [s for s, _ in jobs]  # input order
    assert [r.src for r in done] == [s for s, _ in jobs]  # progress: one call per file
    assert [r.status for r in piped.results] == [r.status for r in serial.results]
    bad = next(r for r in piped.results if r.src.name == "img2_bad.png")
    assert bad.status == "failed" and "not an image" in bad.reason
    written = [r for r in piped.results if r.status == "written"]
    assert len(written) == len(jobs) - 1
    for result in written:
        twin = tmp_path / "serial" / result.dst.name
        assert result.dst.read_bytes() == twin.read_bytes(), result.dst.name


def test_pipeline_skips_existing_outputs(tmp_path):
    make_folder(tmp_path / "in")
    run(tmp_path, "out", pipeline=True)
    (tmp_path / "out" / "img1.png").unlink()
    _, again, _ = run(tmp_path, "out", pipeline=True, skip_existing=True)
    statuses = {r.src.name: r.status for r in again.results}
    assert statuses["img1.png"] == "written" and statuses["img0.png"] == "skipped"


def test_interrupt_mid_batch_ends_the_threads_and_leaves_no_temporaries(tmp_path):
    make_folder(tmp_path / "in", n=8)
    inputs = sorted((tmp_path / "in").iterdir())
    jobs = [(p, tmp_path / "out" / p.name) for p in inputs]
    up = Upscaler(make_generator(), device="cpu", precision="fp32", tile=8)

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_batch(up, jobs, on_done=stop)
    assert not [t for t in threading.enumerate() if t.name.startswith("srgan-")]
    out = list((tmp_path / "out").iterdir())
    assert out and len(out) < len(jobs)
    assert not [p for p in out if p.name.startswith(".")], "temporary files left"
    for path in out:
        Image.open(path).load()  # every file that exists is complete


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_compression_levels_change_size_not_pixels(tmp_path, bit_depth):
    smooth = torch.linspace(0, 1, 64).repeat(3, 48, 1)
    picture = Picture(rgb=smooth, bit_depth=bit_depth)
    sizes = {}
    for level in (0, 1, 9):
        write_image(picture, tmp_path / f"l{level}.png", png_compression=level)
        sizes[level] = (tmp_path / f"l{level}.png").stat().st_size
        assert torch.equal(read_image(tmp_path / f"l{level}.png").rgb,
                           read_image(tmp_path / "l0.png").rgb)
    assert sizes[0] > sizes[1] >= sizes[9]


def test_integer_pictures_write_like_float_ones(tmp_path):
    rgb = torch.rand(3, 6, 5)
    alpha = torch.rand(1, 6, 5)
    for depth, dtype, top in ((8, torch.uint8, 255), (16, torch.uint16, 65535)):
        as_float = Picture(rgb=rgb, alpha=alpha, bit_depth=depth)
        as_int = Picture(rgb=(rgb * top).round().to(dtype), alpha=(alpha * top).round().to(dtype),
                         bit_depth=depth)
        write_image(as_float, tmp_path / "f.png")
        write_image(as_int, tmp_path / "i.png")
        assert (tmp_path / "f.png").read_bytes() == (tmp_path / "i.png").read_bytes()


# ----------------------------------------------------------------- issue 21: limits and budget


def test_limits_scale_with_the_cores_within_a_quarter_of_the_ram():
    big, small = PipelineLimits.for_machine(cores=16), PipelineLimits.for_machine(cores=1)
    assert (big.readers, big.writers, big.deflate) == (4, 16, 16)
    assert (small.readers, small.writers, small.deflate) == (2, 2, 1)
    ram = memory.host_ram()
    assert 0 < big.memory <= memory.DEFAULT_HOST_BUDGET
    assert ram is None or big.memory <= ram // 4


def count_overlapping_writes(monkeypatch, hold: float = 0.0) -> list[int]:
    """Wrap ``images.write_image`` to count the writes running at once (each first waits
    ``hold`` seconds); returns ``[most]``, the largest count so far, which the test may reset."""
    active, most = [0], [0]
    lock = threading.Lock()
    real_write = images.write_image

    def counting_write(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(hold)
        try:
            return real_write(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(images, "write_image", counting_write)
    return most


def test_a_full_memory_budget_makes_outputs_wait_and_changes_no_byte(tmp_path, monkeypatch):
    """With a 1-byte budget only one output may be held (finished, waiting or in writing):
    writes never overlap, whatever the threads. The files equal those of 1 and 4 writers."""
    make_folder(tmp_path / "in")
    most = count_overlapping_writes(monkeypatch)
    roomy = {"many": PipelineLimits(readers=3, writers=4, deflate=3, memory=1 << 30),
             "one": PipelineLimits(readers=1, writers=1, deflate=1, memory=1 << 30)}
    for name, limits in roomy.items():
        run(tmp_path, name, pipeline=True, limits=limits)
    assert most[0] >= 1
    most[0] = 0
    tight = PipelineLimits(readers=3, writers=4, deflate=3, memory=1)
    _, summary, _ = run(tmp_path, "tight", pipeline=True, limits=tight)
    assert most[0] == 1, "a full budget must serialise the writes"
    written = [r for r in summary.results if r.status == "written"]
    assert len(written) == 7  # all but the broken file
    for result in written:
        for name in roomy:
            twin = tmp_path / name / result.dst.name
            assert result.dst.read_bytes() == twin.read_bytes(), (name, result.dst.name)


def test_outputs_held_stay_within_the_budget(tmp_path, monkeypatch):
    """A budget of two of the largest outputs: never more than two writes at once (no three
    outputs fit), with eight writer threads."""
    make_folder(tmp_path / "in")
    inputs = sorted((tmp_path / "in").iterdir())
    up = Upscaler(make_generator(), device="cpu", precision="fp32", tile=8)
    most = count_overlapping_writes(monkeypatch, hold=0.05)  # until the main thread moved on
    largest = (10 * 4) * (11 * 4) * 3  # uint8 RGB output of the largest input (10 x 11 px)
    limits = PipelineLimits(readers=2, writers=8, deflate=1, memory=2 * largest)
    jobs = [(p, tmp_path / "out" / p.name) for p in inputs]
    summary = upscale_batch(up, jobs, limits=limits)
    assert summary.count("written") == 7
    assert 1 <= most[0] <= 2
