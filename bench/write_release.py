"""A SCAIL-2 release folder of RANDOM weights, in the official layout and formats, for benchmarks on a GPU machine
that cannot download the real one (speed does not depend on weight values).

    python bench/write_release.py OUT_DIR [--scale full|tiny] [--device cuda] [--seed 0]

writes what `scailflow generate --ckpt_dir OUT_DIR --scail_path OUT_DIR/scail2.safetensors` reads, unchanged:

  OUT_DIR/Wan2.1_VAE.pth                                   Wan VAE state dict (Wan key names, fp32)
  OUT_DIR/models_t5_umt5-xxl-enc-bf16.pth                  Wan T5 encoder state dict (bf16)
  OUT_DIR/umt5-xxl/tokenizer.json (+ tokenizer_config.json) a tokenizers-library tokenizer (a word-level stand-in
                                                           for umt5's sentencepiece vocabulary; the T5 table keeps
                                                           its full 256,384 rows)
  OUT_DIR/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth   CLIP ViT-H/14 visual tower (fp16)
  OUT_DIR/scail2.safetensors                               the DiT as `scailflow convert` writes it (bf16)

Host memory holds one tensor (or one 256 MiB slice of one) at a time: the safetensors file is written header first,
then tensor by tensor; each .pth is laid out by `torch.save` from fake tensors with `skip_data` (the zip records are
reserved, not written) and then filled in place through a shared memory map, so `torch.load(weights_only=True,
mmap=True)` reads it as it reads the official files. `--scale tiny` writes the same files for a model small enough for
CI (the DiT with 2 heads of 128, so the loader infers its config from the shapes as it does for the real one).
Full size: ~33 GB DiT + ~11.4 GB T5 + ~1.3 GB CLIP + ~0.5 GB VAE on disk.
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import struct
import sys
import time
from pathlib import Path

import torch

try:
    from scailflow.scail.checkpoint import _ST_DTYPES, official_keys, official_to_module_key
    from scailflow.scail.encoders import t5_key_map
    from scailflow.scail.loading import T5_FILE, VAE_FILE
    from scailflow.scail.model import OFFICIAL_14B_CONFIG, SCAIL2Transformer
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise

CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
DIT_FILE = "scail2.safetensors"
CHUNK_ELEMENTS = 128 * 2**20  # random values drawn and written in slices of this many elements

SCALES = {
    "full": dict(
        dit=dict(OFFICIAL_14B_CONFIG),
        t5=dict(vocab=256384, dim=4096, heads=64, d_kv=64, ffn=10240, layers=24, buckets=32),
        clip=dict(width=1280, layers=32, heads=16, mlp=5120, patch=14, image=224, embed=1024),
        vae_dim=96,
    ),
    "tiny": dict(
        dit=dict(OFFICIAL_14B_CONFIG, dim=256, num_heads=2, num_layers=2, ffn_dim=256, text_dim=64),
        t5=dict(vocab=128, dim=64, heads=4, d_kv=16, ffn=128, layers=2, buckets=32),
        # the DiT's image embedder takes CLIP ViT-H's 1280 features at any scale: keep the width, cut the rest
        clip=dict(width=1280, layers=2, heads=16, mlp=256, patch=14, image=224, embed=64),
        vae_dim=8,
    ),
}

# Wan 2.1 VAE (WanVAE_, dim_mult 1,2,4,4, 2 res blocks, no attention scales): every key and, per key, how its shape
# is built from the base width D (the key names are the published file's; the layout is fixed by the architecture)
_VAE_KEYS_FILE = Path(__file__).with_name("wan_vae_keys.json")


# ------------------------------------------------------------------------------------------------ values
def fill_value(name: str, shape: tuple[int, ...]) -> str:
    """How a tensor is drawn: norm gains are ones (as trained ones are near 1), modulation tables ~N(0, 1/dim), the
    rest ~N(0, 0.02); biases too (speed does not depend on values; this keeps activations finite)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma" or (("norm" in name) and leaf == "weight" and len(shape) == 1):
        return "ones"
    if "modulation" in name:
        return "modulation"
    return "normal"


def random_slices(name: str, shape, dtype, gen: torch.Generator, device):
    """The tensor's values, in slices of at most CHUNK_ELEMENTS elements (row-major), as host tensors."""
    numel = math.prod(shape)
    kind = fill_value(name, tuple(shape))
    done = 0
    while done < numel:
        n = min(CHUNK_ELEMENTS, numel - done)
        if kind == "ones":
            t = torch.ones(n, dtype=dtype, device=device)
        else:
            std = 0.02 if kind == "normal" else 1.0 / math.sqrt(shape[-1])
            t = (torch.randn(n, generator=gen, device=device, dtype=torch.float32) * std).to(dtype)
        yield t.cpu()
        done += n


# ------------------------------------------------------------------------------------------------ writers
def write_safetensors(path: Path, spec: list[tuple[str, tuple, torch.dtype]], gen, device) -> int:
    """A safetensors file from (name, shape, dtype), header first, then each tensor's random values slice by slice."""
    header, offset = {}, 0
    for name, shape, dtype in spec:
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt", "source": "bench/write_release.py (random weights)"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, dtype in spec:
            for piece in random_slices(name, shape, dtype, gen, device):
                f.write(piece.view(torch.uint8).numpy().tobytes())
    tmp.replace(path)
    return offset


def write_pth(path: Path, spec: list[tuple[str, tuple, torch.dtype]], gen, device) -> int:
    """A torch.save state dict written without ever holding it: the zip is laid out from fake tensors (storage records
    reserved, not written), then each tensor is filled through a shared memory map of the file."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = {name: torch.empty(shape, dtype=dtype) for name, shape, dtype in spec}
    tmp = path.with_name(path.name + ".partial")
    with torch.serialization.skip_data(materialize_fake_tensors=True):
        torch.save(fake, tmp)
    del fake
    torch.serialization.set_default_mmap_options(mmap.MAP_SHARED)
    try:
        sd = torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
        for name, shape, dtype in spec:
            flat = sd[name].view(-1)
            at = 0
            for piece in random_slices(name, shape, dtype, gen, device):
                flat[at : at + piece.numel()].copy_(piece)
                at += piece.numel()
        del sd, flat
    finally:
        torch.serialization.set_default_mmap_options(mmap.MAP_PRIVATE)
    tmp.replace(path)
    return sum(math.prod(s) * torch.empty((), dtype=d).element_size() for _, s, d in spec)


# ------------------------------------------------------------------------------------------------ layouts
def dit_spec(config: dict, dtype: torch.dtype) -> list[tuple[str, tuple, torch.dtype]]:
    """Official (converted) key names and shapes of a SCAIL-2 DiT with these official config keys."""
    with torch.device("meta"):
        model = SCAIL2Transformer(**SCAIL2Transformer.config_from_official(config))
    own = model.state_dict()
    out = []
    for key in official_keys(int(config["num_layers"])):
        name = official_to_module_key(key)
        if name in own:
            out.append((key, tuple(own[name].shape), dtype))
    return out


def t5_spec(c: dict, dtype: torch.dtype) -> list[tuple[str, tuple, torch.dtype]]:
    """Wan's T5 encoder keys (umt5-xxl, encoder only, a relative-position table in every layer)."""
    inner = c["heads"] * c["d_kv"]
    shapes = {"token_embedding.weight": (c["vocab"], c["dim"])}
    for i in range(c["layers"]):
        p = f"blocks.{i}."
        shapes |= {
            p + "norm1.weight": (c["dim"],),
            p + "attn.q.weight": (inner, c["dim"]),
            p + "attn.k.weight": (inner, c["dim"]),
            p + "attn.v.weight": (inner, c["dim"]),
            p + "attn.o.weight": (c["dim"], inner),
            p + "norm2.weight": (c["dim"],),
            p + "ffn.gate.0.weight": (c["ffn"], c["dim"]),
            p + "ffn.fc1.weight": (c["ffn"], c["dim"]),
            p + "ffn.fc2.weight": (c["dim"], c["ffn"]),
            p + "pos_embedding.embedding.weight": (c["buckets"], c["heads"]),
        }
    shapes["norm.weight"] = (c["dim"],)
    for k in shapes:  # every key is one the loader maps (fails here, not on the GPU machine)
        t5_key_map(k)
    return [(k, s, dtype) for k, s in shapes.items()]


def clip_spec(c: dict, dtype: torch.dtype) -> list[tuple[str, tuple, torch.dtype]]:
    """open-clip ViT-H/14 visual tower keys as Wan's CLIP file holds them (text tower left out: never read)."""
    w, tokens = c["width"], (c["image"] // c["patch"]) ** 2 + 1
    shapes = {
        "visual.cls_embedding": (1, 1, w),
        "visual.pos_embedding": (1, tokens, w),
        "visual.patch_embedding.weight": (w, 3, c["patch"], c["patch"]),
        "visual.pre_norm.weight": (w,),
        "visual.pre_norm.bias": (w,),
    }
    for i in range(c["layers"]):
        p = f"visual.transformer.{i}."
        shapes |= {
            p + "norm1.weight": (w,),
            p + "norm1.bias": (w,),
            p + "attn.to_qkv.weight": (3 * w, w),
            p + "attn.to_qkv.bias": (3 * w,),
            p + "attn.proj.weight": (w, w),
            p + "attn.proj.bias": (w,),
            p + "norm2.weight": (w,),
            p + "norm2.bias": (w,),
            p + "mlp.0.weight": (c["mlp"], w),
            p + "mlp.0.bias": (c["mlp"],),
            p + "mlp.2.weight": (w, c["mlp"]),
            p + "mlp.2.bias": (w,),
        }
    shapes |= {"visual.post_norm.weight": (w,), "visual.post_norm.bias": (w,), "visual.head": (w, c["embed"])}
    return [(k, s, dtype) for k, s in shapes.items()]


def vae_spec(base_dim: int) -> list[tuple[str, tuple, torch.dtype]]:
    """Wan 2.1 VAE keys; shapes from diffusers' AutoencoderKLWan at this width through diffusers' own key converter."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from scailflow.scail.encoders import wan_vae

    keys = json.loads(_VAE_KEYS_FILE.read_text())
    with torch.device("meta"):
        vae = wan_vae(base_dim)
    own = vae.state_dict()
    out = []
    for k in keys:  # one key at a time through the converter: it renames without reshaping
        (name,) = convert_wan_vae_to_diffusers({k: torch.empty(0)}).keys()
        out.append((k, tuple(own[name].shape), torch.float32))
    return out


# ------------------------------------------------------------------------------------------------ tokenizer
def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizers-library tokenizer (pad 0, eos 1, unk 2; `</s>` appended as umt5's does), saved with
    save_pretrained so that AutoTokenizer reads the folder as it reads the real umt5-xxl one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = (
        "a the person dancing walks runs jumps turns waves arms legs body woman man character video scene studio "
        "street light dark background moves slowly quickly left right camera wearing jacket dress shirt in on with "
        "and of to is are her his their hands smiles looks stands sits red blue green white black"
    ).split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        if len(vocab) < vocab_size:
            vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    fast.save_pretrained(str(folder))


# ------------------------------------------------------------------------------------------------ main
def write_release(out: Path, scale: str = "full", device: str | None = None, seed: int = 0, log=print) -> dict:
    """Write the whole folder; returns {file: bytes} and the seconds each took."""
    cfg = SCALES[scale]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device).manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "umt5-xxl").mkdir(exist_ok=True)
    report: dict = {"scale": scale, "files": {}}
    jobs = [
        ("umt5-xxl/tokenizer.json", None),
        (VAE_FILE, lambda p: write_pth(p, vae_spec(cfg["vae_dim"]), gen, device)),
        (CLIP_FILE, lambda p: write_pth(p, clip_spec(cfg["clip"], torch.float16), gen, device)),
        (T5_FILE, lambda p: write_pth(p, t5_spec(cfg["t5"], torch.bfloat16), gen, device)),
        (DIT_FILE, lambda p: write_safetensors(p, dit_spec(cfg["dit"], torch.bfloat16), gen, device)),
    ]
    for name, job in jobs:
        t0 = time.perf_counter()
        if job is None:
            write_tokenizer(out / "umt5-xxl", cfg["t5"]["vocab"])
            size = sum(p.stat().st_size for p in (out / "umt5-xxl").iterdir())
        else:
            job(out / name)
            size = (out / name).stat().st_size
        dt = time.perf_counter() - t0
        report["files"][name] = {"bytes": size, "seconds": round(dt, 2)}
        log(f"{name}: {size / 2**30:.2f} GiB in {dt:.1f} s")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="release folder to write")
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--device", default=None, help="where random values are drawn (default: cuda if present)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    report = write_release(args.out, args.scale, args.device, args.seed)
    total = sum(f["bytes"] for f in report["files"].values())
    print(f"wrote {args.out} ({args.scale}): {total / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s")
    print(f"use: --ckpt_dir {args.out} --scail_path {args.out / DIT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
