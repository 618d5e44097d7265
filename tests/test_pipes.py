"""`srgan upscale - -o -`: an image read from standard input, written to standard output, and
the usage errors of streams. CPU only, offline."""

import io
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import png
from PIL import Image

from srgan_cli.cli import main


def upscale(*args, stdin: bytes | None = None):
    return CliRunner().invoke(main, ["upscale", *map(str, args)], input=stdin)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Relative names (-o x.png) land in the test's own folder."""
    monkeypatch.chdir(tmp_path)


def png_bytes(size=(5, 4), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_stdin_to_stdout_in_the_inputs_format(tiny_checkpoint):
    result = upscale("-", "-o", "-", "--model", tiny_checkpoint, stdin=png_bytes())
    assert result.exit_code == 0, result.stderr
    out = Image.open(io.BytesIO(result.stdout_bytes))
    assert (out.format, out.size) == ("PNG", (20, 16))
    assert result.stderr == ""


def test_stdin_to_a_file_and_a_file_to_stdout_in_another_format(tmp_path, tiny_checkpoint):
    result = upscale("-", "-o", tmp_path / "b.jpg", "--model", tiny_checkpoint,
                     stdin=png_bytes())
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "b.jpg").format == "JPEG" and result.stdout_bytes == b""
    result = upscale(tmp_path / "b.jpg", "-o", "-", "--format", "webp", "--model",
                     tiny_checkpoint)
    assert result.exit_code == 0, result.stderr
    out = Image.open(io.BytesIO(result.stdout_bytes))
    assert (out.format, out.size) == ("WEBP", (80, 64))
    again = upscale("-", "-o", tmp_path / "b.jpg", "--model", tiny_checkpoint,
                    stdin=png_bytes())
    assert again.exit_code == 1 and "exists (use --overwrite" in again.stderr


def test_bad_stdin_is_one_line_and_nothing_on_stdout(tiny_checkpoint):
    result = upscale("-", "-o", "-", "--model", tiny_checkpoint, stdin=b"not an image")
    assert result.exit_code == 1
    assert result.stderr.strip() == "-: not an image file (or an unsupported format)"
    assert result.stdout_bytes == b""


@pytest.mark.parametrize("args, message", [
    (["-", "IN"], "must be the only input"),
    (["FOLDER", "-o", "-"], "exactly one input file"),
    (["IN", "IN", "-o", "-"], "exactly one input file"),
    (["-"], "needs -o FILE"),
    (["-", "-o", "FOLDER"], "not a folder"),
    (["-", "-o", "-", "--json"], "both write to standard output"),
    (["-", "-o", "x.png", "--format", "jpg"], "name different formats"),
])
def test_stream_usage_errors(tmp_path, tiny_checkpoint, args, message):
    png(tmp_path / "folder" / "in.png")
    names = {"IN": tmp_path / "folder" / "in.png", "FOLDER": tmp_path / "folder"}
    result = upscale(*[names.get(a, a) for a in args], "--model", tiny_checkpoint,
                     stdin=png_bytes())
    assert result.exit_code == 2 and message in result.stderr
    assert result.stdout_bytes == b""


def test_shell_pipe_through_a_real_process(tmp_path, tiny_checkpoint):
    """srgan upscale - -o - < a.png > b.png, as a shell runs it."""
    done = subprocess.run([sys.executable, "-m", "srgan_cli", "upscale", "-", "-o", "-",
                           "--model", str(tiny_checkpoint)], input=png_bytes((3, 2)),
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert Image.open(io.BytesIO(done.stdout)).size == (12, 8)
