"""The condition language of a node's ``when``: ``count($detect.detections) > 0 and $classify.label != "cat"``.

Parsed with :mod:`ast` and admitted only as comparisons, ``and``/``or``/``not``, ``in``, constant indexing and the
one-argument functions below, bounded in length and depth; everything that can be known without the values is
checked when the workflow is read. Evaluated by the walker here, never by ``eval``.
"""

from __future__ import annotations

import ast
import operator
import re
import warnings
from typing import Any

from ..errors import InvalidInputError, shown
from .definition import Condition, Reference, bounded

MAX_CONDITION_CHARS = 500
MAX_CONDITION_DEPTH = 24

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_FUNCTIONS = {"count": len, "len": len, "lower": lambda v: str(v).lower(), "upper": lambda v: str(v).upper(),
              "strip": lambda v: str(v).strip(), "float": float, "int": int}
CONDITION_FUNCTIONS = tuple(_FUNCTIONS)


def parse_condition(text: str) -> Condition:
    """``count($detect.detections) > 0 and $classify.label != "cat"``: a small, safe expression language.

    Everything that can be known without the values is checked here, so that a condition that
    validates can only fail at run time on what the values turn out to be (a text where a number was
    expected), never on how it is written."""
    if len(text) > MAX_CONDITION_CHARS:
        raise ValueError(f"condition {shown(text)} is longer than {MAX_CONDITION_CHARS} characters")
    references: list[Reference] = []

    def placeholder(match: re.Match) -> str:
        references.append(Reference(match["name"], match["output"]))
        return f"__r{len(references) - 1}"

    source = re.sub(r"\$(?P<name>[A-Za-z][A-Za-z0-9_-]{0,31})(?:\.(?P<output>[a-z][a-z0-9_]*))?", placeholder, text)
    if "$" in source:
        raise ValueError(f"condition {shown(text)}: a '$' that starts no reference")
    try:
        with warnings.catch_warnings():  # '1jand' or 'x is 1' would print Python's SyntaxWarning on stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"condition {shown(text)} is not an expression ({exc.msg})") from None
    except (RecursionError, MemoryError):  # CPython's parser gives up on deep nesting in these ways too
        raise ValueError(f"condition {shown(text)} nests more than {MAX_CONDITION_DEPTH} deep") from None
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq, ast.NotEq,
               ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Name, ast.Load, ast.Constant, ast.Call,
               ast.Subscript)
    # Iteratively, with depths: the evaluator recurses, so depth is what must be bounded.
    callees = {id(item.func) for item in ast.walk(tree) if isinstance(item, ast.Call)}
    placeholders: list[int] = []
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_CONDITION_DEPTH:
            raise ValueError(f"condition {shown(text)} nests more than {MAX_CONDITION_DEPTH} deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(item))
        if not isinstance(item, allowed):
            raise ValueError(f"condition {shown(text)} uses {type(item).__name__}, which conditions do not allow "
                             "(allowed: comparisons, and/or/not, in, [index], " + ", ".join(CONDITION_FUNCTIONS) + ")")
        if isinstance(item, ast.Name):
            if item.id in CONDITION_FUNCTIONS and id(item) not in callees:
                raise ValueError(f"condition {shown(text)}: {item.id} is a function; call it on a value, like "
                                 f"{item.id}($node.output)")
            number = re.fullmatch(r"__r(\d{1,4})", item.id)
            if number is not None and int(number[1]) < len(references) and id(item) not in callees:
                placeholders.append(int(number[1]))
            elif item.id not in CONDITION_FUNCTIONS or id(item) not in callees:
                raise ValueError(f"condition {shown(text)}: unknown name {shown(item.id)}; references start with '$'")
        if isinstance(item, ast.Call) and (not isinstance(item.func, ast.Name) or item.func.id not in CONDITION_FUNCTIONS
                                           or len(item.args) != 1 or item.keywords):
            raise ValueError(f"condition {shown(text)}: only one-argument calls of {', '.join(CONDITION_FUNCTIONS)}")
        if isinstance(item, ast.Subscript) and not isinstance(item.slice, (ast.Constant, ast.UnaryOp)):
            raise ValueError(f"condition {shown(text)}: an index must be a constant, like [0] or ['label']")
        if isinstance(item, ast.Constant) and not isinstance(item.value, (str, int, float, bool, type(None))):
            raise ValueError(f"condition {shown(text)}: constants are numbers, texts, True/False, None")
    # Each reference became one placeholder name; any other count means a placeholder was typed in
    # (``__r0 == 1``) or a reference was written inside quotes, where it would be a literal text.
    if sorted(placeholders) != list(range(len(references))):
        if len(placeholders) < len(references):
            raise ValueError(f"condition {shown(text)}: a $reference inside quotes is not a value; write it unquoted")
        raise ValueError(f"condition {shown(text)}: names like __r0 are not allowed; references start with '$'")
    _kind(tree.body, text)
    return Condition(text, tree, tuple(references))


# What a part of a condition always is, where that is known without the values (None: it depends on them).
_NUMBER, _TEXT, _NONE = "a number", "a text", "None"
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def _kind_of(value: Any) -> str | None:
    if value is None:
        return _NONE
    if isinstance(value, str):
        return _TEXT
    return _NUMBER if isinstance(value, (bool, int, float)) else None


def _kind(node: ast.AST, text: str) -> str | None:
    """What ``node`` always evaluates to; a ValueError when it fails whatever the values are (``count($x) > 'a'``,
    ``$x in 5``, ``int('abc')``): such a condition validated, then failed every run."""
    def refuse(why: str) -> ValueError:
        return ValueError(f"condition {shown(text)}: {why}")

    if not any(isinstance(item, ast.Name) and item.id.startswith("__r") for item in ast.walk(node)):
        try:  # no reference inside: its value is known now
            return _kind_of(_evaluate(node, []))
        except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
            raise refuse(f"{shown(ast.unparse(node), 60)} can never be evaluated ({type(exc).__name__}: "
                         f"{bounded(str(exc), 120)})") from None
    if isinstance(node, ast.Call):
        argument, name = _kind(node.args[0], text), node.func.id
        if name in ("count", "len") and argument in (_NUMBER, _NONE):
            raise refuse(f"{name}() of {argument}, which has no length")
        if name in ("float", "int") and argument == _NONE:
            raise refuse(f"{name}() of None")
        return _TEXT if name in ("lower", "upper", "strip") else _NUMBER
    if isinstance(node, ast.UnaryOp):
        operand = _kind(node.operand, text)
        if isinstance(node.op, ast.USub) and operand in (_TEXT, _NONE):
            raise refuse(f"minus of {operand}")
        return _NUMBER
    if isinstance(node, ast.Subscript):
        value, index = _kind(node.value, text), _evaluate(node.slice, [])  # the index is a constant (checked above)
        if value in (_NUMBER, _NONE):
            raise refuse(f"{shown(ast.unparse(node), 60)} indexes {value}")
        if value == _TEXT and (not isinstance(index, int) or isinstance(index, bool)):
            raise refuse(f"{shown(ast.unparse(node), 60)}: a text is indexed by a whole number, like [0]")
        return _TEXT if value == _TEXT else None
    if isinstance(node, ast.Compare):
        kinds = [_kind(node.left, text)] + [_kind(c, text) for c in node.comparators]
        for op, left, right in zip(node.ops, kinds, kinds[1:], strict=False):
            if isinstance(op, _ORDERING) and _NONE in (left, right):
                raise refuse("compares None with < or >; use == or !=")
            if isinstance(op, _ORDERING) and left and right and left != right:
                raise refuse(f"compares {left} with {right} by order, which always fails")
            if isinstance(op, (ast.In, ast.NotIn)) and right in (_NUMBER, _NONE):
                raise refuse(f"'in' needs a text or a list on its right, not {right}")
            if isinstance(op, (ast.In, ast.NotIn)) and right == _TEXT and left in (_NUMBER, _NONE):
                raise refuse(f"{left} is never in a text; compare texts, or use count() == ...")
        return _NUMBER  # True or False
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _kind(value, text)
    return None



def evaluate_condition(condition: Condition, values: list[Any], where: str) -> bool:
    """Whether ``condition`` holds for ``values`` (one per reference, in order); a value it cannot work
    on (``int('n/a')``, an index past the end) is an :class:`InvalidInputError` naming ``where``. How the
    condition is written was checked when the workflow was read, so only the values can fail here."""
    try:
        return bool(_evaluate(condition.tree.body, values))
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, AttributeError, RecursionError) as exc:
        # RecursionError: str() or == of a JSON value nested thousands deep
        raise InvalidInputError(f"{where}: the condition {shown(condition.text)} could not be evaluated "
                                f"({type(exc).__name__}: {bounded(str(exc), 200)})") from None


def _evaluate(node: ast.AST, values: list[Any]) -> Any:
    """Evaluate a condition tree that :func:`parse_condition` admitted."""
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_evaluate(v, values) for v in node.values)
        return any(_evaluate(v, values) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](_evaluate(node.args[0], values))
    if isinstance(node, ast.Subscript):
        return _evaluate(node.value, values)[_evaluate(node.slice, values)]
    if isinstance(node, ast.Name):
        return values[int(node.id[3:])]
    if isinstance(node, ast.Constant):
        return node.value
    raise ValueError(f"{type(node).__name__} is not allowed in a condition")
