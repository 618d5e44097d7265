import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from conftest import invoke, make_generator, one_line_error, png, run_cli
from safetensors.torch import save_file

from srgan_cli import checkpoints
from srgan_cli.checkpoints import (
    RegisteredModel,
    checkpoint_metadata,
    load_generator,
    load_model,
    read_metadata,
    resolve_model,
    save_checkpoint,
    save_safetensors,
    sha256_file,
)
from srgan_cli.errors import CheckpointError
from srgan_cli.models import GeneratorConfig


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    cfg = GeneratorConfig(scale=2, num_blocks=2, channels=8)
    gen = make_generator(cfg)
    path = save_checkpoint(gen, tmp_path / "g.safetensors", training={"steps": 7, "data": ["x"]})
    meta = read_metadata(path)
    assert meta["format"] == "srgan-checkpoint" and meta["format_version"] == "1"
    assert meta["architecture"] == "srresnet" and meta["scale"] == "2"
    assert json.loads(meta["config"]) == cfg.to_dict()
    assert json.loads(meta["training"]) == {"steps": 7, "data": ["x"]}
    loaded = load_generator(path)
    assert loaded.config == cfg and not loaded.training
    for (k, a), (_, b) in zip(gen.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        assert torch.equal(gen(x), loaded(x))
    assert not list(tmp_path.glob("*.tmp")), "atomic write left a temp file"


def test_file_without_metadata_is_rebuilt_from_shapes(tmp_path):
    cfg = GeneratorConfig(scale=8, num_blocks=3, channels=8)
    path = tmp_path / "converted.safetensors"
    save_file(make_generator(cfg).state_dict(), str(path))
    assert load_generator(path).config == cfg


@pytest.mark.parametrize("name", ["model.pth", "model.pt", "model.ckpt"])
def test_pickles_are_refused_with_a_reason(tmp_path, name):
    path = tmp_path / name
    torch.save(make_generator().state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle.*run arbitrary code.*safetensors"):
        load_model(str(path))


def test_pickle_disguised_as_safetensors_is_refused(tmp_path):
    path = tmp_path / "sneaky.safetensors"
    torch.save({"a": torch.zeros(1)}, path)  # a zip-based pickle
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(str(path))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="no model named '.*nope.safetensors': not a file"):
        load_model(str(tmp_path / "nope.safetensors"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(str(garbage))


def test_mismatched_weights_are_reported(tmp_path):
    path = save_checkpoint(make_generator(), tmp_path / "g.safetensors")
    meta = read_metadata(path)
    meta["config"] = json.dumps(GeneratorConfig(num_blocks=5, channels=8).to_dict())
    from safetensors.torch import load_file
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="do not match its architecture"):
        load_model(str(path))


def test_registry_name_without_weights_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoints, "weights_dir", lambda: tmp_path)
    with pytest.raises(CheckpointError, match="model 'srgan-x4' is not available.*missing"):
        load_model("srgan-x4")


def test_registry_checksum_is_verified(monkeypatch, tmp_path):
    path = save_checkpoint(make_generator(), tmp_path / "named.safetensors")
    monkeypatch.setattr(checkpoints, "weights_dir", lambda: tmp_path)
    good = {"named": RegisteredModel("named", path.name, sha256_file(path), "test")}
    assert resolve_model("named", registry=good) == path
    bad = {"named": RegisteredModel("named", path.name, "0" * 64, "test")}
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        resolve_model("named", registry=bad)


def test_weights_dir_is_the_checkout_folder_in_a_source_tree():
    assert checkpoints.weights_dir() == Path(checkpoints.__file__).resolve().parents[1] / "weights"


@pytest.mark.parametrize("metadata, message", [
    ({"config": json.dumps({"scale": 3, "num_blocks": 1, "channels": 8})}, "scale must be"),
    ({"config": "{not json"}, "bad checkpoint metadata"),
    ({"config": json.dumps({"scale": 4, "num_blocks": 1, "channels": -8})}, "invalid"),
    ({"config": "[1, 2]"}, "not a JSON object"),
    ({"format_version": "one"}, "not a number"),
])
def test_bad_checkpoint_metadata_is_one_line(tmp_path, metadata, message):
    gen = make_generator()
    meta = {**checkpoint_metadata(GeneratorConfig(num_blocks=1, channels=8)), **metadata}
    model = save_safetensors(gen.state_dict(), tmp_path / "bad.safetensors", meta)
    result = invoke("upscale", png(tmp_path / "a.png"), "--model", model)
    one_line_error(result)
    assert message in result.output and "bad.safetensors" in result.output


# ----------------------------------------------------------------- the Hub, offline


class FakeHub(BaseHTTPRequestHandler):
    """Answers like huggingface.co's /{repo}/resolve/{rev}/{file} for the files it holds."""

    files: dict[str, bytes] = {}

    def _answer(self, with_body: bool) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)

    def do_GET(self):  # noqa: N802
        self._answer(True)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tiny_checkpoint):
    FakeHub.files = {"/me/sr/resolve/main/tiny.safetensors": tiny_checkpoint.read_bytes()}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_hub_download_checksum_and_missing_file(fake_hub, tiny_checkpoint, tmp_path):
    env = {"HF_ENDPOINT": fake_hub, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    good = sha256_file(tiny_checkpoint)
    script = (
        "import sys\n"
        "from srgan_cli.checkpoints import load_model, resolve_model\n"
        "from srgan_cli.errors import CheckpointError\n"
        f"print(load_model('hf://me/sr/tiny.safetensors', sha256='{good}').config)\n"
        "print(resolve_model('hf://me/sr/tiny.safetensors@main'))\n"
        "for spec, sha in [('hf://me/sr/tiny.safetensors', '0' * 64),\n"
        "                  ('hf://me/sr/missing.safetensors', None)]:\n"
        "    try:\n"
        "        load_model(spec, sha256=sha)\n"
        "    except CheckpointError as e:\n"
        "        print('ERR', e)\n"
    )
    import os
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "GeneratorConfig(scale=4, num_blocks=1, channels=8" in lines[0]
    assert str(tmp_path / "hf") in lines[1]  # downloaded into the normal HF cache
    assert lines[2].startswith("ERR hf://me/sr/tiny.safetensors: checksum mismatch")
    assert lines[3].startswith("ERR hf://me/sr/missing.safetensors: no file 'missing.safetensors'")


def test_cli_upscale_with_hub_model(fake_hub, tmp_path):
    from PIL import Image
    Image.new("RGB", (9, 7), (200, 30, 40)).save(tmp_path / "in.png")
    proc = run_cli("upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"),
                   "--model", "hf://me/sr/tiny.safetensors", "--quiet",
                   env={"HF_ENDPOINT": fake_hub, "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "out.png").size == (36, 28)


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_offline_says_so(tmp_path, env):
    proc = run_cli("upscale", str(png(tmp_path / "a.png")), "--model",
                   "hf://me/sr/tiny.safetensors", env={"HF_HOME": str(tmp_path / "hf"), **env})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "cannot reach the Hugging Face Hub and the file is not in the local cache" in (
        proc.stderr)


def test_hub_pickle_is_refused_before_the_network(tmp_path):
    with pytest.raises(CheckpointError, match="it is a Python pickle"):
        resolve_model("hf://nobody/nothing/model.pth")  # no network: refused by its name


def test_weights_are_found_from_an_installed_wheel(tmp_path):
    """The wheel carries weights/ as srgan_cli/weights/, and weights_dir() finds it there."""
    import shutil
    import subprocess
    import sys
    import zipfile

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build the wheel")
    root = Path(checkpoints.__file__).resolve().parents[1]
    build = subprocess.run([uv, "build", "--wheel", "--offline", "-q", "-o", str(tmp_path / "dist"),
                            str(root)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "offline" in build.stderr.lower():
        pytest.skip("the build backend is not in uv's cache (offline)")
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "srgan_cli" / "weights").is_dir()
    code = "from srgan_cli.checkpoints import weights_dir; print(weights_dir())"
    probe = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env={"PYTHONPATH": str(site), "PATH": ""}, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(site / "srgan_cli" / "weights")
    for name in ("srresnet-x4", "srgan-x4"):  # the shipped weights, not only the folder
        assert (site / "srgan_cli" / "weights" / f"{name}.safetensors").is_file()
    # the default model upscales offline from the wheel, with no checkout around
    from PIL import Image

    Image.new("RGB", (12, 10), (90, 140, 200)).save(tmp_path / "in.png")
    run = subprocess.run(
        [sys.executable, "-m", "srgan_cli", "upscale", "in.png", "-o", "out.png", "-q"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={"PYTHONPATH": str(site), "PATH": "", "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "out.png").size == (48, 40)
