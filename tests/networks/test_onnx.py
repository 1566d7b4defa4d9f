"""ONNX export of both views with MONAI's onnx_export (bundle.networks.onnx), run in onnxruntime on the CPU and
compared with PyTorch on real radiographs preprocessed as configs/inference.json does, at batch 1 and batch > 1,
and at another image size (the axes are dynamic). The shipped weights, and a ViT-S/16 as tests/networks/test_vit.py
builds it."""

from __future__ import annotations

import ast
import re

import pytest
import torch

from bundle.atomic import atomic_save
from bundle.checkpoints import load_weights
from bundle.networks import MultiTaskClassifier, MultiTaskNet, MultiTaskSegmenter, class_probabilities
from bundle.networks.onnx import OUTPUT_NAMES, converter_kwargs, export
from bundle.networks.vit import ViTEncoder
from bundle.workflow import parsed
from tests.conftest import ROOT, SHARED_CXR

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -r requirements-deploy.txt)")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -r requirements-deploy.txt)")

CONFIG = ROOT / "configs" / "inference.json"
META = ROOT / "configs" / "metadata.json"
MODEL = ROOT / "models" / "model.pt"
VIEWS = {"network_def": MultiTaskClassifier, "network_def_seg": MultiTaskSegmenter}
ATOL = 1e-4  # float32 kernels of two runtimes; measured on these images: at most 4e-6
VIT = "vit_s16"

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
    "ignore:# 'dynamic_axes' is not recommended",  # PyTorch's advice; the axes it maps work (the tests below)
)


def real_images(size: int, sample: int = 6, shared: int = 8) -> torch.Tensor:
    """(N, 1, size, size) radiographs as configs/inference.json reads them (its ``dataset``: reader, resize, type):
    ``sample`` spread over data/sample, and ``shared`` spread over the real collection when it is present."""
    images = []
    for folder, n in ((ROOT / "data" / "sample" / "images", sample), (SHARED_CXR / "images", shared)):
        if not folder.is_dir() or n == 0:
            continue
        (dataset,) = parsed("inference", {"dataset_dir": str(folder), "image_size": size}, "dataset")
        step = max(1, len(dataset) // n)
        items = [dataset[i] for i in range(0, step * n, step)[:n]]
        assert all(item["status"] == "ok" for item in items)
        images += [torch.as_tensor(item["image"]) for item in items]
    return torch.stack(images).float()


def session(path) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, x: torch.Tensor) -> torch.Tensor:
    (out,) = sess.run(None, {"image": x.numpy()})
    return torch.from_numpy(out)


def reference(view, path, backbone: str) -> torch.nn.Module:
    net = view(4, backbone).eval()  # the plain network class, as training builds it
    net.load_state_dict(load_weights(path))
    return net


def check_equal(net_id: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    """Logits within ATOL, and what the bundle reads from them: class probabilities, or the lung mask."""
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    if net_id == "network_def":
        torch.testing.assert_close(class_probabilities(got), class_probabilities(expected), atol=ATOL, rtol=0)
        assert torch.equal(got.argmax(1), expected.argmax(1))
    else:
        flipped = (got.argmax(1) != expected.argmax(1)).float().mean().item()
        assert flipped < 1e-4, f"{flipped:.2e} of the lung-mask pixels differ"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Both views of the shipped weights, exported as docs/inference.md's commands do."""
    folder = tmp_path_factory.mktemp("onnx")
    for net_id in VIEWS:
        export(net_id, folder / f"{net_id}.onnx", MODEL, CONFIG, META)
    return {net_id: folder / f"{net_id}.onnx" for net_id in VIEWS}


def test_the_files_hold_their_weights_and_dynamic_axes(exported):
    folder = exported["network_def"].parent
    assert sorted(p.name for p in folder.iterdir()) == ["network_def.onnx", "network_def_seg.onnx"]  # no .data file
    for net_id, path in exported.items():
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
        assert dims == {"image": ["batch", 1, "height", "width"]}
        assert [o.name for o in model.graph.output] == [OUTPUT_NAMES[net_id]]
        out = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        assert out[:2] == (["batch", 4] if net_id == "network_def" else ["batch", 2])


@pytest.mark.parametrize("net_id", list(VIEWS))
def test_onnxruntime_equals_pytorch_on_real_images(exported, net_id):
    sess, net = session(exported[net_id]), reference(VIEWS[net_id], MODEL, "resnet10")
    images = real_images(224)
    assert len(images) >= 6
    with torch.no_grad():
        expected = net(images)
    check_equal(net_id, run(sess, images), expected)  # the whole batch
    for i in (0, len(images) - 1):  # batch 1
        check_equal(net_id, run(sess, images[i : i + 1]), expected[i : i + 1])
    other = torch.nn.functional.interpolate(images[:2], size=(256, 192), mode="area")  # another size, same file
    with torch.no_grad():
        check_equal(net_id, run(sess, other), net(other))


def test_the_documented_commands_pass_these_arguments():
    """docs/inference.md's onnx_export commands give exactly ``converter_kwargs`` (the tests export with it)."""
    text = (ROOT / "docs" / "inference.md").read_text()
    commands = re.findall(r"onnx_export --net_id (\w+) .*?--converter_kwargs \"(\{.*?\})\"", text, flags=re.S)
    assert sorted(net_id for net_id, _ in commands) == sorted(VIEWS)
    for net_id, kwargs in commands:
        assert ast.literal_eval(re.sub(r"\s*\\\n\s*", " ", kwargs)) == converter_kwargs(net_id)


def test_the_native_position_table_is_returned_exactly():
    """The ViT resizes its position table for every grid, the native 14 x 14 one too (no branch on the size, which
    would fix an exported graph to one size): resizing to the same size changes no value and no gradient."""
    encoder = ViTEncoder(VIT)
    table = encoder.vit.patch_embedding.position_embeddings
    resized = encoder.position_table(14, 14)
    assert torch.equal(resized, table)
    upstream = torch.randn_like(resized)
    resized.backward(upstream)
    assert torch.equal(table.grad, upstream)  # training sees the same gradient too


@pytest.mark.slow  # two exports of a 22 M-parameter transformer (about a minute on 2 cores)
@pytest.mark.parametrize("net_id", list(VIEWS))
def test_vit_exports_and_runs_at_any_multiple_of_16(tmp_path, net_id):
    """Exported at 224 px (the position table's own grid), the file runs at other sizes too."""
    torch.manual_seed(0)
    ckpt = tmp_path / "model.pt"
    atomic_save(MultiTaskNet(4, VIT).state_dict(), ckpt)
    path = tmp_path / f"{net_id}.onnx"
    export(net_id, path, ckpt, CONFIG, META, backbone=VIT, image_size=224)
    sess, net = session(path), reference(VIEWS[net_id], ckpt, VIT)
    for size in (224, 64):
        images = real_images(size, sample=3, shared=0)
        with torch.no_grad():
            expected = net(images)
        check_equal(net_id, run(sess, images), expected)
        check_equal(net_id, run(sess, images[:1]), expected[:1])
    other = torch.rand(2, 1, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        check_equal(net_id, run(sess, other), net(other))


def test_an_unknown_view_is_refused():
    with pytest.raises(ValueError, match="net_id must be one of"):
        converter_kwargs("network")
