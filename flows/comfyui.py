"""Hand-off to ComfyUI: a finished (or prepared) folder as a workflow for ComfyUI's native SCAIL-2 nodes.

`scailflow export comfyui FOLDER` writes two files beside copies of our prepared inputs:

- `<name>_scail2.json`: the graph (nodes and links) that ComfyUI's window opens when the file is dropped on it;
- `<name>_scail2_api.json`: the same graph in ComfyUI's API form (`POST /prompt`).

The graph loads our `rendered_v2.mp4` (the pose input), the driving mask video, the reference and its mask
(LoadVideo / LoadImage), conditions with `WanSCAILToVideo` (its coloured-mask inputs take our masks, so ComfyUI's
SAM3 + SCAIL2ColoredMask preprocessing is not needed), and samples with the settings of our take: steps, shift
(ModelSamplingSD3), CFG, sampler, seed, size, fps, the LoRAs and pose_strength / pose_start / pose_end. Clips longer
than one segment are chained the way ComfyUI's "Extend" subgraph does it (previous_frames + video_frame_offset).
ComfyUI's samplers are not ours: the same settings give a similar video, not the same pixels.

Node names, input names, types and widget orders follow ComfyUI's published SCAIL-2 template and
comfy_extras/nodes_scail.py (tests/data/comfyui_scail2_template.json records the facts and their source).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scailflow.errors import InputError
from scailflow.files import write_text_atomic

# the file names ComfyUI's SCAIL-2 template loads (its models/ folders); the user's LoRA files keep their own names
UNET = "wan2.1_14B_SCAIL_2_fp16.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "Wan2_1_VAE_bf16.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
PRESET_LORA_FILES = {  # what a preset is made for, when the take recorded no LoRA file (as PRESET_LORAS)
    "fast": (("lightx2v_I2V_14B_480p_cfg_step_distill_rank128_bf16.safetensors", 1.0),),
    "comfy": (
        ("lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", 0.8),
        ("wan2.1_SCAIL_2_DPO_lora_bf16.safetensors", 1.0),
    ),
}
SAMPLERS = {"euler": "euler", "unipc": "uni_pc", "dpm++": "dpmpp_2m"}  # our --solver -> ComfyUI's sampler_name

# node type -> (linked inputs (name, type), outputs (name, type), widget names in the order the window stores them)
NODES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[str, ...]]] = {
    "LoadVideo": ((), (("VIDEO", "VIDEO"),), ("file", "upload")),
    "LoadImage": ((), (("IMAGE", "IMAGE"), ("MASK", "MASK")), ("image", "upload")),
    "GetVideoComponents": (
        (("video", "VIDEO"),),
        (("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT"), ("bit_depth", "INT")),
        (),
    ),
    "UNETLoader": ((), (("MODEL", "MODEL"),), ("unet_name", "weight_dtype")),
    "LoraLoaderModelOnly": ((("model", "MODEL"),), (("MODEL", "MODEL"),), ("lora_name", "strength_model")),
    "ModelSamplingSD3": ((("model", "MODEL"),), (("MODEL", "MODEL"),), ("shift",)),
    "CLIPLoader": ((), (("CLIP", "CLIP"),), ("clip_name", "type", "device")),
    "CLIPTextEncode": ((("clip", "CLIP"),), (("CONDITIONING", "CONDITIONING"),), ("text",)),
    "VAELoader": ((), (("VAE", "VAE"),), ("vae_name",)),
    "CLIPVisionLoader": ((), (("CLIP_VISION", "CLIP_VISION"),), ("clip_name",)),
    "CLIPVisionEncode": (
        (("clip_vision", "CLIP_VISION"), ("image", "IMAGE")),
        (("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT"),),
        ("crop",),
    ),
    "WanSCAILToVideo": (
        (
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("vae", "VAE"),
            ("pose_video", "IMAGE"),
            ("pose_video_mask", "IMAGE"),
            ("reference_image", "IMAGE"),
            ("reference_image_mask", "IMAGE"),
            ("clip_vision_output", "CLIP_VISION_OUTPUT"),
            ("previous_frames", "IMAGE"),
        ),
        (
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent", "LATENT"),
            ("video_frame_offset", "INT"),
        ),
        (
            "width",
            "height",
            "length",
            "batch_size",
            "pose_strength",
            "pose_start",
            "pose_end",
            "video_frame_offset",
            "previous_frame_count",
            "replacement_mode",
        ),
    ),
    "KSamplerSelect": ((), (("SAMPLER", "SAMPLER"),), ("sampler_name",)),
    "BasicScheduler": ((("model", "MODEL"),), (("SIGMAS", "SIGMAS"),), ("scheduler", "steps", "denoise")),
    "SamplerCustom": (
        (
            ("model", "MODEL"),
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("sampler", "SAMPLER"),
            ("sigmas", "SIGMAS"),
            ("latent_image", "LATENT"),
        ),
        (("output", "LATENT"), ("denoised_output", "LATENT")),
        ("add_noise", "noise_seed", "control_after_generate", "cfg"),
    ),
    "VAEDecode": ((("samples", "LATENT"), ("vae", "VAE")), (("IMAGE", "IMAGE"),), ()),
    "ImageFromBatch": ((("image", "IMAGE"),), (("IMAGE", "IMAGE"),), ("batch_index", "length")),
    "ImageBatch": ((("image1", "IMAGE"), ("image2", "IMAGE")), (("IMAGE", "IMAGE"),), ()),
    "CreateVideo": ((("images", "IMAGE"), ("audio", "AUDIO")), (("VIDEO", "VIDEO"),), ("fps", "bit_depth")),
    "SaveVideo": ((("video", "VIDEO"),), (), ("filename_prefix", "format", "codec")),
}
# stored by the window, not inputs of the node (CreateVideo's second value: newer ComfyUI stores one; the API form
# leaves it out, so older versions accept the graph too)
UI_ONLY_WIDGETS = {"upload", "control_after_generate", "bit_depth"}


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    links: dict = field(default_factory=dict)  # input name -> (origin node id, origin slot)
    title: str = ""


class Graph:
    """Nodes with named widgets and links by input name; written as ComfyUI's window or API JSON."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, type_: str, title: str = "", links: dict | None = None, **widgets) -> Node:
        names = NODES[type_][2]
        unknown = set(widgets) - set(names)
        if unknown:
            raise ValueError(f"{type_} has no widget {sorted(unknown)}")
        node = Node(len(self.nodes) + 1, type_, widgets, {k: v for k, v in (links or {}).items() if v}, title)
        inputs = dict(NODES[type_][0])
        for name, (origin, slot) in node.links.items():
            want, have = inputs[name], self.output_type(origin, slot)
            if want != have:
                raise ValueError(f"{type_}.{name} takes {want}, node {origin} slot {slot} gives {have}")
        self.nodes.append(node)
        return node

    def output_type(self, node_id: int, slot: int) -> str:
        return NODES[self.nodes[node_id - 1].type][1][slot][1]

    def api(self) -> dict:
        """ComfyUI's API form: {"id": {"class_type", "inputs", "_meta"}}, links as [origin id, slot]."""
        out = {}
        for n in self.nodes:
            inputs = {k: v for k, v in n.widgets.items() if k not in UI_ONLY_WIDGETS}
            inputs |= {k: [str(o), s] for k, (o, s) in n.links.items()}
            out[str(n.id)] = {"class_type": n.type, "inputs": inputs, "_meta": {"title": n.title or n.type}}
        return out

    def workflow(self) -> dict:
        """The window's form (what ComfyUI saves and opens): nodes with their slots and widget values, links as
        [id, origin id, origin slot, target id, target slot, type]."""
        links, outgoing = [], {}
        for n in self.nodes:
            names = [name for name, _ in NODES[n.type][0]]
            for name, (origin, slot) in n.links.items():
                link = [len(links) + 1, origin, slot, n.id, names.index(name), self.output_type(origin, slot)]
                links.append(link)
                outgoing.setdefault((origin, slot), []).append(link[0])
        incoming = {(lk[3], lk[4]): lk[0] for lk in links}
        column = self._columns()
        rows: dict[int, int] = {}
        nodes = []
        for order, n in enumerate(self.nodes):
            ins, outs, wnames = NODES[n.type]
            col = column[n.id]
            row = rows[col] = rows.get(col, -1) + 1
            nodes.append(
                {
                    "id": n.id,
                    "type": n.type,
                    "pos": [40 + 380 * col, 40 + 260 * row],
                    "size": [340, 200],
                    "flags": {},
                    "order": order,
                    "mode": 0,
                    "title": n.title or n.type,
                    "inputs": [
                        {"name": name, "type": typ, "link": incoming.get((n.id, i))}
                        for i, (name, typ) in enumerate(ins)
                        if (n.id, i) in incoming or name in _required(n.type)
                    ],
                    "outputs": [
                        {"name": name, "type": typ, "slot_index": i, "links": outgoing.get((n.id, i), [])}
                        for i, (name, typ) in enumerate(outs)
                    ],
                    "properties": {"Node name for S&R": n.type},
                    "widgets_values": [n.widgets[w] for w in wnames],
                }
            )
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"scailflow": "exported by `scailflow export comfyui`"},
            "version": 0.4,
        }

    def _columns(self) -> dict[int, int]:
        col: dict[int, int] = {}
        for n in self.nodes:  # nodes are added after their inputs: one pass sets each column
            col[n.id] = 1 + max((col[o] for o, _ in n.links.values()), default=-1)
        return col


def _required(type_: str) -> set[str]:
    optional = {"pose_video_mask", "reference_image_mask", "previous_frames", "pose_video", "reference_image"}
    optional |= {"clip_vision_output", "audio"}
    return {name for name, _ in NODES[type_][0]} - optional


@dataclass
class Take:
    """What the export needs from a folder's outputs."""

    name: str
    pose: Path  # rendered_v2.mp4
    mask_video: Path  # rendered_mask_v2.mp4 or replace_mask.mp4
    ref: Path
    ref_mask: Path
    prompt: str
    replace: bool
    sampling: dict  # the take's resolved sampling options (SamplingOptions fields, seed drawn)
    width: int
    height: int
    fps: float
    segments: list[dict]  # [{"start", "length", ...}]: one per ComfyUI chunk
    loras: list[tuple[str, float]]  # (ComfyUI lora_name, strength)


def read_take(folder: str | Path) -> Take:
    """The take a folder's last run left: FOLDER/scailflow (or the output folder itself) must hold run.json; the
    settings come from its output.mp4.json (the generation's record), else the defaults of `scailflow run`."""
    from scailflow.media import probe_video, read_image
    from scailflow.scail.options import SamplingOptions
    from scailflow.scail.segments import plan_segments
    from scailflow.scail.sizes import target_size

    folder = Path(folder)
    out = folder if (folder / "run.json").is_file() else folder / "scailflow"
    run_file = out / "run.json"
    if not run_file.is_file():
        raise InputError(f"{folder}: no run.json (run `scailflow run {folder}` first: the export uses its files)")
    try:
        run = json.loads(run_file.read_text())
        files = run["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{run_file}: not a scailflow run record ({e})") from None
    record_file = Path(run.get("record") or out / "output.mp4.json")
    record = {}
    if record_file.is_file():
        try:
            record = json.loads(record_file.read_text())
        except ValueError as e:
            raise InputError(f"{record_file}: unreadable ({e})") from None
    paths = {k: Path(files[k]) for k in ("rendered", "driving_mask", "ref", "ref_mask") if files.get(k)}
    for key in ("rendered", "driving_mask", "ref", "ref_mask"):
        if key not in paths or not paths[key].is_file():
            raise InputError(f"{run_file}: the {key} file {paths.get(key, '(none)')} is missing: run the folder again")
    prompt = record.get("prompt")
    if prompt is None and files.get("prompt_file") and Path(files["prompt_file"]).is_file():
        prompt = Path(files["prompt_file"]).read_text().strip()
    sampling = SamplingOptions(
        **{k: v for k, v in record.get("sampling", {}).items() if k in SamplingOptions.model_fields}
    )
    sampling = sampling.resolved().model_dump()
    info = probe_video(paths["rendered"])
    if record:
        height, width, fps, segments = record["height"], record["width"], record["fps"], record["segments"]
    else:
        ref = read_image(paths["ref"])
        height, width = target_size(sampling["target_h"], sampling["target_w"], ref.shape[:2])
        fps = sampling["fps"] or info.fps
        plan = plan_segments(info.frames, sampling["segment_frames"], sampling["overlap_frames"], sampling["keep_tail"])
        segments = [asdict(seg) for seg in plan]
    loras = [(Path(x["path"]).name, float(x["alpha"])) for x in record.get("loras", [])]
    if not loras:
        loras = list(PRESET_LORA_FILES.get(sampling["preset"], ()))
    return Take(
        name=run.get("folder_name") or folder.name,
        pose=paths["rendered"],
        mask_video=paths["driving_mask"],
        ref=paths["ref"],
        ref_mask=paths["ref_mask"],
        prompt=prompt or "",
        replace=bool(record.get("replace", files.get("replace", False))),
        sampling=sampling,
        width=int(width),
        height=int(height),
        fps=float(fps),
        segments=segments,
        loras=loras,
    )


def build_graph(take: Take, media: dict[str, str]) -> Graph:
    """The SCAIL-2 graph for `take`; `media` names the copies ComfyUI loads (keys pose, mask_video, ref, ref_mask)."""
    s = take.sampling
    g = Graph()
    pose_file = g.add("LoadVideo", "pose video (rendered_v2.mp4)", file=media["pose"], upload="image")
    pose = g.add("GetVideoComponents", links={"video": (pose_file.id, 0)})
    mask_file = g.add("LoadVideo", "driving mask video", file=media["mask_video"], upload="image")
    mask = g.add("GetVideoComponents", links={"video": (mask_file.id, 0)})
    ref = g.add("LoadImage", "reference", image=media["ref"], upload="image")
    ref_mask = g.add("LoadImage", "reference mask", image=media["ref_mask"], upload="image")

    model = g.add("UNETLoader", unet_name=UNET, weight_dtype="default")
    for name, strength in take.loras:
        model = g.add("LoraLoaderModelOnly", links={"model": (model.id, 0)}, lora_name=name, strength_model=strength)
    model = g.add("ModelSamplingSD3", links={"model": (model.id, 0)}, shift=s["shift"])
    clip = g.add("CLIPLoader", clip_name=TEXT_ENCODER, type="wan", device="default")
    positive = g.add("CLIPTextEncode", "positive prompt", links={"clip": (clip.id, 0)}, text=take.prompt)
    negative = g.add("CLIPTextEncode", "negative prompt", links={"clip": (clip.id, 0)}, text=s["negative_prompt"])
    vae = g.add("VAELoader", vae_name=VAE)
    vision = g.add("CLIPVisionLoader", clip_name=CLIP_VISION)
    vision_out = g.add("CLIPVisionEncode", links={"clip_vision": (vision.id, 0), "image": (ref.id, 0)}, crop="none")
    sampler = g.add("KSamplerSelect", sampler_name=SAMPLERS[s["solver"]])
    sigmas = g.add("BasicScheduler", links={"model": (model.id, 0)}, scheduler="simple", steps=s["steps"], denoise=1.0)

    decoded = frames = None
    for i, seg in enumerate(take.segments):
        cond = g.add(
            "WanSCAILToVideo",
            f"SCAIL-2 segment {i + 1}",
            links={
                "positive": (positive.id, 0),
                "negative": (negative.id, 0),
                "vae": (vae.id, 0),
                "pose_video": (pose.id, 0),
                "pose_video_mask": (mask.id, 0),
                "reference_image": (ref.id, 0),
                "reference_image_mask": (ref_mask.id, 0),
                "clip_vision_output": (vision_out.id, 0),
                "previous_frames": (decoded.id, 0) if decoded else None,
            },
            width=take.width,
            height=take.height,
            length=int(seg["length"]),
            batch_size=1,
            pose_strength=float(s.get("pose_strength", 1.0)),
            pose_start=float(s.get("pose_start", 0.0)),
            pose_end=float(s.get("pose_end", 1.0)),
            # the output frame this chunk starts at; the node steps back previous_frame_count frames itself
            video_frame_offset=int(seg["start"]) + int(seg.get("history", 0)),
            previous_frame_count=s["overlap_frames"],
            replacement_mode=take.replace,
        )
        latent = g.add(
            "SamplerCustom",
            links={
                "model": (model.id, 0),
                "positive": (cond.id, 0),
                "negative": (cond.id, 1),
                "sampler": (sampler.id, 0),
                "sigmas": (sigmas.id, 0),
                "latent_image": (cond.id, 2),
            },
            add_noise=True,
            noise_seed=int(s["seed"]),
            control_after_generate="fixed",
            cfg=float(s["guidance"]),
        )
        decoded = g.add("VAEDecode", links={"samples": (latent.id, 1), "vae": (vae.id, 0)})
        if frames is None:
            frames = decoded
        else:  # the overlap frames were the previous chunk's tail: keep the new ones only
            new = g.add(
                "ImageFromBatch", links={"image": (decoded.id, 0)}, batch_index=s["overlap_frames"], length=4096
            )
            frames = g.add("ImageBatch", links={"image1": (frames.id, 0), "image2": (new.id, 0)})
    video = g.add("CreateVideo", links={"images": (frames.id, 0), "audio": (pose.id, 1)}, fps=take.fps, bit_depth=8)
    g.add("SaveVideo", links={"video": (video.id, 0)}, filename_prefix="video/scailflow", format="auto", codec="auto")
    return g


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "folder"


def export(folder: str | Path, dest: str | Path | None = None, comfyui_input: str | Path | None = None) -> dict:
    """Write the workflow (window and API forms) and copies of the inputs it loads into `dest` (default:
    FOLDER/scailflow/comfyui); with `comfyui_input` (ComfyUI's input/ folder) the copies go there too."""
    take = read_take(folder)
    base = safe_name(take.name)
    out = Path(folder) / "scailflow" / "comfyui" if dest is None else Path(dest)
    if dest is None and (Path(folder) / "run.json").is_file():
        out = Path(folder) / "comfyui"
    sources = {"pose": take.pose, "mask_video": take.mask_video, "ref": take.ref, "ref_mask": take.ref_mask}
    media = {k: f"scailflow_{base}_{p.name}" for k, p in sources.items()}
    targets = [out / "input"] + ([Path(comfyui_input)] if comfyui_input else [])
    for where in targets:
        where.mkdir(parents=True, exist_ok=True)
        for key, src in sources.items():
            shutil.copyfile(src, where / media[key])
    graph = build_graph(take, media)
    workflow = out / f"{base}_scail2.json"
    api = out / f"{base}_scail2_api.json"
    write_text_atomic(workflow, json.dumps(graph.workflow(), indent=1))
    write_text_atomic(api, json.dumps(graph.api(), indent=1))
    return {"workflow": workflow, "api": api, "inputs": [t / m for t in targets for m in media.values()], "take": take}
