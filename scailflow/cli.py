"""The `scailflow` console script: one entry, a subcommand per job. Errors print as one line, never a traceback.

Only the chosen subcommand's module is imported (`scailflow --help` imports none of them, `scailflow run --help`
only the option models), so help answers at once; the heavy libraries load when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from scailflow import __version__
from scailflow.errors import InputError, is_out_of_memory

# subcommand -> (module, hook name, help): the module's add_<hook>_arguments / run_<hook> (or add_arguments / run)
COMMANDS = {
    "run": (
        "scailflow.flows.cli",
        "run_folder",
        "one raw folder -> the animated video (pose, masks, prompt, generate)",
    ),
    "batch": ("scailflow.flows.cli", "batch", "run every folder a pipelines.yaml names"),
    "serve": ("scailflow.flows.cli", "serve", "serve pipelines.yaml's schedules as Prefect deployments"),
    "status": ("scailflow.flows.cli", "status", "recent runs and their states, or one folder's stages and takes"),
    "worker": ("scailflow.flows.cli", "worker", "a warm GPU worker: loads the model once, runs the generations sent"),
    "server": ("scailflow.flows.cli", "server", "start the local Prefect server and UI on 127.0.0.1"),
    "demo": ("scailflow.flows.cli", "demo", "build a sample folder from a bundled photo and run the whole flow on it"),
    "generate": (
        "scailflow.scail.cli",
        "generate",
        "sample SCAIL-2 from prepared files (the official generate.py flags)",
    ),
    "convert": ("scailflow.scail.cli", "convert", "convert the training checkpoint to one safetensors file"),
    "calibrate": (
        "scailflow.scail.cli",
        "calibrate",
        "measure MagCache's ratios for your DiT once (then --step_cache mag), from prepared files",
    ),
    "prompt": (
        "scailflow.prompts.cli",
        None,
        "write a detailed prompt with Gemini from the driving video and reference",
    ),
    "masks": ("scailflow.masks.cli", None, "mask tools: `scailflow masks preview FOLDER`"),
    "pose": ("scailflow.pose.cli", None, "render the driving skeleton (pose-driven mode) for one video"),
    "init": ("scailflow.flows.cli", "init", "write a commented job.yaml (or pipelines.yaml) to start from"),
    "schema": (
        "scailflow.flows.cli",
        "schema",
        "print the JSON Schema of job.yaml or pipelines.yaml (editor completion)",
    ),
    "sweep": (
        "scailflow.flows.sweep_cli",
        None,
        "a grid of settings and seeds as takes, and one labelled contact sheet",
    ),
    "estimate": (
        "scailflow.flows.estimate_cli",
        None,
        "predicted seconds, GPU-minutes and cost of running folders, before running them",
    ),
    "models": (
        "scailflow.scail.models_cli",
        None,
        "weights: `scailflow models list`, `scailflow models download NAME`",
    ),
    "export": (
        "scailflow.flows.export_cli",
        None,
        "hand a prepared folder to ComfyUI: `scailflow export comfyui FOLDER`",
    ),
    "completion": ("scailflow.cli", "completion", "print a shell completion script (bash, zsh or tcsh)"),
}


def secrets_in(argv: list[str]) -> list[str]:
    """Values typed for a secret flag (`--api_key KEY`, `--api-key=KEY`, an abbreviation such as `--api KEY`)."""
    found = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if not flag.startswith("--api"):
            continue
        if eq:
            found.append(value)
        elif i + 1 < len(argv):
            found.append(argv[i + 1])
    return [s for s in found if s]


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with secrets kept out of its messages: `scailflow prompt --api_key KEY --typo` (or the key given to a
    command that has no such flag) must not print the key back."""

    secrets: list[str] = []

    def error(self, message: str):
        super().error(redact(message, self.secrets))


def _hooks(module: str, name: str | None):
    mod = importlib.import_module(module)
    if name is None:
        return mod.add_arguments, mod.run
    return getattr(mod, f"add_{name}_arguments"), getattr(mod, f"run_{name}")


def build_parser(only: str | None = "*") -> argparse.ArgumentParser:
    """The parser; subcommands other than `only` get their name and help but no options ("*": all of them)."""
    parser = Parser(prog="scailflow", description="SCAIL-2 character animation, folder to video.")
    parser.add_argument("--version", action="version", version=f"scailflow {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd, (module, name, help_text) in COMMANDS.items():
        p = sub.add_parser(cmd, help=help_text, description=help_text)
        if only not in ("*", cmd):
            continue
        add, run = _hooks(module, name)
        add(p)
        p.set_defaults(_run=run)
    return parser


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def add_completion_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"))


def run_completion(args) -> int:
    """`eval "$(scailflow completion bash)"`, or save it where your shell reads completions."""
    import shtab

    print(shtab.complete(build_parser("*"), shell=args.shell))
    return 0


def oom_message(exc: BaseException) -> str:
    return (
        "GPU out of memory: try `--offload block --vram_budget_gb <GiB free>`, `--offload model`, or a smaller "
        f"--target_h/--target_w ({str(exc).splitlines()[0][:160]})"
    )


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None  # the console script, not a caller in the same process
    argv = sys.argv[1:] if argv is None else list(argv)
    secrets = Parser.secrets = secrets_in(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    from scailflow import console, stop
    from scailflow.files import private_umask, restore_umask

    debug = bool(args.debug or os.environ.get("SCAILFLOW_DEBUG"))
    console.setup(debug=debug, quiet=args.quiet, native=own_process and not debug)
    private_umask()  # our state (Prefect's database and results) is private; outputs keep the user's umask
    if args.command != "serve":  # `serve` is Prefect's runner, which shuts its flow runs down itself
        stop.install()  # SIGTERM / SIGINT: stop within seconds, one line, exit 143 / 130
    try:
        code = int(args._run(args) or 0)
        stop.finish()
        return code
    except InputError as e:
        stop.finish()
        print(f"error: {redact(str(e), secrets)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stop.finish()
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `scailflow schema job | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI promises one line, --debug shows the traceback
        stop.finish()
        if debug:
            raise
        if is_out_of_memory(e):
            print(f"error: {oom_message(e)}", file=sys.stderr)
            return 3
        first = redact(str(e), secrets).splitlines()[0] if str(e) else ""
        print(f"error: {e.__class__.__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        stop.uninstall()
        restore_umask()


if __name__ == "__main__":
    sys.exit(main())
