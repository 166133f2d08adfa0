"""What we ask Gemini (caption request, replacement and animation templates) and how its answers are checked."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from scailflow.errors import InputError
from scailflow.options import Mode, choices

MODES = choices(Mode)
MIN_WORDS, MAX_WORDS = 90, 140  # what the answer check accepts
TARGET_WORDS = (100, 130)  # what we ask for: models miss word counts a little, so aim inside the accepted range
DEFAULT_EXAMPLES = Path(__file__).with_name("examples_default.txt")

FRAMES_MANY = "The {n} pictures above are frames sampled evenly, in order, from one video."
FRAMES_ONE = "The picture above is the middle frame of one video."
CAPTION_TEMPLATE = """\
{frames}
Write one paragraph in English that describes this video as a whole:
- the scene: place, background, lighting, and how the camera frames and follows the action;
- the main person: build, hair, and every piece of clothing with its colour, fit and material, plus accessories;
- the motion: what the person does from the first frame to the last, with direction and pace;
- every object the person holds, carries, sits on or touches, and any other people and where they are.
Plain descriptive prose, present tense, no lists, no headings, no preamble."""

_SHARED_RULES = """\
Write the answer as one paragraph of {min_words} to {max_words} words in English, present tense, that
describes what a viewer sees in the finished video: the character's face, hair, build, clothing with colours and
materials, and accessories (taken from the attached picture); the motion, pace and camera; the objects touched;
the setting and lighting. Write it as a description, never as a command. Do not mention pictures, photos,
references, edits, instructions, or any exchange of one person for another, and do not use the words
"replace" or "swap". No title, no quotes, no preamble: only the paragraph.

Example paragraphs in the wanted style:
{examples}

Description of the source video:
{caption}

Request:
{instruction}"""

REPLACEMENT_TEMPLATE = (
    """\
The attached picture shows a character. A source video is described below, and a request below says which person
in that video the character takes the place of. Describe the video as it looks after the change: the character
from the picture performs exactly the same motion as that person, in the same scene, with the same camera,
lighting, objects and other people. The character's appearance comes from the picture; everything else comes
from the source video.
"""
    + _SHARED_RULES
)

ANIMATION_TEMPLATE = (
    """\
The attached picture shows a character. A source video (the motion to follow) is described below, together with a
request. Describe a video in which the character from the picture performs the motion of the person in the
source video. Set it in the source video's scene unless the request asks for the picture's own setting; then
describe the picture's background and lighting instead. The character's appearance always comes from the picture;
the motion and pace always come from the source video.
"""
    + _SHARED_RULES
)

_TEMPLATES = {"replacement": REPLACEMENT_TEMPLATE, "animation": ANIMATION_TEMPLATE}

# Derived from the texts, so editing any template invalidates cached prompts by itself.
TEMPLATE_VERSION = hashlib.sha256(
    "\0".join((FRAMES_MANY, FRAMES_ONE, CAPTION_TEMPLATE, REPLACEMENT_TEMPLATE, ANIMATION_TEMPLATE)).encode()
).hexdigest()[:16]

# Wording that shows the answer talks about the edit instead of describing the video.
BANNED = re.compile(
    r"\b(replac\w*|swap\w*|substitut\w*|instructions?|instructed"
    r"|reference (image|photo|picture|character|person)"
    r"|(the|this|that|attached|given|provided) (image|photo|photograph|picture))\b",
    re.IGNORECASE,
)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def caption_request(n_frames: int) -> str:
    """The text sent after the sampled frames in call 1."""
    frames = FRAMES_ONE if n_frames == 1 else FRAMES_MANY.format(n=n_frames)
    return CAPTION_TEMPLATE.format(frames=frames)


def prompt_request(mode: str, instruction: str, caption: str, examples: str) -> str:
    """The text sent after the reference image in call 2."""
    return _TEMPLATES[check_mode(mode)].format(
        min_words=TARGET_WORDS[0],
        max_words=TARGET_WORDS[1],
        instruction=instruction.strip(),
        caption=caption.strip(),
        examples=examples.strip() or "(none)",
    )


def load_examples(path: str | os.PathLike | None, max_chars: int) -> str:
    """Few-shot example paragraphs (blank-line separated), whole paragraphs kept up to `max_chars` characters.

    A first paragraph longer than the limit is cut at a word boundary. `path` None means the shipped file.
    """
    if max_chars < 0:
        raise InputError(f"max_example_chars must be >= 0, got {max_chars}")
    path = Path(path) if path is not None else DEFAULT_EXAMPLES
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read examples file {path}: {e.__class__.__name__}: {e}") from None
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    kept: list[str] = []
    used = 0
    for p in paragraphs:
        extra = len(p) + (2 if kept else 0)
        if used + extra > max_chars:
            if not kept:
                kept.append(p[:max_chars].rsplit(" ", 1)[0])
            break
        kept.append(p)
        used += extra
    return "\n\n".join(k for k in kept if k)


def normalize_answer(text: str | None) -> str:
    """One paragraph: whitespace collapsed, wrapping quotes and markdown emphasis stripped."""
    text = " ".join((text or "").split())
    text = text.replace("**", "")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def word_count(text: str) -> int:
    return len(text.split())


def prompt_problem(text: str) -> str | None:
    """Why a final prompt is unusable (length, banned wording, not English), or None when it is fine."""
    if not text:
        return "the answer was empty"
    words = word_count(text)
    if not MIN_WORDS <= words <= MAX_WORDS:
        return f"the answer had {words} words, outside {MIN_WORDS}-{MAX_WORDS}"
    hit = BANNED.search(text)
    if hit:
        return f"the answer used the wording {hit.group(0)!r}"
    letters = [c for c in text if c.isalpha()]
    if sum(c.isascii() for c in letters) < 0.95 * len(letters):
        return "the answer was not in English"
    return None


def caption_problem(text: str) -> str | None:
    """Why a caption is unusable, or None."""
    return None if text else "the answer was empty"
