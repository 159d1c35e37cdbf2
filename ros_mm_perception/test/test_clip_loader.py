"""load_clip: real open_clip loading, and clear errors for every way a model can be missing."""

import pytest
import torch

from ros_mm_perception.core.models.clip_model import load_clip
from ros_mm_perception.core.errors import ModelNotFoundError, UserError


def test_tiny_model_loads_on_cpu_fp32(tiny_clip_dir):
    clip = load_clip(str(tiny_clip_dir), device="auto" if not torch.cuda.is_available() else "cpu")
    assert clip.device.type == "cpu" and clip.dtype == torch.float32
    assert clip.image_size == 32
    assert all(not p.requires_grad for p in clip.model.parameters())
    assert load_clip(f"local-dir:{tiny_clip_dir}", device="cpu").image_size == 32


def test_missing_weights_give_actionable_error():
    # conftest.py sets HF_HUB_OFFLINE=1, as a robot without network access would.
    with pytest.raises(ModelNotFoundError,
                       match="not in the local cache.*create_model_and_transforms"):
        load_clip("ViT-B-32", "openai", device="cpu")


@pytest.mark.parametrize("name, pretrained, error, message", [
    ("ViT-B-32", "", UserError, "no pretrained weights given.*openai"),
    ("ViT-B-32", "no_such_tag", UserError, "unknown pretrained tag"),
    ("ViT-B-32", "/nonexistent/ckpt.pt", ModelNotFoundError, "does not exist"),
    ("NoSuchNet", "x", UserError, "unknown open_clip model"),
    ("/nonexistent/model_dir", "", ModelNotFoundError, "does not exist"),
])
def test_bad_names(name, pretrained, error, message):
    with pytest.raises(error, match=message):
        load_clip(name, pretrained, device="cpu")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no open_clip_config.json"):
        load_clip(str(tmp_path), device="cpu")


def test_corrupt_weights_are_a_clear_error(tiny_clip_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken
     / "open_clip_config.json").write_text((tiny_clip_dir / "open_clip_config.json").read_text())
    (broken / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelNotFoundError, match="cannot load CLIP weights"):
        load_clip(str(broken), device="cpu")


def test_bad_device_and_precision(tiny_clip_dir):
    with pytest.raises(UserError, match="precision"):
        load_clip(str(tiny_clip_dir), device="cpu", precision="int3")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            load_clip(str(tiny_clip_dir), device="cuda")


def test_default_is_the_embedded_model_folder():
    from ros_mm_perception.core.models.embedded import embedded_clip_dir

    clip = load_clip(device="cpu")
    assert clip.name == str(embedded_clip_dir())
