"""Small stand-ins for the real pose models, built by the tests with the real input/output names and shapes.

- YOLOX: `images` [N, 3, 640, 640] -> `output` [N, 8400, 85], a fixed raw tensor whose decode gives chosen boxes.
- DW-LL SimCC: `input` [1, 3, 384, 288] -> `simcc_x` [1, 133, 576], `simcc_y` [1, 133, 768]: the column and
  row sums of the normalised crop, upsampled x2, so every keypoint lands on the brightest spot of the crop.
- NLF: a scripted module with `detect_smpl_batched(uint8 [B, 3, H, W])` returning `joints3d_nonparam`: a
  standing SMPL-24 body 3 m away, centred on the bright pixels of each image (none when the image is black).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from scailflow.pose.dwpose import STRIDES, yolox_grids

OPSET = 18


def yolox_raw(boxes_scores: list[tuple[tuple[float, float, float, float], float]], ratio: float) -> np.ndarray:
    """[8400, 85] raw output that decodes to the given (xyxy original pixels, score) person boxes."""
    grid, stride = yolox_grids()
    raw = np.zeros((grid.shape[0], 85), np.float32)
    raw[:, 4] = 0.0  # objectness 0: no box
    used = set()
    for (x1, y1, x2, y2), score in boxes_scores:
        cx, cy, w, h = (x1 + x2) / 2 * ratio, (y1 + y2) / 2 * ratio, (x2 - x1) * ratio, (y2 - y1) * ratio
        s = STRIDES[-1]
        base = int(sum((640 // st) ** 2 for st in STRIDES[:-1]))
        gx, gy = int(cx // s), int(cy // s)
        i = base + gy * (640 // s) + gx
        while i in used:
            i += 1
        used.add(i)
        raw[i, 0], raw[i, 1] = cx / s - grid[i, 0], cy / s - grid[i, 1]
        raw[i, 2], raw[i, 3] = math.log(w / s), math.log(h / s)
        raw[i, 4], raw[i, 5] = 1.0, score
    return raw


def build_yolox(path: Path, raw: np.ndarray, dynamic_batch: bool = False) -> Path:
    """YOLOX-shaped ONNX whose output is `raw` (broadcast over the batch) regardless of the pixels."""
    batch = "N" if dynamic_batch else 1
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 640, 640])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 8400, 85])
    const = numpy_helper.from_array(raw[None].astype(np.float32), "raw")
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=1),  # [N, 1, 1, 1]
        helper.make_node("Squeeze", ["mean", "sq_axes"], ["mean3"]),  # [N]
        helper.make_node("Unsqueeze", ["mean3", "unsq_axes"], ["m3"]),  # [N, 1, 1]
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["raw", "z"], ["output"]),
    ]
    inits = [
        const,
        zero,
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "sq_axes"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "unsq_axes"),
        axes,
    ]
    graph = helper.make_graph(nodes, "fake_yolox", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_simcc(path: Path, bias: float = 5000.0, input_shape=(1, 3, 384, 288)) -> Path:
    """SimCC-shaped ONNX: keypoint = brightest column / row of the crop (x2 split), score = profile + bias."""
    _, _, h, w = input_shape
    up_x = np.zeros((w, 2 * w), np.float32)
    up_x[np.arange(w), 2 * np.arange(w)] = 1
    up_x[np.arange(w), 2 * np.arange(w) + 1] = 1
    up_y = np.zeros((h, 2 * h), np.float32)
    up_y[np.arange(h), 2 * np.arange(h)] = 1
    up_y[np.arange(h), 2 * np.arange(h) + 1] = 1
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
    ox = helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 2 * w])
    oy = helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 2 * h])
    inits = [
        numpy_helper.from_array(up_x, "up_x"),
        numpy_helper.from_array(up_y, "up_y"),
        numpy_helper.from_array(np.ones((1, 133, 1), np.float32), "ones"),
        numpy_helper.from_array(np.array([bias], np.float32), "bias"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["input", "ax1"], ["chan"], keepdims=0),  # [1, H, W]
        helper.make_node("ReduceSum", ["chan", "ax1"], ["col"], keepdims=1),  # [1, 1, W]
        helper.make_node("ReduceSum", ["chan", "ax2"], ["row_t"], keepdims=1),  # [1, H, 1]
        helper.make_node("Transpose", ["row_t"], ["row"], perm=[0, 2, 1]),  # [1, 1, H]
        helper.make_node("MatMul", ["col", "up_x"], ["cx"]),
        helper.make_node("MatMul", ["row", "up_y"], ["cy"]),
        helper.make_node("Add", ["cx", "bias"], ["cxb"]),
        helper.make_node("Add", ["cy", "bias"], ["cyb"]),
        helper.make_node("Mul", ["cxb", "ones"], ["simcc_x"]),
        helper.make_node("Mul", ["cyb", "ones"], ["simcc_y"]),
    ]
    graph = helper.make_graph(nodes, "fake_simcc", [inp], [ox, oy], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# A standing SMPL-24 body (mm, camera axes: x right, y down), pelvis at the origin; its right side at -x.
SMPL_TEMPLATE = np.zeros((24, 3), np.float32)
for _i, _xyz in {
    0: (0, 0, 0),
    1: (90, 30, 0),
    2: (-90, 30, 0),
    3: (0, -120, 0),
    4: (100, 420, 0),
    5: (-100, 420, 0),
    6: (0, -250, 0),
    7: (100, 820, 0),
    8: (-100, 820, 0),
    9: (0, -300, 0),
    10: (100, 880, -60),
    11: (-100, 880, -60),
    12: (0, -480, 0),
    13: (80, -420, 0),
    14: (-80, -420, 0),
    15: (0, -620, 0),
    16: (180, -440, 0),
    17: (-180, -440, 0),
    18: (200, -170, 0),
    19: (-200, -170, 0),
    20: (210, 70, -30),
    21: (-210, 70, -30),
    22: (220, 140, -40),
    23: (-220, 140, -40),
}.items():
    SMPL_TEMPLATE[_i] = _xyz


class _FakeNLF(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("template", torch.from_numpy(SMPL_TEMPLATE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def detect_smpl_batched(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        b, _, h, w = images.shape
        f = float(max(h, w)) / (2.0 * math.tan(27.5 * math.pi / 180.0))
        depth = 3000.0
        joints: list[torch.Tensor] = []
        boxes: list[torch.Tensor] = []
        for i in range(b):
            bright = images[i].float().sum(0) > 300.0
            idx = torch.nonzero(bright)
            if idx.shape[0] == 0:
                joints.append(torch.zeros((0, 24, 3)))
                boxes.append(torch.zeros((0, 5)))
            else:
                u = idx[:, 1].float().mean()
                v = idx[:, 0].float().mean()
                shift = torch.stack([(u - w / 2.0) / f * depth, (v - h / 2.0) / f * depth, torch.tensor(depth)])
                joints.append((self.template + shift)[None])
                boxes.append(torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]]))
        return {"joints3d_nonparam": joints, "boxes": boxes}


def build_nlf(path: Path) -> Path:
    """Script and save the fake NLF TorchScript archive."""
    torch.jit.script(_FakeNLF()).save(str(path))
    return path


def blob_image(height: int, width: int, centres: list[tuple[int, int]], sigma: float = 2.0) -> np.ndarray:
    """Black RGB image with a bright Gaussian spot (peak 255) at each (x, y) centre."""
    ys, xs = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width), np.float64)
    for x, y in centres:
        img = np.maximum(img, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    return np.repeat((img * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def test_fake_simcc_has_the_real_names_and_shapes(tmp_path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(build_simcc(tmp_path / "p.onnx")), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert sess.get_inputs()[0].shape == [1, 3, 384, 288]
    x, y = sess.run(["simcc_x", "simcc_y"], {"input": np.zeros((1, 3, 384, 288), np.float32)})
    assert x.shape == (1, 133, 576) and y.shape == (1, 133, 768)


def test_fake_nlf_follows_the_bright_pixels(tmp_path):
    model = torch.jit.load(str(build_nlf(tmp_path / "n.torchscript")))
    img = blob_image(100, 200, [(150, 50)], sigma=3)
    x = torch.from_numpy(np.stack([img, np.zeros_like(img)])).permute(0, 3, 1, 2).contiguous()
    out = model.detect_smpl_batched(x)["joints3d_nonparam"]
    assert out[0].shape == (1, 24, 3) and out[1].shape == (0, 24, 3)
    assert out[0][0, 0, 0] > 0  # pelvis right of centre, like the spot
