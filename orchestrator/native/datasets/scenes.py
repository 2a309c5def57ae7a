"""Drawn scenes for vision -> text alignment: coloured shapes at named positions and sometimes a written word.

Each scene puts 1-4 distinct shapes, each in its own region (left, right, top, bottom, centre), and
optionally one word in a free region, on a plain background. Regions are far enough apart that shapes
never touch, so "where is the X" and "what shape is on the left" have one answer. Shapes are drawn
without anti-aliasing: every pixel of a shape has exactly its declared colour.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from orchestrator.errors import InvalidInputError

from . import QAItem, check_count, parse_choice, parse_number

__all__ = ["SceneObject", "SceneDescription", "SceneExample", "render_scene", "scene_examples", "caption_scene",
           "score_answer", "COLOURS", "SHAPES", "REGIONS", "QA_KINDS"]

COLOURS = {"red": (220, 30, 30), "green": (30, 150, 50), "blue": (30, 70, 220), "yellow": (240, 200, 20),
           "orange": (245, 130, 20), "purple": (140, 50, 180)}
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon")
REGIONS = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8), "centre": (0.5, 0.5)}
BACKGROUNDS = ((255, 255, 255), (235, 235, 235), (245, 240, 225))
WORDS = ("CAT", "SUN", "MAP", "BOX", "TREE", "FISH", "MOON", "BIRD", "KING", "LAMP", "RAIN", "SHIP", "DOG", "CAKE")
WORD_COLOUR = (0, 0, 0)
QA_KINDS = ("count", "colour", "position", "shape", "word", "caption")
MIN_SIZE, MAX_SIZE = 64, 1024

_REGION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                   "centre": "in the centre"}
_COLOUR_WORDS = {name: (name,) for name in COLOURS} | {"purple": ("purple", "violet")}
_SHAPE_WORDS = {"circle": ("circle", "disc", "disk", "round"), "square": ("square",), "triangle": ("triangle",),
                "diamond": ("diamond", "rhombus"), "hexagon": ("hexagon",)}
_REGION_WORDS = {"left": ("left",), "right": ("right",), "top": ("top", "upper", "above"),
                 "bottom": ("bottom", "lower", "below"), "centre": ("centre", "center", "middle")}


@dataclass
class SceneObject:
    shape: str
    colour: str
    region: str
    centre: tuple[int, int]                 # pixels
    box: tuple[int, int, int, int]          # (x0, y0, x1, y1) pixels, inclusive of the drawn shape


@dataclass
class SceneDescription:
    size: tuple[int, int]                   # (width, height)
    background: tuple[int, int, int]
    objects: list[SceneObject]
    word: str | None = None
    word_region: str | None = None
    word_box: tuple[int, int, int, int] | None = None
    colours: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(COLOURS))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "triangle":
        return [(cx, cy - r), (cx + 0.95 * r, cy + 0.8 * r), (cx - 0.95 * r, cy + 0.8 * r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "hexagon":
        return [(cx + r * math.cos(math.pi / 3 * k), cy + r * math.sin(math.pi / 3 * k)) for k in range(6)]
    return None


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> tuple[int, int, int, int]:
    if shape == "circle":
        box = (cx - r, cy - r, cx + r, cy + r)
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        half = 0.85 * r  # a square of the same half-width looks bigger than the round shapes
        box = (cx - half, cy - half, cx + half, cy + half)
        draw.rectangle(box, fill=fill)
    else:
        points = _polygon(shape, cx, cy, r)
        draw.polygon(points, fill=fill)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
    return (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))


def render_scene(rng: np.random.Generator, size: int = 224, *, num_objects: int | None = None,
                 with_word: bool | None = None) -> tuple[Image.Image, SceneDescription]:
    """One scene drawn from ``rng``: the RGB image and what is in it, where."""
    from orchestrator.storage.render import dejavu_font

    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"scenes: rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInputError(f"scenes: size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    drawn_count = int(rng.integers(1, 5))
    drawn_word = bool(rng.random() < 0.5)
    count = drawn_count if num_objects is None else num_objects
    if not isinstance(count, int) or not 1 <= count <= 4:
        raise InvalidInputError(f"scenes: num_objects must be 1 to 4 (one region stays free for the word), got {count!r}")
    wants_word = drawn_word if with_word is None else bool(with_word)

    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    regions = [str(r) for r in rng.permutation(list(REGIONS))]
    shapes = [str(s) for s in rng.permutation(SHAPES)[:count]]
    objects = []
    for shape, region in zip(shapes, regions):
        colour = str(rng.choice(list(COLOURS)))
        ax, ay = REGIONS[region]
        # Anchors are 0.3 of the image apart; radius <= 0.1 and jitter <= 0.02 keep neighbours apart.
        cx = (ax + rng.uniform(-0.02, 0.02)) * size
        cy = (ay + rng.uniform(-0.02, 0.02)) * size
        r = rng.uniform(0.075, 0.1) * size
        box = _draw_shape(draw, shape, cx, cy, r, COLOURS[colour])
        objects.append(SceneObject(shape, colour, region, (int(round(cx)), int(round(cy))), box))

    word = word_region = word_box = None
    if wants_word:
        word = str(rng.choice(WORDS))
        word_region = regions[count]
        font = dejavu_font(max(10, int(0.1 * size)))
        ax, ay = REGIONS[word_region]
        draw.text((ax * size, ay * size), word, fill=WORD_COLOUR, font=font, anchor="mm")
        word_box = tuple(int(v) for v in draw.textbbox((ax * size, ay * size), word, font=font, anchor="mm"))
    return image, SceneDescription((size, size), background, objects, word, word_region, word_box)


def caption_scene(scene: SceneDescription) -> str:
    """'A red circle on the left, a blue square at the top and the word "SUN" in the centre.'"""
    parts = [f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.colour} {o.shape} {_REGION_PHRASES[o.region]}" for o in scene.objects]
    if scene.word:
        parts.append(f'the word "{scene.word}" {_REGION_PHRASES[scene.word_region]}')
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:] + "."


@dataclass
class SceneExample:
    image: Image.Image
    scene: SceneDescription
    caption: str
    qa: list[QAItem]


def _scene_questions(scene: SceneDescription, rng: np.random.Generator) -> list[QAItem]:
    truth = asdict(scene)
    items = []
    count = len(scene.objects)
    items.append(QAItem(str(rng.choice(["How many shapes are there?", "How many shapes can you see?",
                                        "Count the shapes in the picture."])), str(count), "count", truth | {"target": {"count": count}}))
    target = scene.objects[int(rng.integers(count))]
    items.append(QAItem(str(rng.choice([f"What colour is the {target.shape}?", f"Which colour does the {target.shape} have?"])),
                        target.colour, "colour", truth | {"target": asdict(target)}))
    target = scene.objects[int(rng.integers(count))]
    items.append(QAItem(str(rng.choice([f"Where is the {target.shape}?", f"In which part of the image is the {target.shape}?"])),
                        target.region, "position", truth | {"target": asdict(target)}))
    target = scene.objects[int(rng.integers(count))]
    phrase = _REGION_PHRASES[target.region]
    items.append(QAItem(str(rng.choice([f"What shape is {phrase}?", f"Which shape do you see {phrase}?"])),
                        target.shape, "shape", truth | {"target": asdict(target)}))
    if scene.word:
        items.append(QAItem(str(rng.choice(["What word is written in the image?", "Read the word in the picture.",
                                            "Which word is written here?"])),
                            scene.word, "word", truth | {"target": {"word": scene.word}}))
    items.append(QAItem(str(rng.choice(["Describe the image.", "What is in this picture?", "Write a short caption."])),
                        caption_scene(scene), "caption", truth))
    return items


def scene_examples(n: int, seed: int, size: int = 224) -> list[SceneExample]:
    """``n`` scenes from ``seed``, each with its caption and questions of every kind that applies to it."""
    check_count(n)
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(n):
        image, scene = render_scene(rng, size)
        examples.append(SceneExample(image, scene, caption_scene(scene), _scene_questions(scene, rng)))
    return examples


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def score_answer(item: QAItem, predicted: str) -> bool:
    """Whether ``predicted`` answers ``item``: counts exact; colour, position and shape must name only the
    right one; the word must appear; a caption must name every shape with its colour and no other shape."""
    if not isinstance(predicted, str):
        return False
    target = item.attributes.get("target", {})
    if item.kind == "count":
        return parse_number(predicted) == target["count"]
    if item.kind == "colour":
        return parse_choice(predicted, _COLOUR_WORDS) == target["colour"]
    if item.kind == "position":
        return parse_choice(predicted, _REGION_WORDS) == target["region"]
    if item.kind == "shape":
        return parse_choice(predicted, _SHAPE_WORDS) == target["shape"]
    if item.kind == "word":
        return target["word"].lower() in _words(predicted)
    if item.kind == "caption":
        lowered = predicted.lower()
        objects = item.attributes["objects"]
        named = {shape for shape in SHAPES if any(re.search(rf"\b{w}s?\b", lowered) for w in _SHAPE_WORDS[shape])}
        pairs = all(re.search(rf"\b{o['colour']}\s+{o['shape']}\b", lowered) for o in objects)
        return pairs and named == {o["shape"] for o in objects}
    raise InvalidInputError(f"scenes QA: unknown question kind {item.kind!r}")
