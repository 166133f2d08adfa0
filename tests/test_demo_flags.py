"""`scailflow demo` takes its model flags from the option model (ModelOptions), like run and batch, with the demo's
own default (the tiny-random model: nothing to download) shown in its help."""

from __future__ import annotations

from scailflow.cli import build_parser
from scailflow.flows.cli import DEMO_MODEL
from scailflow.options import flag_of, from_flags
from scailflow.scail.options import ModelOptions


def test_demo_has_every_model_flag_and_its_own_default():
    parser = build_parser("demo")
    args = parser.parse_args(["demo"])
    assert from_flags(ModelOptions, args, base=DEMO_MODEL) == ModelOptions(model="tiny-random")
    args = parser.parse_args(["demo", "--model", "scail2", "--ckpt_dir", "ck", "--offload", "block", "--t5_cpu"])
    chosen = from_flags(ModelOptions, args, base=DEMO_MODEL)
    assert (chosen.model, chosen.ckpt_dir, chosen.offload, chosen.t5_cpu) == ("scail2", "ck", "block", True)
    demo = next(a for a in parser._subparsers._group_actions[0].choices["demo"]._actions if a.dest == "model")
    assert "(default: tiny-random)" in demo.help and "(default: scail2)" not in demo.help
    flags = {s for a in parser._subparsers._group_actions[0].choices["demo"]._actions for s in a.option_strings}
    for name, field in ModelOptions.model_fields.items():
        flag = flag_of(field)
        assert flag is None or flag.names[0] in flags, name
