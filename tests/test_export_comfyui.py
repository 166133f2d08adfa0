"""`scailflow export comfyui`: the graph uses ComfyUI's SCAIL-2 nodes as its published template does (node types,
input names and types, widget orders, links: tests/data/comfyui_scail2_template.json records those facts and their
source), carries our take's settings, and loads copies of our prepared files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scailflow.flows.comfyui import NODES, UI_ONLY_WIDGETS, Take, build_graph
from scailflow.media import write_image, write_video

DATA = json.loads((Path(__file__).parent / "data" / "comfyui_scail2_template.json").read_text())
FACTS, API_INPUTS = DATA["nodes"], DATA["api_inputs"]
OUTSIDE_TEMPLATE = {"ImageBatch"}  # core node (nodes.py: image1, image2 -> IMAGE) the template does not use


def take(tmp_path, segments, replace=False, loras=(("distill.safetensors", 0.8), ("dpo.safetensors", 1.0))):
    files = {}
    for name in ("rendered_v2.mp4", "rendered_mask_v2.mp4"):
        write_video(tmp_path / name, np.zeros((5, 32, 32, 3), np.uint8), 16)
        files[name] = tmp_path / name
    for name in ("ref.png", "ref_mask.png"):
        write_image(tmp_path / name, np.zeros((32, 32, 3), np.uint8))
        files[name] = tmp_path / name
    sampling = dict(
        preset="comfy", steps=6, shift=5.0, guidance=1.0, solver="euler", seed=42, negative_prompt="blurry",
        overlap_frames=5, pose_strength=0.7, pose_start=0.1, pose_end=0.9,
    )  # fmt: skip
    return Take(
        "clip", files["rendered_v2.mp4"], files["rendered_mask_v2.mp4"], files["ref.png"], files["ref_mask.png"],
        "a dancer", replace, sampling, 896, 512, 24.0, segments, list(loras),
    )  # fmt: skip


MEDIA = {"pose": "p.mp4", "mask_video": "m.mp4", "ref": "r.png", "ref_mask": "rm.png"}
TWO = [{"start": 0, "length": 81, "history": 0, "pad": 0}, {"start": 76, "length": 81, "history": 5, "pad": 0}]


def by_type(workflow, type_):
    return [n for n in workflow["nodes"] if n["type"] == type_]


def test_graph_matches_the_template_nodes_inputs_and_links(tmp_path):
    wf = build_graph(take(tmp_path, TWO), MEDIA).workflow()
    nodes = {n["id"]: n for n in wf["nodes"]}
    for n in wf["nodes"]:
        if n["type"] in OUTSIDE_TEMPLATE:
            continue
        fact = FACTS[n["type"]]  # every node type is one the template uses
        assert len(n["widgets_values"]) == fact["widgets_values_count"], n["type"]
        assert [[o["name"], o["type"]] for o in n["outputs"]] == fact["outputs"], n["type"]
        for i in n["inputs"]:
            if i["link"] is not None:
                assert fact["inputs"][i["name"]] == i["type"], (n["type"], i["name"])
    # links: [id, origin, origin slot, target, target slot, type], each seen from both ends with one type
    assert len({lk[0] for lk in wf["links"]}) == len(wf["links"]) == wf["last_link_id"]
    for lid, origin, oslot, target, tslot, typ in wf["links"]:
        out = nodes[origin]["outputs"][oslot]
        assert out["type"] == typ and lid in out["links"]
        ins = [i for i in nodes[target]["inputs"] if i["link"] == lid]
        assert len(ins) == 1 and ins[0]["type"] == typ
        assert NODES[nodes[target]["type"]][0][tslot][0] == ins[0]["name"]
    for n in wf["nodes"]:  # every required input is linked
        for i in n["inputs"]:
            if i["name"] not in ("previous_frames",):
                assert i["link"] is not None, (n["type"], i["name"])


def test_settings_are_mapped(tmp_path):
    g = build_graph(take(tmp_path, TWO, replace=True), MEDIA)
    wf, api = g.workflow(), g.api()
    scail = by_type(wf, "WanSCAILToVideo")
    assert len(scail) == 2  # one chunk per segment, chained as the template's Extend subgraph
    order = FACTS["WanSCAILToVideo"]["widget_order"]
    first, second = (dict(zip(order, n["widgets_values"])) for n in scail)
    assert first == dict(
        width=896, height=512, length=81, batch_size=1, pose_strength=0.7, pose_start=0.1, pose_end=0.9,
        video_frame_offset=0, previous_frame_count=5, replacement_mode=True,
    )  # fmt: skip
    assert second["video_frame_offset"] == 81  # output frame it starts at; the node steps back 5 itself
    prev = next(i for i in scail[1]["inputs"] if i["name"] == "previous_frames")
    link = next(lk for lk in wf["links"] if lk[0] == prev["link"])
    assert next(n for n in wf["nodes"] if n["id"] == link[1])["type"] == "VAEDecode"
    assert not any(i["name"] == "previous_frames" and i["link"] for i in scail[0]["inputs"])
    sampler = by_type(wf, "SamplerCustom")[0]["widgets_values"]
    assert sampler == [True, 42, "fixed", 1.0]
    assert by_type(wf, "BasicScheduler")[0]["widgets_values"] == ["simple", 6, 1.0]
    assert by_type(wf, "ModelSamplingSD3")[0]["widgets_values"] == [5.0]
    assert by_type(wf, "KSamplerSelect")[0]["widgets_values"] == ["euler"]
    assert [n["widgets_values"] for n in by_type(wf, "LoraLoaderModelOnly")] == [
        ["distill.safetensors", 0.8],
        ["dpo.safetensors", 1.0],
    ]
    texts = [n["widgets_values"][0] for n in by_type(wf, "CLIPTextEncode")]
    assert texts == ["a dancer", "blurry"]
    assert by_type(wf, "CreateVideo")[0]["widgets_values"][0] == 24.0
    loads = {n["widgets_values"][0] for n in wf["nodes"] if n["type"] in ("LoadVideo", "LoadImage")}
    assert loads == set(MEDIA.values())
    # the API form: widget values by name (window-only values left out), links as [id, slot] to existing nodes
    for nid, node in api.items():
        links, _, widgets = NODES[node["class_type"]]
        allowed = {n for n, _ in links} | (set(widgets) - UI_ONLY_WIDGETS)
        assert set(node["inputs"]) <= allowed, node
        for v in node["inputs"].values():
            if isinstance(v, list):
                assert v[0] in api and v[0] != nid
    for node in api.values():  # every input name is one ComfyUI's node definition has, and the required ones are set
        assert set(node["inputs"]) <= set(API_INPUTS[node["class_type"]]), node
    assert all(
        {"model", "add_noise", "noise_seed", "cfg", "sampler", "sigmas", "latent_image"} <= set(n["inputs"])
        for n in api.values()
        if n["class_type"] == "SamplerCustom"
    )
    assert {n["inputs"]["sampler_name"] for n in api.values() if n["class_type"] == "KSamplerSelect"} <= set(
        DATA["sampler_names"]
    )
    api_scail = [n for n in api.values() if n["class_type"] == "WanSCAILToVideo"]
    assert api_scail[0]["inputs"]["pose_strength"] == 0.7 and api_scail[0]["inputs"]["replacement_mode"] is True


def test_one_segment_has_no_chaining(tmp_path):
    wf = build_graph(take(tmp_path, TWO[:1], loras=()), MEDIA).workflow()
    assert len(by_type(wf, "WanSCAILToVideo")) == 1 and not by_type(wf, "ImageBatch")
    assert not by_type(wf, "LoraLoaderModelOnly")


def cli(*args, home):
    env = dict(os.environ, SCAILFLOW_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "scailflow.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.integration
@pytest.mark.usefixtures("report_to_shared_server")
def test_export_after_a_real_run(tmp_path):
    from tests.test_flows import make_folder

    folder = make_folder(tmp_path, "clip", frames=9, size=64)
    home = tmp_path / "home"
    r = cli("run", folder, "--model", "tiny-random", "--steps", "2", "--target_h", "32", "--target_w", "32", home=home)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("export", "comfyui", folder, "--comfyui-input", tmp_path / "ComfyUI" / "input", home=home)
    assert r.returncode == 0, r.stderr[-2000:]
    out = folder / "scailflow"
    assert f"wrote {out / 'comfyui' / 'clip_scail2.json'}" in r.stdout
    record = json.loads((out / "output.mp4.json").read_text())
    api = json.loads((out / "comfyui" / "clip_scail2_api.json").read_text())
    kinds = {n["class_type"]: n["inputs"] for n in api.values()}
    assert kinds["SamplerCustom"]["noise_seed"] == record["seed"]
    assert kinds["BasicScheduler"]["steps"] == 2 and kinds["KSamplerSelect"]["sampler_name"] == "uni_pc"
    assert kinds["WanSCAILToVideo"]["width"] == record["width"] and kinds["WanSCAILToVideo"]["length"] == 9
    loads = {"LoadVideo": "file", "LoadImage": "image"}
    loaded = [n["inputs"][loads[n["class_type"]]] for n in api.values() if n["class_type"] in loads]
    assert sorted(name.removeprefix("scailflow_clip_") for name in loaded) == [
        "ref.png", "ref_mask.png", "rendered_mask_v2.mp4", "rendered_v2.mp4",
    ]  # fmt: skip
    for name in loaded:
        original = out / name.removeprefix("scailflow_clip_")
        for where in (out / "comfyui" / "input", tmp_path / "ComfyUI" / "input"):
            assert (where / name).read_bytes() == original.read_bytes()


@pytest.mark.integration
def test_export_of_an_unprepared_folder_is_one_line(tmp_path):
    (tmp_path / "raw").mkdir()
    r = cli("export", "comfyui", tmp_path / "raw", home=tmp_path / "home")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "run `scailflow run" in r.stderr, r.stderr
