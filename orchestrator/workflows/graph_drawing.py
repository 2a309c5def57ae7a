"""Pictures of workflow graphs: Mermaid text and a PNG drawn with matplotlib (the ``plot`` extra).

This module knows nothing about workflows. Callers describe a graph with ``DrawNode`` and ``DrawEdge``
(inputs, tasks and outputs; data, condition and fan-out edges) and get back either Mermaid flowchart
text or a PNG laid out left to right in layers, the way data flows through a workflow.

The PNG layout is a small layered ("Sugiyama") drawing: back edges of cycles are set aside so the
layout always terminates, nodes get the layer of their longest path from a source, edges that skip
layers are routed through placeholder slots, a few barycentre sweeps order each layer to reduce
crossings, and nodes are then pulled level with their neighbours without overlapping.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ..errors import InvalidInputError, shown_path
from ..extras import import_extra
from ..storage.codecs import check_output_file

NODE_KINDS = ("input", "task", "output")
EDGE_STYLES = ("data", "condition", "fan_out")
MERMAID_DIRECTIONS = ("LR", "RL", "TB", "TD", "BT")

# Fill and border colours per node kind; the fills are exact so tests can find them in the PNG.
KIND_FILL_COLOURS = {"input": "#d8e8fb", "task": "#fff1cc", "output": "#d9f2dc"}
KIND_BORDER_COLOURS = {"input": "#3a78c2", "task": "#c0912a", "output": "#3c9a4a"}
EDGE_COLOURS = {"data": "#4d4d4d", "condition": "#c0561b", "fan_out": "#6a3d9a"}
EDGE_WIDTHS = {"data": 1.2, "condition": 1.3, "fan_out": 3.0}


@dataclass(frozen=True)
class DrawNode:
    """One box: an input, a task or an output of a graph."""

    id: str
    label: str
    kind: str
    detail: str = ""
    condition: str = ""
    fan_out: str = ""

    def __post_init__(self) -> None:
        for name in ("id", "label", "kind", "detail", "condition", "fan_out"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"DrawNode {name} must be a string, got {getattr(self, name)!r}")
        if not self.id:
            raise InvalidInputError("DrawNode id must not be empty")
        if self.kind not in NODE_KINDS:
            raise InvalidInputError(f"DrawNode {self.id!r} has kind {self.kind!r}; expected one of {NODE_KINDS}")


@dataclass(frozen=True)
class DrawEdge:
    """An arrow from one node to another; ``style`` says whether it carries data, a condition or a fan-out."""

    source: str
    target: str
    label: str = ""
    style: str = "data"

    def __post_init__(self) -> None:
        for name in ("source", "target", "label", "style"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"DrawEdge {name} must be a string, got {getattr(self, name)!r}")
        if self.style not in EDGE_STYLES:
            raise InvalidInputError(
                f"DrawEdge {self.source!r} -> {self.target!r} has style {self.style!r}; expected one of {EDGE_STYLES}")


def _check_graph(nodes: list[DrawNode], edges: list[DrawEdge]) -> None:
    seen: set[str] = set()
    for node in nodes:
        if not isinstance(node, DrawNode):
            raise InvalidInputError(f"graph nodes must be DrawNode objects, got {node!r}")
        if node.id in seen:
            raise InvalidInputError(f"duplicate node id {node.id!r}")
        seen.add(node.id)
    for edge in edges:
        if not isinstance(edge, DrawEdge):
            raise InvalidInputError(f"graph edges must be DrawEdge objects, got {edge!r}")
        missing = [end for end in (edge.source, edge.target) if end not in seen]
        if missing:
            raise InvalidInputError(
                f"edge {edge.source!r} -> {edge.target!r} refers to unknown node {missing[0]!r}")


# --------------------------------------------------------------------------------------------- Mermaid

# Inside a quoted Mermaid label these characters could still end the label, start an entity code or be
# read as HTML, so each becomes a Mermaid entity code. '#' goes first: the other codes start with it.
_MERMAID_ESCAPES = (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("&", "#amp;"),
                    ("|", "#124;"), ("`", "#96;"))


def _mermaid_text(text: str) -> str:
    text = " ".join(text.split())  # a newline would end the statement
    for raw, code in _MERMAID_ESCAPES:
        text = text.replace(raw, code)
    return text


def _mermaid_ids(nodes: list[DrawNode]) -> dict[str, str]:
    """Node id -> a Mermaid-safe id; the 'n_' prefix keeps clear of keywords such as 'end'."""
    safe: dict[str, str] = {}
    taken: set[str] = set()
    for node in nodes:
        base = "n_" + re.sub(r"[^A-Za-z0-9_]", "_", node.id)
        candidate, suffix = base, 2
        while candidate in taken:
            candidate, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(candidate)
        safe[node.id] = candidate
    return safe


def _mermaid_node(node: DrawNode, mermaid_id: str) -> str:
    lines = [node.label or node.id, node.detail, node.condition, node.fan_out]
    text = "<br/>".join(_mermaid_text(line) for line in lines if line)
    if node.kind == "input":
        opening, closing = '(["', '"])'  # stadium
    elif node.kind == "output":
        opening, closing = '[/"', '"/]'  # parallelogram
    elif node.condition:
        opening, closing = '{{"', '"}}'  # hexagon: runs only when its condition holds
    elif node.fan_out:
        opening, closing = '[["', '"]]'  # subroutine: runs once per item
    else:
        opening, closing = '["', '"]'
    return f"    {mermaid_id}{opening}{text}{closing}"


_MERMAID_ARROWS = {"data": "-->", "condition": "-.->", "fan_out": "==>"}


def to_mermaid(nodes: list[DrawNode], edges: list[DrawEdge], *, title: str = "", direction: str = "LR") -> str:
    """Mermaid flowchart text for the graph; the same graph always gives the same text."""
    _check_graph(nodes, edges)
    if direction not in MERMAID_DIRECTIONS:
        raise InvalidInputError(f"Mermaid direction {direction!r} is not one of {MERMAID_DIRECTIONS}")
    lines: list[str] = []
    if title:
        # Front matter is YAML: a double-quoted scalar needs only backslashes and quotes escaped.
        quoted = " ".join(title.split()).replace("\\", "\\\\").replace('"', '\\"')
        lines += ["---", f'title: "{quoted}"', "---"]
    lines.append(f"flowchart {direction}")
    ids = _mermaid_ids(nodes)
    lines += [_mermaid_node(node, ids[node.id]) for node in nodes]
    for edge in edges:
        arrow = _MERMAID_ARROWS[edge.style]
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label.strip() else ""
        lines.append(f"    {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
    for kind in NODE_KINDS:
        lines.append(f"    classDef {kind} fill:{KIND_FILL_COLOURS[kind]},stroke:{KIND_BORDER_COLOURS[kind]},color:#1a1a1a")
    for kind in NODE_KINDS:
        members = [ids[node.id] for node in nodes if node.kind == kind]
        if members:
            lines.append(f"    class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- layout

# Sizes in inches: the drawing's axes span the whole figure with one data unit per inch, so font
# sizes in points and box sizes agree whatever the figure size.
BOX_WIDTH = 2.7
LAYER_GAP = 1.7          # room between layers for edge labels
NODE_GAP = 0.32          # vertical room between two boxes of a layer
ROUTE_SLOT = 0.16        # height a layer-skipping edge occupies where it passes a layer
MARGIN = 0.45
LABEL_PT, DETAIL_PT, NOTE_PT, EDGE_LABEL_PT, TITLE_PT = 10.0, 8.5, 7.5, 7.0, 13.0
LINE_SPACING = 1.35
BOX_PADDING = 0.14       # above the first and below the last text line
ARCH_CLEARANCE = 0.3    # how far the arch of a back edge rises above the highest box
ARCH_STEP = 0.22         # extra height of each further arch, so arches and their labels stay apart
ORDERING_SWEEPS = 6
PLACEMENT_SWEEPS = 8


@dataclass
class _Layout:
    """Where everything goes: real nodes are 0..n-1, route slots of layer-skipping edges follow."""

    layer: list[int]
    x: list[float]
    y: list[float]
    height: list[float]
    routes: list[list[int]]          # per edge index: node chain from source to target (forward edges)
    back_edges: list[int]            # edge indices drawn as arcs (cycles and self-loops)
    layer_count: int


def _back_edges(n: int, pairs: list[tuple[int, int]], order: list[int]) -> set[int]:
    """Edge indices that close a cycle (found by an iterative depth-first search); self-loops included."""
    out_edges: dict[int, list[int]] = defaultdict(list)
    for index, (source, _) in enumerate(pairs):
        out_edges[source].append(index)
    state = [0] * n  # 0 unvisited, 1 on the current path, 2 finished
    back: set[int] = set()
    for root in order:
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, iter(out_edges[root]))]
        while stack:
            node, pending = stack[-1]
            index = next(pending, None)
            if index is None:
                state[node] = 2
                stack.pop()
                continue
            target = pairs[index][1]
            if state[target] == 1:
                back.add(index)
            elif state[target] == 0:
                state[target] = 1
                stack.append((target, iter(out_edges[target])))
    return back


def _longest_path_layers(n: int, forward: list[tuple[int, int]], kinds: list[str]) -> list[int]:
    successors: dict[int, list[int]] = defaultdict(list)
    indegree = [0] * n
    for source, target in forward:
        successors[source].append(target)
        indegree[target] += 1
    layer = [0] * n
    ready = [v for v in range(n) if indegree[v] == 0]
    while ready:
        node = ready.pop()
        for target in successors[node]:
            layer[target] = max(layer[target], layer[node] + 1)
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    # Outputs nothing reads from line up in the last column, where a reader looks for results.
    last = max(layer, default=0)
    for v in range(n):
        if kinds[v] == "output" and not successors[v]:
            layer[v] = last
    return layer


def _crossings(upper: list[int], lower_position: dict[int, int], upper_position: dict[int, int],
               successors: dict[int, list[int]]) -> int:
    segments = sorted((upper_position[a], lower_position[b]) for a in upper for b in successors[a])
    count = 0
    for i, (a1, b1) in enumerate(segments):
        for a2, b2 in segments[i + 1:]:
            if a2 > a1 and b2 < b1:
                count += 1
    return count


def _barycentre(position: int, v: int, neighbour_position: dict[int, int], links: dict[int, list[int]],
                scale: float) -> float:
    """Where node ``v`` belongs on its layer: the mean position of its linked neighbours, stretched by ``scale``
    onto this layer's range; a node without linked neighbours keeps its ``position``."""
    linked = [neighbour_position[u] for u in links[v] if u in neighbour_position]
    return sum(linked) / len(linked) * scale if linked else float(position)


def _order_layers(layers: list[list[int]], successors: dict[int, list[int]],
                  predecessors: dict[int, list[int]]) -> list[list[int]]:
    """Barycentre sweeps down and up the layers, keeping the order with the fewest crossings."""

    def total_crossings(ordering: list[list[int]]) -> int:
        positions = [{v: i for i, v in enumerate(layer)} for layer in ordering]
        return sum(_crossings(ordering[k], positions[k + 1], positions[k], successors)
                   for k in range(len(ordering) - 1))

    def sweep(ordering: list[list[int]], downwards: bool) -> list[list[int]]:
        indices = range(1, len(ordering)) if downwards else range(len(ordering) - 2, -1, -1)
        for k in indices:
            neighbour_layer = ordering[k - 1] if downwards else ordering[k + 1]
            neighbour_position = {v: i for i, v in enumerate(neighbour_layer)}
            links = predecessors if downwards else successors
            # Neighbour positions are stretched onto this layer's range, where unlinked nodes keep theirs.
            scale = (len(ordering[k]) - 1) / max(1, len(neighbour_layer) - 1)
            # Sorted by (barycentre, current position): positions are unique, so ties keep the current order.
            ranked = sorted((_barycentre(position, v, neighbour_position, links, scale), position, v)
                            for position, v in enumerate(ordering[k]))
            ordering[k] = [v for _, _, v in ranked]
        return ordering

    best = [list(layer) for layer in layers]
    best_count = total_crossings(best)
    current = [list(layer) for layer in layers]
    for iteration in range(ORDERING_SWEEPS):
        current = sweep(current, downwards=iteration % 2 == 0)
        count = total_crossings(current)
        if count < best_count:
            best, best_count = [list(layer) for layer in current], count
        if best_count == 0:
            break
    return best


def _closest_ordered(desired: list[float], gaps: list[float], weights: list[float]) -> list[float]:
    """Positions nearest (weighted least squares) to ``desired`` that keep the order and the minimum gaps.

    With offsets o_i (the summed gaps above item i) the constraint y_i >= y_{i-1} + gap_i becomes
    'y_i - o_i is non-decreasing', an isotonic regression solved by pooling adjacent violators.
    """
    if not desired:
        return []  # an empty layer
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    blocks: list[list[float]] = []  # [weight sum, weighted value sum, item count]
    for value, offset, weight in zip(desired, offsets, weights, strict=True):
        blocks.append([weight, weight * (value - offset), 1])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] > blocks[-1][1] / blocks[-1][0]:
            weight_sum, value_sum, count = blocks.pop()
            blocks[-1][0] += weight_sum
            blocks[-1][1] += value_sum
            blocks[-1][2] += count
    fitted: list[float] = []
    for weight_sum, value_sum, count in blocks:
        fitted += [value_sum / weight_sum] * int(count)
    return [z + offset for z, offset in zip(fitted, offsets, strict=True)]


def _place_vertically(layers: list[list[int]], height: list[float], successors: dict[int, list[int]],
                      predecessors: dict[int, list[int]], is_slot: list[bool]) -> list[float]:
    y = [0.0] * len(height)

    def gaps(layer: list[int]) -> list[float]:
        return [(height[a] + height[b]) / 2 + (ROUTE_SLOT if is_slot[a] or is_slot[b] else NODE_GAP)
                for a, b in pairwise(layer)]

    for layer in layers:  # start stacked and centred on 0
        positions = _closest_ordered([0.0] * len(layer), gaps(layer), [1.0] * len(layer))
        shift = (positions[0] + positions[-1]) / 2 if positions else 0.0
        for v, position in zip(layer, positions, strict=True):
            y[v] = position - shift
    for iteration in range(PLACEMENT_SWEEPS):
        downwards = iteration % 2 == 0
        indices = range(1, len(layers)) if downwards else range(len(layers) - 2, -1, -1)
        for k in indices:
            layer = layers[k]
            desired = []
            for v in layer:
                linked = predecessors[v] if downwards else successors[v]
                desired.append(sum(y[u] for u in linked) / len(linked) if linked else y[v])
            # Route slots bend more freely than boxes, so straight box-to-box edges win.
            weights = [0.5 if is_slot[v] else 1.0 for v in layer]
            for v, position in zip(layer, _closest_ordered(desired, gaps(layer), weights), strict=True):
                y[v] = position
    return y


def _box_height(node: DrawNode) -> float:
    lines = [LABEL_PT] + [DETAIL_PT] * bool(node.detail) + [NOTE_PT] * (bool(node.condition) + bool(node.fan_out))
    return 2 * BOX_PADDING + sum(size * LINE_SPACING for size in lines) / 72


def _layout(nodes: list[DrawNode], edges: list[DrawEdge]) -> _Layout:
    index = {node.id: i for i, node in enumerate(nodes)}
    n = len(nodes)
    pairs = [(index[edge.source], index[edge.target]) for edge in edges]
    kinds = [node.kind for node in nodes]
    # Searching from the inputs first makes the edges that go back towards them the ones set aside.
    search_order = sorted(range(n), key=lambda v: (kinds[v] != "input", v))
    search_rank = {v: rank for rank, v in enumerate(search_order)}
    back = _back_edges(n, pairs, search_order)
    forward = [i for i in range(len(edges)) if i not in back]
    layer = _longest_path_layers(n, [pairs[i] for i in forward], kinds)
    height = [_box_height(node) for node in nodes]
    is_slot = [False] * n

    successors: dict[int, list[int]] = defaultdict(list)
    predecessors: dict[int, list[int]] = defaultdict(list)
    routes: list[list[int]] = [[] for _ in edges]
    for i in forward:
        source, target = pairs[i]
        chain = [source]
        for passed in range(layer[source] + 1, layer[target]):
            slot = len(layer)
            layer.append(passed)
            height.append(0.0)
            is_slot.append(True)
            chain.append(slot)
        chain.append(target)
        for a, b in pairwise(chain):
            successors[a].append(b)
            predecessors[b].append(a)
        routes[i] = chain

    layer_count = max(layer, default=0) + 1
    layers: list[list[int]] = [[] for _ in range(layer_count)]
    for v in sorted(range(len(layer)), key=lambda v: (layer[v], search_rank.get(v, v))):
        layers[layer[v]].append(v)
    layers = _order_layers(layers, successors, predecessors)
    y = _place_vertically(layers, height, successors, predecessors, is_slot)
    x = [MARGIN + BOX_WIDTH / 2 + layer[v] * (BOX_WIDTH + LAYER_GAP) for v in range(len(layer))]
    return _Layout(layer=layer, x=x, y=y, height=height, routes=routes, back_edges=sorted(back),
                   layer_count=layer_count)


# ----------------------------------------------------------------------------------------------- PNG

_ELLIPSIS = "…"
_FIT_MAX_CHARS = 2000


def _fit(text: str, width_in: float, size_pt: float, *, weight: str = "normal", style: str = "normal") -> str:
    """``text`` on one line, cut with an ellipsis where it would be wider than ``width_in`` inches."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    text = " ".join(text.split())
    # Measuring costs time per character: a workflow file's megabyte-long description must not hang the
    # drawing, so a longer text is cut first (and then always ends in the ellipsis).
    cut = len(text) > _FIT_MAX_CHARS
    text = text[:_FIT_MAX_CHARS]
    font = FontProperties(family="DejaVu Sans", size=size_pt, weight=weight, style=style)

    def width(candidate: str) -> float:
        return text_to_path.get_text_width_height_descent(candidate, font, ismath=False)[0] / 72

    if not cut and width(text) <= width_in:
        return text
    low, high = 0, len(text)  # longest prefix that fits together with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if width(text[:middle].rstrip() + _ELLIPSIS) <= width_in:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + _ELLIPSIS


def _attachment_offsets(layout: _Layout, edges: list[DrawEdge]) -> dict[tuple[int, str], float]:
    """Vertical offset of each forward edge's end on its box, spread so parallel arrows stay apart."""
    ends: dict[tuple[int, str], list[tuple[float, int]]] = defaultdict(list)
    for i, chain in enumerate(layout.routes):
        if not chain:
            continue
        ends[(chain[0], "out")].append((layout.y[chain[1]], i))
        ends[(chain[-1], "in")].append((layout.y[chain[-2]], i))
    offsets: dict[tuple[int, str], float] = {}
    for (node, side), items in ends.items():
        items.sort()
        spread = layout.height[node] * 0.55
        for rank, (_, i) in enumerate(items):
            share = 0.0 if len(items) == 1 else rank / (len(items) - 1) - 0.5
            offsets[(i, side)] = share * spread
    return offsets


def _edge_path(points: list[tuple[float, float]]):
    """A path through ``points`` (pairs of gap ends): S-curves across gaps, straight through layers."""
    from matplotlib.path import Path as MplPath

    vertices = [points[0]]
    codes = [MplPath.MOVETO]
    for k in range(1, len(points)):
        (x0, y0), (x1, y1) = points[k - 1], points[k]
        if k % 2 == 1:  # crossing a gap between layers
            bend = (x1 - x0) / 2
            vertices += [(x0 + bend, y0), (x1 - bend, y1), (x1, y1)]
            codes += [MplPath.CURVE4] * 3
        else:  # passing straight through a layer the edge skips
            vertices.append((x1, y1))
            codes.append(MplPath.LINETO)
    return MplPath(vertices, codes)


def _arch_path(start: tuple[float, float], end: tuple[float, float], apex: float):
    """A cubic curve leaving ``start`` upwards and landing on ``end`` from above, its middle at height ``apex``."""
    from matplotlib.path import Path as MplPath

    (x0, y0), (x1, y1) = start, end
    # A cubic's midpoint is (P0 + 3 C1 + 3 C2 + P1) / 8: both controls at this height put it at the apex.
    control = (8 * apex - y0 - y1) / 6
    return MplPath([(x0, y0), (x0, control), (x1, control), (x1, y1)], [MplPath.MOVETO] + [MplPath.CURVE4] * 3)


_Rect = tuple[float, float, float, float]  # left, top, right, bottom


def _overlap(a: _Rect, b: _Rect) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _gap_point(start: tuple[float, float], end: tuple[float, float], t: float) -> tuple[float, float]:
    """The point at parameter ``t`` of the S-curve ``_edge_path`` draws across a gap."""
    (x0, y0), (x1, y1) = start, end
    middle, u = (x0 + x1) / 2, 1 - t  # both control points sit at the gap's middle, level with their ends
    x = u ** 3 * x0 + 3 * u * t * middle + t ** 3 * x1
    y = (u ** 3 + 3 * u * u * t) * y0 + (3 * u * t * t + t ** 3) * y1
    return x, y


def _draw_edges(axes, nodes: list[DrawNode], edges: list[DrawEdge], layout: _Layout, y: list[float],
                arch_base: float) -> None:
    """Arrows (S-curves forward, arches for back edges) and their labels, each label where it overlaps least."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.textpath import text_to_path

    offsets = _attachment_offsets(layout, edges)
    position = {node.id: v for v, node in enumerate(nodes)}
    obstacles: list[_Rect] = [(layout.x[v] - BOX_WIDTH / 2, y[v] - layout.height[v] / 2,
                               layout.x[v] + BOX_WIDTH / 2, y[v] + layout.height[v] / 2) for v in range(len(nodes))]
    # Narrow arches sit under wide ones so they do not cross.
    arch_spans = {i: abs(layout.x[position[edges[i].source]] - layout.x[position[edges[i].target]])
                  for i in layout.back_edges}
    arch_level = {i: level for level, i in enumerate(sorted(layout.back_edges, key=lambda i: (arch_spans[i], i)))}
    label_font = FontProperties(family="DejaVu Sans", size=EDGE_LABEL_PT)
    label_height = EDGE_LABEL_PT * 1.5 / 72
    for i, edge in enumerate(edges):
        colour, line_width = EDGE_COLOURS[edge.style], EDGE_WIDTHS[edge.style]
        line_style = "--" if edge.style == "condition" else "-"
        chain = layout.routes[i]
        if chain:
            points = [(layout.x[chain[0]] + BOX_WIDTH / 2, y[chain[0]] + offsets[(i, "out")])]
            for slot in chain[1:-1]:
                points += [(layout.x[slot] - BOX_WIDTH / 2, y[slot]), (layout.x[slot] + BOX_WIDTH / 2, y[slot])]
            points.append((layout.x[chain[-1]] - BOX_WIDTH / 2, y[chain[-1]] + offsets[(i, "in")]))
            path = _edge_path(points)
            # Label spots: along the first gap (by the source) first, then the middles of later gaps.
            spots = [_gap_point(points[0], points[1], t) for t in (0.5, 0.35, 0.65, 0.22, 0.78)]
            spots += [_gap_point(points[k], points[k + 1], 0.5) for k in range(2, len(points) - 1, 2)]
        else:  # a back edge of a cycle or a self-loop: an arch over every box
            source, target = position[edge.source], position[edge.target]
            inset = BOX_WIDTH / 4 if source == target else 0.0
            x0, x1 = layout.x[source] + inset, layout.x[target] - inset
            y0, y1 = y[source] - layout.height[source] / 2, y[target] - layout.height[target] / 2
            apex = arch_base - ARCH_CLEARANCE - ARCH_STEP * arch_level[i]
            path, spots = _arch_path((x0, y0), (x1, y1), apex), [((x0 + x1) / 2, apex)]
        axes.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>", mutation_scale=12 + line_width * 2, color=colour,
                                       linewidth=line_width, linestyle=line_style, zorder=1 if chain else 5))
        if not edge.label.strip():
            continue
        text = _fit(edge.label, LAYER_GAP - 0.15, EDGE_LABEL_PT)
        half_width = text_to_path.get_text_width_height_descent(text, label_font, ismath=False)[0] / 144 + 0.04
        boxes = [(sx - half_width, sy - label_height / 2, sx + half_width, sy + label_height / 2) for sx, sy in spots]
        # The first spot overlapping nothing, else the one overlapping least (earlier spots win ties).
        best = min(range(len(boxes)), key=lambda k: (sum(_overlap(boxes[k], other) for other in obstacles), k))
        obstacles.append(boxes[best])
        axes.text(*spots[best], text, ha="center", va="center", fontsize=EDGE_LABEL_PT, color=colour,
                  parse_math=False, zorder=6,
                  bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})


def _draw_legend(axes, nodes: list[DrawNode], edges: list[DrawEdge]) -> None:
    """A one-row key of the node kinds and edge styles this graph uses, along the bottom edge."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    for kind in NODE_KINDS:
        if any(node.kind == kind for node in nodes):
            handles.append(Patch(facecolor=KIND_FILL_COLOURS[kind], edgecolor=KIND_BORDER_COLOURS[kind], label=kind))
    names = {"data": "data", "condition": "condition", "fan_out": "for each item"}
    for style in EDGE_STYLES:
        if any(edge.style == style for edge in edges):
            handles.append(Line2D([0], [0], color=EDGE_COLOURS[style], linewidth=EDGE_WIDTHS[style],
                                  linestyle="--" if style == "condition" else "-", label=names[style]))
    if handles:
        axes.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False,
                    bbox_to_anchor=(0.5, 0.0), handlelength=2.2)


def _draw_node(axes, node: DrawNode, x: float, y: float, height: float) -> None:
    """A rounded box coloured by kind: bold label, detail, then condition and fan-out in small italics."""
    from matplotlib.patches import FancyBboxPatch

    left, box_top = x - BOX_WIDTH / 2, y - height / 2
    rounding = height / 2 if node.kind == "input" else 0.12
    fill, border = KIND_FILL_COLOURS[node.kind], KIND_BORDER_COLOURS[node.kind]
    if node.fan_out:  # a stack of cards: this task runs once per item
        for step in (2, 1):
            axes.add_patch(FancyBboxPatch(
                (left + 0.06 * step, box_top - 0.06 * step), BOX_WIDTH, height,
                boxstyle=f"round,pad=0,rounding_size={rounding}", facecolor=fill, edgecolor=border,
                linewidth=1.0, zorder=2))
    axes.add_patch(FancyBboxPatch(
        (left, box_top), BOX_WIDTH, height, boxstyle=f"round,pad=0,rounding_size={rounding}",
        facecolor=fill, edgecolor=border, linewidth=2.2 if node.kind == "output" else 1.4,
        linestyle="--" if node.condition else "-", zorder=3))
    lines = [(node.label or node.id, LABEL_PT, "bold", "normal")]
    if node.detail:
        lines.append((node.detail, DETAIL_PT, "normal", "normal"))
    lines += [(note, NOTE_PT, "normal", "italic") for note in (node.condition, node.fan_out) if note]
    baseline = box_top + BOX_PADDING
    for text, size, weight, style in lines:
        line_height = size * LINE_SPACING / 72
        axes.text(x, baseline + line_height / 2, _fit(text, BOX_WIDTH - 0.22, size, weight=weight, style=style),
                  ha="center", va="center", fontsize=size, fontweight=weight, fontstyle=style,
                  color="#1a1a1a", parse_math=False, zorder=4)
        baseline += line_height


def draw_png(nodes: list[DrawNode], edges: list[DrawEdge], path, *, title: str = "") -> Path:
    """Draw the graph left to right into a PNG at ``path`` (parent folders created); returns the path."""
    _check_graph(nodes, edges)
    if not isinstance(title, str):
        raise InvalidInputError(f"graph title must be a string, got {title!r}")
    png_path = Path(path)
    if png_path.suffix.lower() != ".png":
        raise InvalidInputError(f"graph picture path {str(png_path)!r} must end in .png")
    png_path = check_output_file(png_path, "graph picture")  # not a FIFO, a device, /proc; a name the system takes

    import_extra("matplotlib", "a workflow picture (PNG; Mermaid text needs nothing)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = _layout(nodes, edges)
    title_room = 0.55 if title else 0.0
    legend_room = 0.45
    arch_room = ARCH_CLEARANCE + ARCH_STEP * len(layout.back_edges) + 0.1 if layout.back_edges else 0.0
    tops = [layout.y[v] - layout.height[v] / 2 for v in range(len(layout.y))]
    bottoms = [layout.y[v] + layout.height[v] / 2 for v in range(len(layout.y))]
    top = min(tops, default=0.0)
    shift = MARGIN + title_room + arch_room - top
    y = [value + shift for value in layout.y]
    width = 2 * MARGIN + layout.layer_count * BOX_WIDTH + (layout.layer_count - 1) * LAYER_GAP
    height = max(bottoms, default=0.0) + shift + MARGIN / 2 + legend_room
    width, height = max(width, 4.0), max(height, 2.0)
    dpi = min(110.0, 30000 / max(width, height))  # Agg refuses images over 2**16 pixels a side

    figure = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)  # y grows downwards, like the layout
    axes.axis("off")
    if title:
        axes.text(width / 2, MARGIN + 0.15, _fit(title, width - 2 * MARGIN, TITLE_PT, weight="bold"),
                  ha="center", va="center", fontsize=TITLE_PT, fontweight="bold", parse_math=False)

    for v, node in enumerate(nodes):
        _draw_node(axes, node, layout.x[v], y[v], layout.height[v])
    _draw_edges(axes, nodes, edges, layout, y, arch_base=top + shift)
    _draw_legend(axes, nodes, edges)
    try:
        png_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(png_path, format="png", dpi=dpi, facecolor="white")
    except OSError as exc:  # a file where a folder is meant, no permission, a full disk
        raise InvalidInputError(f"graph picture: cannot write {shown_path(str(png_path))} ({exc.strerror or exc})") from None
    return png_path
