"""Real-world files through `srgan upscale`: every mode and format, bad input, interruptions."""

import json
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import make_generator, run_cli
from PIL import Image
from test_images import exif_bytes, huge_png_header, make_corpus

from srgan_cli.checkpoints import save_checkpoint
from srgan_cli.cli import main
from srgan_cli.images import read_image
from srgan_cli.models import GeneratorConfig


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def test_corpus_through_the_cli(tmp_path, tiny_checkpoint):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    expected = make_corpus(corpus)
    Image.new("RGB", (6, 4), "white").save(corpus / "phone.jpg", exif=exif_bytes(6))
    (corpus / "zero.png").write_bytes(b"")
    (corpus / "fake.jpg").write_text("hello")
    (corpus / "dir.png").mkdir()
    bomb = huge_png_header(tmp_path)
    bomb.rename(corpus / "bomb.png")

    result = upscale(corpus, "-o", tmp_path / "out", "--model", tiny_checkpoint, "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    by_name = {f["input"].rsplit("/", 1)[-1]: f for f in summary["files"]}
    reasons = {name: by_name[name]["reason"] for name in
               ("zero.png", "fake.jpg", "dir.png", "bomb.png")}
    assert "empty" in reasons["zero.png"]
    assert "not an image" in reasons["fake.jpg"]
    assert "directory" in reasons["dir.png"]
    assert "--max-pixels" in reasons["bomb.png"]
    assert summary["failed"] == 4

    for name, props in expected.items():
        src = read_image(corpus / name)
        out_path = tmp_path / "out" / name.replace(".gif", ".png")  # GIF is read, not written
        assert by_name[name]["status"] == "written", (name, by_name[name])
        out = read_image(out_path)
        assert out.size == (src.size[0] * 4, src.size[1] * 4), name
        assert out.bit_depth == props["bit_depth"], name
        assert (out.alpha is not None) == props["alpha"], name
        assert out.grayscale == props["grayscale"], name
    phone = Image.open(tmp_path / "out" / "phone.jpg")
    assert phone.size == (16, 24), "rotated phone photo written upright"
    assert phone.getexif().get(0x0112, 1) == 1


def test_rerun_beside_inputs_does_not_upscale_earlier_outputs(tmp_path, tiny_checkpoint):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (5, 5), "red").save(tmp_path / name)
    assert upscale(tmp_path, "--model", tiny_checkpoint, "-q").exit_code == 0
    again = upscale(tmp_path, "--model", tiny_checkpoint, "--skip-existing", "--json")
    assert again.exit_code == 0
    summary = json.loads(again.stdout)
    assert (summary["written"], summary["skipped"], summary["failed"]) == (0, 4, 0)
    reasons = {f["input"].rsplit("/", 1)[-1]: f["reason"] for f in summary["files"]}
    assert reasons["a_x4.png"] == "earlier result of a.* beside it"  # listed, not upscaled
    assert reasons["a.png"] == "output exists"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "a_x4.png", "b.png",
                                                              "b_x4.png"]


def test_never_overwrites_inputs_and_reports_clashes(tmp_path, tiny_checkpoint):
    Image.new("RGB", (5, 5), "red").save(tmp_path / "a.png")
    Image.new("RGB", (5, 5), "blue").save(tmp_path / "a.jpg")
    same = upscale(tmp_path, "-o", tmp_path, "--suffix", "", "--model", tiny_checkpoint,
                   "--overwrite")
    assert same.exit_code == 1
    assert "would overwrite an input file" in same.output
    assert Image.open(tmp_path / "a.png").size == (5, 5)
    clash = upscale(tmp_path, "-o", tmp_path / "out", "--format", "png", "--model",
                    tiny_checkpoint)
    assert clash.exit_code == 1
    assert "is also the output of" in clash.output
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_batch_leaves_no_partial_output_and_resumes(tmp_path, sig):
    # a model slow enough on 48x48 inputs that the batch is still running when killed
    model = save_checkpoint(make_generator(GeneratorConfig(num_blocks=4, channels=32)),
                            tmp_path / "slow.safetensors")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(40):
        Image.new("RGB", (48, 48), (i * 6, 100, 200)).save(src / f"img{i:02d}.png")
    args = [sys.executable, "-m", "srgan_cli", "upscale", str(src), "-o", str(out),
            "--model", str(model), "--device", "cpu", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 2:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr  # 130 Ctrl-C, 143 SIGTERM
    assert "Traceback" not in stderr
    done = sorted(out.glob("*.png"))
    assert 2 <= len(done) < 40, "killed mid-batch"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    for path in done:
        assert Image.open(path).size == (192, 192)  # every output is complete
        Image.open(path).load()
    resumed = run_cli("upscale", str(src), "-o", str(out), "--model", str(model), "--device",
                      "cpu", "--skip-existing", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == len(done) and summary["written"] == 40 - len(done)
