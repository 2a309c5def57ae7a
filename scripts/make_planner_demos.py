"""Write orchestrator/data/planner_demos_generated.jsonl: worked planning examples composed from phrase templates.

Small planners copy the structure of the examples they are shown, so the demo pool needs requests of
every shape (one tool, chains of two to four, two branches joining) phrased the many ways people ask.
This script composes them from per-tool phrasings written for this project (no evaluation data is
used) with a fixed seed, so the file is reproducible and reviewed like code:

    python scripts/make_planner_demos.py
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "orchestrator" / "data" / "planner_demos_generated.jsonl"

IMAGES = ["photo.jpg", "picture.png", "scan.png", "street.jpg", "holiday.jpg", "sketch.png", "page.png", "poster.jpg"]
AUDIOS = ["recording.wav", "speech.wav", "voice.flac", "interview.wav", "clip.mp3", "message.wav"]
SERIES = ["temperature.csv", "sales.csv", "heart_rate.csv"]
TEXTS = ["The museum opens at ten and closes at six on weekdays.", "Our team finished the project two weeks early.",
         "Please water the plants while I am away.", "The new bridge will connect the two halves of the city.",
         "Fresh bread is baked here every morning.", "The concert was cancelled because of the storm."]
LONG_TEXTS = ["The library will close for renovation in March. During the closure, books can be returned at the "
              "town hall, and the reading room moves to the school next door until the work is finished in June.",
              "Researchers tracked forty bird species over ten years and found that most now arrive earlier in "
              "spring, which they link to warmer winters and changes in the insects the birds feed on."]
QUESTIONS = ["What is the person holding?", "How many windows are there?", "What colour is the car?",
             "Is it daytime or night?"]
DOC_QUESTIONS = ["What is the invoice number?", "Who signed the letter?", "What is the total amount?"]
INSTRUCTIONS = ["the sky is orange", "the car is blue", "it looks like winter", "the background is white"]
STYLES = ["an oil painting", "a pencil drawing", "a cartoon", "a night scene"]
SCENES = ["a fox in the snow", "a busy market at noon", "a sailing boat at sunset", "a robot reading a book"]
SOUNDS = ["birds singing at dawn", "a train passing by", "rain on a window"]


@dataclass(frozen=True)
class Step:
    tool: str
    kind: str  # what it takes: image, audio, text, time_series
    makes: str  # what a later step can use: image, audio, text
    standalone: tuple[str, ...]  # {x}: the input's name or quoted text
    follow: tuple[str, ...]  # acting on the previous result
    argument: str
    output: str = ""  # the output to name when chaining (for tools with several of that kind)
    extra: str = ""  # a literal argument: "instruction", "prompt", "question", "sentences"


STEPS = [
    Step("image-captioning", "image", "text", ("describe the image {x}", "generate a caption for {x}", "tell me what {x} shows"),
         ("describe the resulting image", "write a caption for it", "convert the result into a text description"), "image"),
    Step("ocr", "image", "text", ("extract the text from {x}", "read the words written in {x}"),
         ("read the text in the result", "extract the text it contains"), "image"),
    Step("image-classification", "image", "text", ("classify the image {x}", "tell me which category {x} belongs to"),
         ("classify the resulting image", "predict its class"), "image", "label"),
    Step("object-detection", "image", "text", ("detect the objects in {x}", "find and box every object in {x}"),
         ("detect the objects in the result", "find the objects in it"), "image", "summary"),
    Step("semantic-segmentation", "image", "image", ("segment {x} into regions", "perform image segmentation on {x}"),
         ("segment the result", "split it into segments"), "image", "overlay"),
    Step("depth-estimation", "image", "image", ("estimate the depth of the objects in {x}", "make a depth map of {x}"),
         ("estimate the depth in the result", "create a depth map of it"), "image", "visualization"),
    Step("image-editing", "image", "image", ("edit {x} so that {e}", "modify {x} so that {e}"),
         ("edit the result so that {e}", "change it so that {e}"), "image", extra="instruction"),
    Step("image-to-image", "image", "image", ("turn {x} into {e}", "restyle {x} as {e}"),
         ("turn the result into {e}", "transform it into {e}"), "image", extra="prompt"),
    Step("visual-question-answering", "image", "text", ("answer the question '{e}' about {x}", "look at {x} and tell me: {e}"),
         ("answer '{e}' about the result",), "image", extra="question"),
    Step("document-question-answering", "image", "text", ("answer '{e}' from the document {x}",), (), "image", extra="question"),
    Step("tabular-classification", "image", "text", ("classify the rows of the table in {x}",),
         ("classify the table in the result",), "image", "summary"),
    Step("text-to-speech", "text", "audio", ("read '{x}' out loud", "convert the text '{x}' into speech"),
         ("read it aloud", "turn it into speech", "generate an audio file of it"), "text"),
    Step("summarization", "text", "text", ("summarize '{x}'",), ("summarize it", "make it shorter"), "text"),
    Step("translation", "text", "text", ("translate '{x}' into German",), ("translate it", "translate the result"), "text"),
    Step("named-entity-recognition", "text", "text", ("find the named entities in '{x}'",),
         ("identify the entities in it", "tag the names of people and places in it"), "text", "text"),
    Step("chat", "text", "text", ("give me a conversational reply to '{x}'",),
         ("write a conversational response to it", "reply to it as a chat assistant"), "message"),
    Step("text-generation", "text", "text", ("continue the text '{x}'",), ("write a longer text from it",), "prompt"),
    Step("sentence-similarity", "text", "text", ("compare '{x}' with '{e}'",),
         ("compare it with '{e}'", "check how similar it is to '{e}'"), "source", "best", "sentences"),
    Step("text-to-image", "text", "image", ("generate an image of {x}", "draw {x}"),
         ("generate an image from it", "create a picture based on it"), "prompt"),
    Step("text-to-video", "text", "video", ("make a short video of {x}",), ("create a video from it",), "prompt"),
    Step("text-to-audio", "text", "audio", ("create the sound of {x}",), ("make a sound effect from it",), "prompt"),
    Step("speech-recognition", "audio", "text", ("transcribe {x}", "convert the speech in {x} to text"),
         ("transcribe it", "convert the speech to text"), "audio"),
    Step("audio-classification", "audio", "text", ("classify the sounds in {x}", "tell me what kind of audio {x} is"),
         ("classify the resulting audio", "identify what it sounds like"), "audio", "label"),
    Step("speech-enhancement", "audio", "audio", ("remove the background noise from {x}", "enhance the audio quality of {x}"),
         ("clean up the noise in it", "enhance its quality"), "audio"),
    Step("voice-conversion", "audio", "audio", ("make {x} sound like a different speaker",),
         ("make it sound like another voice",), "audio", "audio"),
    Step("voice-activity-detection", "audio", "json", ("find where people speak in {x}",), (), "audio"),
    Step("time-series-description", "time_series", "text", ("describe the trends in {x}",), (), "series", "text"),
]
BY_TOOL = {step.tool: step for step in STEPS}
EXTRAS = {"instruction": INSTRUCTIONS, "prompt": STYLES, "question": QUESTIONS, "sentences": TEXTS}
OPENERS = {"image": ["I have an image '{f}'.", "Here is a picture, {f}.", "Take the photo {f}."],
           "audio": ["I have an audio file '{f}'.", "Here is a recording, {f}."],
           "time_series": ["I have a time series in {f}."], "text": [""]}
JOINERS = [" Then ", " After that, ", " Next, ", " Finally, "]


def literal(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def seed_value(step: Step, rng: random.Random) -> str:
    """A standalone text input for a text tool, as the request would quote it."""
    if step.tool == "summarization":
        return rng.choice(LONG_TEXTS)
    if step.tool in ("text-to-image", "text-to-video"):
        return rng.choice(SCENES)
    if step.tool == "text-to-audio":
        return rng.choice(SOUNDS)
    return rng.choice(TEXTS)


def call(step: Step, source: str, extra: str | None) -> str:
    args = [f"{step.argument}={source}"]
    if step.extra:
        args.append(f"{step.extra}={literal(extra or '')}")
    return f"{step.tool}({', '.join(args)})"


def reference(step: Step, task: int, wanted: str) -> str:
    return f"t{task}.{step.output}" if step.output and step.makes == wanted else f"t{task}"


def sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def chain(rng: random.Random, length: int) -> dict | None:
    first = rng.choice([s for s in STEPS if s.standalone])
    steps = [first]
    while len(steps) < length:
        options = [s for s in STEPS if s.kind == steps[-1].makes and s.follow and s.tool != steps[-1].tool]
        if not options:
            return None
        steps.append(rng.choice(options))
    files, lines, clauses = [], [], []
    for index, step in enumerate(steps, 1):
        extra = rng.choice(EXTRAS[step.extra]) if step.extra else None
        if index == 1:
            if step.kind == "text":
                value = seed_value(step, rng)
                source, shown = literal(value), value
            else:
                name = rng.choice({"image": IMAGES, "audio": AUDIOS, "time_series": SERIES}[step.kind])
                files.append({"name": name, "kind": step.kind})
                source, shown = name, name
            clauses.append(rng.choice(step.standalone).format(x=shown, e=extra))
        else:
            source = reference(steps[index - 2], index - 1, step.kind)
            clauses.append(rng.choice(step.follow).format(e=extra))
        lines.append(f"t{index} = {call(step, source, extra)}")
    opener = rng.choice(OPENERS[first.kind]).format(f=files[0]["name"]) if files else ""
    body = "Please " + clauses[0]
    for clause in clauses[1:]:
        body += "." + rng.choice(JOINERS) + clause
    request = (opener + " " + body + ".").strip()
    if files and rng.random() < 0.5:
        request = sentence(clauses[0]) + " " + " ".join(sentence(c) for c in clauses[1:])
    return {"request": request, "files": files, "plan": "\n".join(lines)}


def fan_in(rng: random.Random) -> dict:
    """Two inputs analysed separately, then compared or combined: the DAG shape."""
    image, audio = rng.choice(IMAGES), rng.choice(AUDIOS)
    describe = rng.choice(["image-captioning", "ocr", "image-classification", "visual-question-answering"])
    listen = rng.choice(["speech-recognition", "audio-classification"])
    question = rng.choice(QUESTIONS)
    first = call(BY_TOOL[describe], image, question if describe == "visual-question-answering" else None)
    ending = rng.choice(["compare", "edit", "speak"])
    lines = [f"t1 = {first}", f"t2 = {BY_TOOL[listen].tool}(audio={audio})"]
    a = rng.choice(BY_TOOL[describe].standalone).format(x=image, e=question)
    b = rng.choice(BY_TOOL[listen].standalone).format(x=audio)
    ref1 = reference(BY_TOOL[describe], 1, "text")
    ref2 = reference(BY_TOOL[listen], 2, "text")
    if ending == "compare":
        lines.append(f"t3 = sentence-similarity(source={ref1}, sentences={ref2})")
        tail = "compare the two results"
    elif ending == "edit" and listen == "speech-recognition":
        lines.append(f"t3 = image-editing(image={image}, instruction={ref2})")
        tail = f"edit {image} following what is said"
    else:
        lines.append(f"t3 = text-to-speech(text={ref1})")
        tail = "read the first result aloud"
    return {"request": f"{sentence(a)} Also {b}, and {tail}.",
            "files": [{"name": image, "kind": "image"}, {"name": audio, "kind": "audio"}], "plan": "\n".join(lines)}


def branches(rng: random.Random) -> dict:
    """One input feeding two independent tools, one of which feeds a third."""
    step = rng.choice([s for s in STEPS if s.kind == "image" and s.makes == "text" and not s.extra])
    image = rng.choice(IMAGES)
    other = rng.choice([s for s in STEPS if s.kind == "image" and s.tool != step.tool and not s.extra])
    after = rng.choice([s for s in STEPS if s.kind == "text" and s.follow and not s.extra])
    lines = [f"t1 = {call(step, image, None)}", f"t2 = {call(other, image, None)}",
             f"t3 = {call(after, reference(step, 1, 'text'), None)}"]
    request = (f"For {image}: {rng.choice(step.standalone).format(x='it')} and {rng.choice(other.standalone).format(x='it')}. "
               f"Then {rng.choice(after.follow)} (the first result).")
    return {"request": request, "files": [{"name": image, "kind": "image"}], "plan": "\n".join(lines)}


def single(step: Step, phrase: str, rng: random.Random) -> dict:
    extra = rng.choice(EXTRAS[step.extra]) if step.extra else None
    if step.kind == "text":
        value = seed_value(step, rng)
        return {"request": sentence(phrase.format(x=value, e=extra)), "files": [],
                "plan": f"t1 = {call(step, literal(value), extra)}"}
    name = rng.choice({"image": IMAGES, "audio": AUDIOS, "time_series": SERIES}[step.kind])
    opener = rng.choice(OPENERS[step.kind]).format(f=name)
    asked = phrase.format(x=name, e=extra)
    request = f"{opener} Please {asked}." if rng.random() < 0.6 else sentence(asked)
    return {"request": request, "files": [{"name": name, "kind": step.kind}], "plan": f"t1 = {call(step, name, extra)}"}


def main() -> int:
    rng = random.Random(20261201)
    demos = [single(step, phrase, rng) for step in STEPS for phrase in step.standalone]
    seen = {d["request"] for d in demos}
    for length, count in ((2, 70), (3, 60), (4, 30)):
        made = 0
        while made < count:
            demo = chain(rng, length)
            if demo and demo["request"] not in seen:
                seen.add(demo["request"])
                demos.append(demo)
                made += 1
    for maker, count in ((fan_in, 25), (branches, 20)):
        for _ in range(count):
            demo = maker(rng)
            if demo["request"] not in seen:
                seen.add(demo["request"])
                demos.append(demo)
    OUT.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in demos), encoding="utf-8")
    print(f"{len(demos)} demos -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
