"""Published ViT encoders onto the bundle's ViT (bundle.networks.published): small reference models of each layout in
plain PyTorch (timm's names, DINOv2's with LayerScale, transformers' Dinov2 names), saved as published, converted,
and compared feature for feature with the original; the real ViT-S/16, ViT-B/16 and ViT-B/14 shapes map fully;
every refusal names the key."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from bundle.checkpoints import check_pretrained_recipe, load_pretrained, load_weights, read_recipe
from bundle.errors import UserError
from bundle.networks import MultiTaskNet
from bundle.networks.published import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    convert_published_vit,
    detect_layout,
    pi_resize_kernel,
)
from bundle.networks.vit import VIT_BACKBONES
from scripts.convert_weights import main as convert_main

TINY = {"hidden_size": 48, "mlp_dim": 96, "num_layers": 2, "num_heads": 3}


class RefBlock(nn.Module):
    """timm's / DINOv2's pre-norm block: its parameter names, its forward (LayerNorm eps 1e-6, exact GELU)."""

    def __init__(self, dim: int, heads: int, mlp: int, layer_scale: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        if layer_scale:
            self.ls1, self.ls2 = nn.Module(), nn.Module()
            self.ls1.gamma, self.ls2.gamma = nn.Parameter(torch.rand(dim) + 0.1), nn.Parameter(torch.rand(dim) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        h = self.attn.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        x = x + (h * self.ls1.gamma if hasattr(self, "ls1") else h)
        h = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        return x + (h * self.ls2.gamma if hasattr(self, "ls2") else h)


class RefViT(nn.Module):
    """A timm-style (patch 16, 14 x 14 positions) or DINOv2-style (patch 14, LayerScale, 37 x 37 positions, mask
    token) ViT with the published parameter names; ``forward`` takes the RGB image in [0, 1] and normalises it."""

    def __init__(self, dim: int, depth: int, heads: int, mlp: int, patch: int, grid: int, dinov2: bool) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, dim) * 0.5)
        if dinov2:
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList([RefBlock(dim, heads, mlp, dinov2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        if not dinov2:
            self.head = nn.Linear(dim, 1000)
        self.patch, self.grid = patch, grid
        self.mean, self.std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> normalised patch tokens (B, N, D) and class token (B, D) after the last block."""
        x = self.patch_embed.proj((rgb - self.mean) / self.std)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        pos = self.pos_embed[:, 1:]
        if (h, w) != (self.grid, self.grid):  # as transformers' Dinov2 interpolates: size-based bicubic
            pos = pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x + pos], 1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 1:], x[:, 0]


def reference(shape: dict, dinov2: bool = False, seed: int = 0) -> RefViT:
    torch.manual_seed(seed)
    patch, grid = (14, 37) if dinov2 else (16, 14)
    dims = shape["hidden_size"], shape["num_layers"], shape["num_heads"], shape["mlp_dim"]
    net = RefViT(*dims, patch=patch, grid=grid, dinov2=dinov2).eval()
    with torch.no_grad():  # LayerNorm affine parameters away from 1 and 0, so that a wrong mapping shows
        for name, p in net.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return net


def to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DINOv2's names -> transformers' Dinov2Model names (RAD-DINO's model.safetensors), q / k / v split."""
    out = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            n, rest = key.split(".", 2)[1:]
            base = f"encoder.layer.{n}."
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for name, part in zip(("query", "key", "value"), value.chunk(3)):
                    out[f"{base}attention.attention.{name}.{kind}"] = part.clone()
                continue
            rest = rest.replace("attn.proj.", "attention.output.dense.")
            rest = rest.replace("ls1.gamma", "layer_scale1.lambda1").replace("ls2.gamma", "layer_scale2.lambda1")
            out[base + rest] = value
        elif key.startswith("patch_embed.proj."):
            out[key.replace("patch_embed.proj.", "embeddings.patch_embeddings.projection.")] = value
        elif key.startswith("norm."):
            out[key.replace("norm.", "layernorm.")] = value
        else:
            out[{"pos_embed": "embeddings.position_embeddings"}.get(key, f"embeddings.{key}")] = value
    return out


def published_state(shape: dict, dinov2: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the published names and shapes, at a trainable scale (no forward needed): real sizes are
    cheap this way."""
    g = torch.Generator().manual_seed(seed)
    d, m, depth = shape["hidden_size"], shape["mlp_dim"], shape["num_layers"]
    patch, grid = (14, 37) if dinov2 else (16, 14)

    def rand(*size: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*size, generator=g) * scale

    state = {"cls_token": rand(1, 1, d), "pos_embed": rand(1, 1 + grid * grid, d)}
    state |= {"patch_embed.proj.weight": rand(d, 3, patch, patch), "patch_embed.proj.bias": rand(d)}
    linears = {"attn.qkv": (3 * d, d), "attn.proj": (d, d), "mlp.fc1": (m, d), "mlp.fc2": (d, m)}
    for n in range(depth):
        for name, (rows, cols) in linears.items():
            state[f"blocks.{n}.{name}.weight"], state[f"blocks.{n}.{name}.bias"] = rand(rows, cols), rand(rows)
        for name in ("norm1", "norm2"):
            state[f"blocks.{n}.{name}.weight"], state[f"blocks.{n}.{name}.bias"] = 1 + rand(d), rand(d)
        if dinov2:
            state[f"blocks.{n}.ls1.gamma"], state[f"blocks.{n}.ls2.gamma"] = 0.1 + rand(d), 0.1 + rand(d)
    state |= {"norm.weight": 1 + rand(d), "norm.bias": rand(d)}
    state |= {"mask_token": torch.zeros(1, d)} if dinov2 else {"head.weight": rand(1000, d), "head.bias": rand(1000)}
    return state


@pytest.fixture
def tiny(monkeypatch) -> dict:
    """A test-only ViT backbone (48 wide, 2 blocks), so that features can be compared in milliseconds."""
    monkeypatch.setitem(VIT_BACKBONES, "vit_tiny_test", TINY)
    return TINY


def converted(weights: dict, backbone: str, pool: str) -> nn.Module:
    net = MultiTaskNet(num_classes=1, backbone=backbone, vit_pool=pool).eval()
    net.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in weights.items()}, strict=True)
    return net


def bundle_tokens(net: nn.Module, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The converted encoder's last patch-token map as (B, N, D) and its class token (B, D)."""
    with torch.no_grad():
        features = net.encode(grey)
    return features[-2].flatten(2).transpose(1, 2), features[-1].flatten(1)


def max_difference(ref: tuple, ours: tuple) -> float:
    return max((a - b).abs().max().item() for a, b in zip(ref, ours))


def patchwise_resize(image: torch.Tensor, old: int, new: int) -> torch.Tensor:
    """Each old x old patch of (B, C, H, W) resized alone (bilinear) to new x new: FlexiViT's linear patch resize."""
    b, c, h, w = image.shape
    patches = F.unfold(image, old, stride=old).transpose(1, 2).reshape(-1, c, old, old)
    patches = F.interpolate(patches, size=(new, new), mode="bilinear", align_corners=False)
    patches = patches.reshape(b, -1, c * new * new).transpose(1, 2)
    return F.fold(patches, (h // old * new, w // old * new), new, stride=new)


def test_timm_vit_converts_exactly_with_the_class_token(tiny, tmp_path):
    ref = reference(tiny)
    path = tmp_path / "timm_tiny.pth"
    torch.save(ref.state_dict(), path)
    weights, report = convert_published_vit(load_weights(path))
    assert report["layout"] == "timm_vit" and report["backbone"] == "vit_tiny_test" and report["vit_pool"] == "token"
    assert report["encoder_keys"] == len(weights) and not report["approximate"]
    assert set(report["dropped"]) == {"head.weight", "head.bias"}
    grey = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        expected = ref(grey.expand(-1, 3, -1, -1))
    difference = max_difference(expected, bundle_tokens(converted(weights, "vit_tiny_test", "token"), grey))
    print(f"timm tiny: max |difference| {difference:.2e}")
    assert difference < 1e-4


def test_real_vit_s16_from_safetensors_gives_the_original_features(tmp_path):
    ref = reference(VIT_BACKBONES["vit_s16"])
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    weights, report = convert_published_vit(load_weights(path))
    assert report["backbone"] == "vit_s16" and len(weights) == report["encoder_keys"] == 150
    assert len(report["mapped"]) == 150 and set(report["dropped"]) == {"head.weight", "head.bias"}
    grey = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        expected = ref(grey.expand(-1, 3, -1, -1))
    net = converted(weights, "vit_s16", "token")
    difference = max_difference(expected, bundle_tokens(net, grey))
    for module in net.encoder.modules():  # MONAI's own eps: what the bundle's eps 1e-6 avoids
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-5
    eps_difference = max_difference(expected, bundle_tokens(net, grey))
    print(f"ViT-S/16: max |difference| {difference:.2e} (eps 1e-6), {eps_difference:.2e} with eps 1e-5")
    assert difference < 1e-3 and eps_difference > difference


@pytest.mark.parametrize("backbone, dinov2", [("vit_s16", False), ("vit_b16", False), ("vit_b16", True)])
def test_published_shapes_map_every_key(backbone, dinov2):
    """timm ViT-S/16 and ViT-B/16, DINOv2 ViT-B/14 (the transformers layout, as RAD-DINO's): every block and key."""
    original = published_state(VIT_BACKBONES[backbone], dinov2)
    weights, report = convert_published_vit(to_transformers(original) if dinov2 else original)
    target = MultiTaskNet(1, backbone=backbone, vit_pool="token").encoder.state_dict()
    assert report["backbone"] == backbone and report["blocks"] == 12
    assert {k.removeprefix("encoder.") for k in weights} == set(target)
    assert all(weights[f"encoder.{k}"].shape == v.shape for k, v in target.items())
    assert report["layer_scales"] == (24 if dinov2 else 0)
    assert len(report["mapped"]) + len(report["dropped"]) == len(original)


@pytest.mark.parametrize("layout", ["dinov2_pth", "transformers_safetensors"])
def test_dinov2_is_exact_for_patch_resized_input_and_measured_for_a_whole_image_resize(tiny, tmp_path, layout):
    ref = reference(tiny, dinov2=True)
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    if layout == "dinov2_pth":
        path = tmp_path / "dinov2_tiny.pth"
        torch.save({"model": state}, path)
    else:
        path = tmp_path / "model.safetensors"
        save_file(to_transformers(state), str(path))
    weights, report = convert_published_vit(load_weights(path))
    assert report["layout"] == "dinov2" and report["layer_scales"] == 2 * tiny["num_layers"]
    assert any("14 -> 16" in e for e in report["exact"]) and any("37x37" in a for a in report["approximate"])
    assert set(report["dropped"]) == {"mask_token"}
    net = converted(weights, "vit_tiny_test", "token")
    torch.manual_seed(1)
    grey = F.avg_pool2d(torch.rand(2, 1, 196, 196), 3, 1, 1)  # 14 x 14 patches of 14 px, some spatial smoothness
    with torch.no_grad():
        expected = ref(grey.expand(-1, 3, -1, -1))  # DINOv2 interpolates its 37 x 37 table to 14 x 14 itself
    exact = max_difference(expected, bundle_tokens(net, patchwise_resize(grey, 14, 16)))
    whole = F.interpolate(grey, size=(224, 224), mode="bilinear", align_corners=False)
    moved = bundle_tokens(net, whole)
    shift = max_difference(expected, moved)
    scale = expected[0].abs().mean().item()
    relative = (expected[0] - moved[0]).abs().mean().item() / scale
    print(
        f"DINOv2 ({layout}): patch-wise resize max |diff| {exact:.2e}; whole-image resize max |diff| {shift:.3f}, "
        f"mean |diff| / mean |token| {relative:.3f}"
    )
    assert exact < 1e-4 and shift > 100 * exact


def test_pseudo_inverse_resize_keeps_each_patch_embedding():
    torch.manual_seed(0)
    weight, patch = torch.randn(5, 1, 14, 14, dtype=torch.float64), torch.randn(3, 1, 14, 14, dtype=torch.float64)
    resized = F.interpolate(patch, size=(16, 16), mode="bilinear", align_corners=False)
    new = pi_resize_kernel(weight, 16)
    assert new.shape == (5, 1, 16, 16)
    assert torch.allclose(F.conv2d(resized, new, stride=16), F.conv2d(patch, weight, stride=14), atol=1e-10)


def test_normalisation_is_overridable_and_folded(tiny):
    ref = reference(tiny)
    mean, std = (0.53, 0.53, 0.53), (0.26, 0.26, 0.26)
    ref.mean, ref.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    weights, report = convert_published_vit(ref.state_dict(), mean=mean, std=std)
    assert "0.53" in report["exact"][0]
    grey = torch.rand(1, 1, 224, 224)
    with torch.no_grad():
        expected = ref(grey.expand(-1, 3, -1, -1))
    assert max_difference(expected, bundle_tokens(converted(weights, "vit_tiny_test", "token"), grey)) < 1e-4


def _with(state: dict, **changes) -> dict:
    state = dict(state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


REFUSALS = {
    "EVA-X": (lambda s: _with(s, blocks__0__mlp__w1__weight=torch.zeros(4, 4)), "blocks.0.mlp.w1.weight", "SwiGLU"),
    "EVA rope": (lambda s: _with(s, rope__freqs_cos=torch.zeros(4, 4)), "rope.freqs_cos", "rotary"),
    "registers": (lambda s: _with(s, register_tokens=torch.zeros(1, 4, 48)), "register_tokens", "register"),
    "missing key": (lambda s: _with(s, blocks__1__mlp__fc2__bias=None), "blocks.1.mlp.fc2.bias", "missing"),
    "wrong shape": (
        lambda s: _with(s, blocks__1__mlp__fc1__weight=torch.zeros(95, 48)),
        "blocks.1.mlp.fc1.weight: shape (95, 48) from the file, (96, 48) for vit.blocks.1.mlp.linear1.weight",
        "",
    ),
    "extra key": (lambda s: _with(s, blocks__0__attn__q_norm__weight=torch.zeros(16)), "q_norm", "no counterpart"),
    "unknown layout": (lambda s: {"backbone.conv.weight": torch.zeros(1)}, "backbone.conv.weight", "not a timm ViT"),
    "no position table": (lambda s: _with(s, pos_embed=None), "pos_embed is missing", ""),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_key(tiny, case):
    make, key, why = REFUSALS[case]
    with pytest.raises(ValueError) as e:
        convert_published_vit(make(reference(tiny).state_dict()))
    assert key in str(e.value) and why in str(e.value), str(e.value)


def test_no_backbone_of_that_width_is_refused():
    with pytest.raises(ValueError, match="patch_embed.proj.weight: 48 wide, 2 blocks; no bundle ViT"):
        convert_published_vit(published_state(TINY))
    with pytest.raises(ValueError, match="vit_b16 is 768 wide"):
        convert_published_vit(published_state(VIT_BACKBONES["vit_s16"]), backbone="vit_b16")


def test_layout_detection():
    assert detect_layout(published_state(TINY)) == "timm_vit"
    assert detect_layout(published_state(TINY, dinov2=True)) == "dinov2"
    assert detect_layout(to_transformers(published_state(TINY, dinov2=True))) == "dinov2"
    assert detect_layout({"conv1.weight": 0, "layer1.0.conv1.weight": 0}) == "torchvision_resnet"
    assert detect_layout({"blocks.0.mlp.w12.weight": 0}) == "eva" and detect_layout({"x": 0}) is None


def test_script_writes_a_recipe_that_requires_the_class_token(tiny, tmp_path, capsys):
    src, out, rep = tmp_path / "model.safetensors", tmp_path / "rad_dino_tiny.pt", tmp_path / "report.json"
    save_file(to_transformers(reference(tiny, dinov2=True).state_dict()), str(src))
    report = convert_main(["--input", str(src), "--output", str(out), "--report", str(rep)])
    printed = capsys.readouterr().out
    assert f"{len(report['mapped'])} source tensors mapped onto all {report['encoder_keys']} encoder keys" in printed
    recipe = read_recipe(str(out))
    assert recipe["kind"] == "pretrained" and recipe["backbone"] == "vit_tiny_test" and recipe["vit_pool"] == "token"
    assert recipe["requires"] == ["vit_pool"] and json.loads(rep.read_text())["layout"] == "dinov2"
    result = load_pretrained(MultiTaskNet(4, backbone="vit_tiny_test", vit_pool="token"), str(out))
    assert len(result["matched"]) == report["encoder_keys"]
    with pytest.raises(UserError, match="vit_pool: mean given, the weights were made with token"):
        check_pretrained_recipe(recipe, {"backbone": "vit_tiny_test", "vit_pool": "mean"}, str(out))


@pytest.mark.parametrize(
    "args, named",
    [
        (["--layout", "timm_vit"], "not a timm ViT"),
        (["--layout", "torchvision_resnet"], "no torchvision ResNet keys"),
        (["--backbone", "vit_b16"], "vit_b16 is 768 wide"),
        (["--mean", "0.5", "0.5"], "--mean and --std need 3 values"),
    ],
)
def test_script_failures_end_in_one_message(tiny, tmp_path, capsys, args, named):
    src = tmp_path / "in.pth"
    state = reference(tiny).state_dict() if args[0] != "--layout" else {"backbone.x": torch.zeros(1)}
    torch.save(state, src)
    with pytest.raises(SystemExit) as stop:
        convert_main(["--input", str(src), "--output", str(tmp_path / "out.pt"), *args])
    message = capsys.readouterr().err
    assert stop.value.code == 2 and message.startswith(f"convert_weights: {src}: ") and named in message, message
    assert "Traceback" not in message and not (tmp_path / "out.pt").exists()


def test_eva_file_is_refused_by_the_script(tmp_path, capsys):
    src = tmp_path / "eva_x_s.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(384, 3, 16, 16), "blocks.0.mlp.w12.weight": torch.zeros(2)}, src)
    with pytest.raises(SystemExit) as stop:
        convert_main(["--input", str(src), "--output", str(tmp_path / "out.pt")])
    message = capsys.readouterr().err
    assert stop.value.code == 2 and str(src) in message and "EVA-X" in message and "rotary" in message


def test_position_table_must_be_a_square_grid():
    with pytest.raises(ValueError, match="pos_embed: 199 positions are neither a square grid"):
        convert_published_vit(_with(published_state(VIT_BACKBONES["vit_s16"]), pos_embed=torch.zeros(1, 199, 384)))
