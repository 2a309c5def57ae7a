"""Workflow graph pictures: Mermaid text that parses as written, and a readable PNG."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from orchestrator.errors import InvalidInputError
from orchestrator.workflows.graph_drawing import (
    KIND_FILL_COLOURS,
    DrawEdge,
    DrawNode,
    _fit,
    _gap_point,
    _layout,
    draw_png,
    to_mermaid,
)


def detect_and_describe() -> tuple[list[DrawNode], list[DrawEdge]]:
    nodes = [
        DrawNode("image", "image", "input", "image"),
        DrawNode("query", 'say "hi" | <b>', "input", "text"),
        DrawNode("detect", "detect", "task", "open-vocabulary-detection"),
        DrawNode("crop", "crop", "task", "image-crop", fan_out="for each crop of $detect.detections"),
        DrawNode("caption", "caption", "task", "image-captioning", condition="if count($detect.detections) > 0"),
        DrawNode("end", "end", "output", "text"),
    ]
    edges = [
        DrawEdge("image", "detect", "image -> image"),
        DrawEdge("query", "detect", 'text -> labels [a|b] "q" #1;'),
        DrawEdge("detect", "crop", "detections -> boxes", "fan_out"),
        DrawEdge("image", "crop"),
        DrawEdge("crop", "caption", "crops -> image", "fan_out"),
        DrawEdge("detect", "caption", "detections", "condition"),
        DrawEdge("caption", "end", "text"),
    ]
    return nodes, edges


def mermaid_labels(text: str) -> list[str]:
    """Every quoted label in Mermaid text (node texts and edge labels)."""
    return re.findall(r'"([^"]*)"', text.split("\n---\n")[-1])


def test_mermaid_lists_every_node_and_edge_with_its_shape_and_arrow():
    nodes, edges = detect_and_describe()
    text = to_mermaid(nodes, edges, title="Find and describe")

    assert text.startswith('---\ntitle: "Find and describe"\n---\nflowchart LR\n')
    assert '    n_image(["image<br/>image"])' in text  # input: stadium
    assert '    n_detect["detect<br/>open-vocabulary-detection"]' in text  # task: rectangle
    assert '    n_crop[["crop<br/>image-crop<br/>for each crop of $detect.detections"]]' in text  # fan-out
    assert '    n_caption{{"caption<br/>image-captioning<br/>if count($detect.detections) #gt; 0"}}' in text
    assert '    n_end[/"end<br/>text"/]' in text  # output; the 'n_' prefix keeps clear of the 'end' keyword
    assert '    n_image -->|"image -#gt; image"| n_detect' in text
    assert '    n_detect ==>|"detections -#gt; boxes"| n_crop' in text
    assert '    n_detect -.->|"detections"| n_caption' in text
    assert "    n_image --> n_crop\n" in text  # no label, no empty label
    assert "    class n_image,n_query input\n" in text
    assert "    class n_end output\n" in text
    statements = [line for line in text.splitlines() if re.search(r" (-->|==>|-\.->)", line)]
    assert len(statements) == len(edges)


def test_mermaid_escapes_characters_that_would_break_the_syntax():
    nodes, edges = detect_and_describe()
    text = to_mermaid(nodes, edges)
    assert '    n_query(["say #quot;hi#quot; #124; #lt;b#gt;<br/>text"])' in text
    assert '|"text -#gt; labels [a#124;b] #quot;q#quot; #35;1;"|' in text
    for label in mermaid_labels(text):
        unescaped = label.replace("<br/>", "")
        assert not set(unescaped) & set('"|<>`'), label
        # every '#' starts one of our entity codes, so none of the caller's text is read as one
        assert re.fullmatch(r"([^#]|#(quot|lt|gt|amp|35|124|96);)*", unescaped), label


def test_mermaid_ids_are_safe_and_unique_for_any_node_id():
    nodes = [DrawNode("a b", "x", "task"), DrawNode("a-b", "y", "task"), DrawNode("a/b", "z", "task"), DrawNode("a_b_2", "w", "task")]
    text = to_mermaid(nodes, [DrawEdge("a b", "a-b"), DrawEdge("a-b", "a/b")])
    assert '    n_a_b["x"]' in text and '    n_a_b_2["y"]' in text and '    n_a_b_3["z"]' in text
    assert '    n_a_b_2_2["w"]' in text  # a literal id that looks like a generated one still gets its own
    assert "    n_a_b --> n_a_b_2\n" in text and "    n_a_b_2 --> n_a_b_3\n" in text


def test_mermaid_is_deterministic_and_multiline_text_stays_on_one_statement():
    nodes, edges = detect_and_describe()
    assert to_mermaid(nodes, edges) == to_mermaid(list(nodes), list(edges))
    text = to_mermaid([DrawNode("a", "two\nlines", "task")], [], title='say "x"\nnow', direction="TB")
    assert 'title: "say \\"x\\" now"' in text
    assert "flowchart TB\n" in text
    assert '    n_a["two lines"]' in text


@pytest.mark.parametrize("build, message", [
    (lambda: to_mermaid([DrawNode("a", "a", "task")], [DrawEdge("a", "b", "x")]), "edge 'a' -> 'b'.*unknown node 'b'"),
    (lambda: to_mermaid([DrawNode("a", "a", "task"), DrawNode("a", "b", "input")], []), "duplicate node id 'a'"),
    (lambda: DrawNode("a", "a", "step"), "kind 'step'"),
    (lambda: DrawNode("", "a", "task"), "id must not be empty"),
    (lambda: DrawEdge("a", "b", style="dotted"), "style 'dotted'"),
    (lambda: to_mermaid([], [], direction="up"), "direction 'up'"),
])
def test_bad_graphs_are_rejected_with_a_message_naming_the_problem(build, message):
    with pytest.raises(InvalidInputError, match=message):
        build()


def test_draw_png_rejects_unknown_endpoints_and_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match="unknown node 'ghost'"):
        draw_png([DrawNode("a", "a", "task")], [DrawEdge("ghost", "a")], tmp_path / "g.png")
    with pytest.raises(InvalidInputError, match="must end in .png"):
        draw_png([DrawNode("a", "a", "task")], [], tmp_path / "g.jpg")
    assert not list(tmp_path.iterdir())


def colour_pixels(image: Image.Image, hex_colour: str) -> int:
    rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    wanted = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(np.abs(rgb.astype(int) - wanted) <= 1, axis=1).sum())


def test_png_shows_a_box_of_each_kind(tmp_path):
    nodes, edges = detect_and_describe()
    written = draw_png(nodes, edges, tmp_path / "sub" / "graph.png", title="Find and describe")
    assert written == tmp_path / "sub" / "graph.png"
    with Image.open(written) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 1500 < width < 6000 and 250 < height < 1500  # five layers side by side, two rows
        assert width > 2 * height
        for kind, fill in KIND_FILL_COLOURS.items():
            assert colour_pixels(image, fill) > 2000, kind

    # Without outputs there is no output fill anywhere (the legend lists only kinds in use).
    draw_png(nodes[:-1], edges[:-1], tmp_path / "no-output.png")
    with Image.open(tmp_path / "no-output.png") as image:
        assert colour_pixels(image, KIND_FILL_COLOURS["output"]) == 0
        assert colour_pixels(image, KIND_FILL_COLOURS["task"]) > 2000


def test_layout_puts_nodes_in_longest_path_layers_without_overlaps():
    nodes, edges = detect_and_describe()
    layout = _layout(nodes, edges)
    assert layout.layer[:6] == [0, 0, 1, 2, 3, 4]
    assert layout.back_edges == []
    # image -> crop skips the detect layer: it passes through one route slot there
    assert len(layout.routes[3]) == 3 and layout.layer[layout.routes[3][1]] == 1
    assert_no_overlaps(layout)


def assert_no_overlaps(layout) -> None:
    by_layer: dict[int, list[int]] = {}
    for v, layer in enumerate(layout.layer):
        by_layer.setdefault(layer, []).append(v)
    for members in by_layer.values():
        members.sort(key=lambda v: layout.y[v])
        for a, b in zip(members, members[1:]):
            assert layout.y[b] - layout.y[a] >= (layout.height[a] + layout.height[b]) / 2 + 0.1 - 1e-9


def twenty_nodes() -> tuple[list[DrawNode], list[DrawEdge]]:
    nodes = [DrawNode(f"in{i}", f"input {i}", "input", "image") for i in range(3)]
    nodes += [DrawNode(f"t{i}", f"task number {i} with a rather long name", "task", f"tool-{i}",
                       condition="if x > 1" if i % 4 == 0 else "", fan_out="for each y" if i % 5 == 0 else "")
              for i in range(14)]
    nodes += [DrawNode(f"out{i}", f"result {i}", "output", "text") for i in range(3)]
    rng = np.random.default_rng(0)
    edges = []
    for i in range(14):
        for source in rng.choice([f"in{k}" for k in range(3)] + [f"t{k}" for k in range(i)], size=2, replace=False):
            edges.append(DrawEdge(str(source), f"t{i}", "value -> argument", "condition" if i % 4 == 0 else "data"))
    edges += [DrawEdge(f"t{13 - i}", f"out{i}", "result") for i in range(3)]
    return nodes, edges


def test_twenty_node_graph_renders_with_separate_boxes(tmp_path):
    nodes, edges = twenty_nodes()
    assert len(nodes) == 20
    layout = _layout(nodes, edges)
    assert_no_overlaps(layout)
    path = draw_png(nodes, edges, tmp_path / "twenty.png", title="twenty nodes")
    with Image.open(path) as image:
        assert image.size[0] < 30000 and image.size[1] < 30000
        for fill in KIND_FILL_COLOURS.values():
            assert colour_pixels(image, fill) > 1000


def test_cycles_and_self_loops_terminate_and_are_drawn_as_back_edges(tmp_path):
    nodes = [DrawNode("a", "a", "input"), DrawNode("b", "b", "task"), DrawNode("c", "c", "task"),
             DrawNode("d", "d", "output")]
    edges = [DrawEdge("a", "b"), DrawEdge("b", "c", "x"), DrawEdge("c", "b", "back", "condition"),
             DrawEdge("c", "c", "self"), DrawEdge("c", "d")]
    layout = _layout(nodes, edges)
    assert layout.back_edges == [2, 3]
    assert layout.layer[:4] == [0, 1, 2, 3]
    path = draw_png(nodes, edges, tmp_path / "cycle.png")
    with Image.open(path) as image:
        assert colour_pixels(image, KIND_FILL_COLOURS["task"]) > 1000
    assert "n_c -.->|\"back\"| n_b" in to_mermaid(nodes, edges)


def test_long_text_is_cut_with_an_ellipsis_to_fit():
    assert _fit("short", 2.0, 10) == "short"
    cut = _fit("a very long label " * 10, 2.0, 10)
    assert cut.endswith("…") and 10 < len(cut) < 60
    assert _fit("x" * 400, 0.01, 10) == "…"


def test_a_megabyte_title_is_measured_only_in_part(monkeypatch):
    # A workflow file's description becomes the picture's title; measuring a million characters a
    # dozen times took minutes (issue 15). Only a bounded prefix may ever reach the measuring.
    from matplotlib.textpath import text_to_path

    measure = text_to_path.get_text_width_height_descent
    longest = []

    def recording(text, *args, **kwargs):
        longest.append(len(text))
        return measure(text, *args, **kwargs)

    monkeypatch.setattr(text_to_path, "get_text_width_height_descent", recording)
    wide = _fit("word " * 200_000, 1000.0, 10)
    assert max(longest) <= 2001 and wide.endswith("…") and len(wide) <= 2001


def test_label_spots_lie_on_the_drawn_s_curve():
    start, end = (1.0, 2.0), (3.0, 5.0)
    assert _gap_point(start, end, 0.0) == pytest.approx(start)
    assert _gap_point(start, end, 1.0) == pytest.approx(end)
    assert _gap_point(start, end, 0.5) == pytest.approx((2.0, 3.5))
    x_quarter, y_quarter = _gap_point(start, end, 0.25)
    assert 1.0 < x_quarter < 2.0 and 2.0 < y_quarter < 3.5
