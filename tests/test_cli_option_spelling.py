"""`anymoda tool NAME` spells every input and param with dashes (`--time-series`, `--max-new-tokens`) and reads
the underscore spelling of the same name too, for every tool; the help shows the dashed one only."""

from __future__ import annotations

import pytest

from orchestrator.cli.commands import _tool_parser, dashed_tool_options, tool_option
from orchestrator.tooling.registry import ToolRegistry

TOOLS = list(ToolRegistry.default())


def sample_value(name: str, spec) -> str:
    if spec.__class__.__name__ == "Param":
        return "true" if spec.type is bool else str(spec.choices[0] if spec.choices else spec.minimum or 1)
    return "x"


@pytest.mark.parametrize("tool_class", TOOLS, ids=[tool.name for tool in TOOLS])
def test_both_spellings_of_every_option_parse_alike(tool_class) -> None:
    names = {**tool_class.inputs, **tool_class.params}
    dashed, underscored = [], []
    for name, spec in names.items():
        value = sample_value(name, spec)
        dashed += [tool_option(name), value]
        underscored += [f"--{name}", value]
        assert "_" not in tool_option(name)
    parser = _tool_parser(tool_class)
    from_dashes = parser.parse_args(dashed_tool_options(dashed, tool_class))
    from_underscores = parser.parse_args(dashed_tool_options(underscored, tool_class))
    assert vars(from_dashes) == vars(from_underscores)
    help_text = parser.format_help()
    for name in names:
        assert tool_option(name) in help_text
        if "_" in name:
            assert f"--{name} " not in help_text  # one spelling in the help


def test_native_chat_takes_time_series_with_a_dash_and_keeps_values_as_written() -> None:
    tool_class = ToolRegistry.default().get("native-chat")
    argv = ["--time_series", "sales.csv", "--question", "--x_y is not an option", "--max_new_tokens=4"]
    assert dashed_tool_options(argv, tool_class) == ["--time-series", "sales.csv", "--question", "--x_y is not an option",
                                                     "--max-new-tokens=4"]
    args = _tool_parser(tool_class).parse_args(["--time-series", "sales.csv", "--question", "trend?"])
    assert args.time_series == "sales.csv" and args.question == "trend?"
    with pytest.raises(SystemExit):  # a name the tool does not have stays unknown, in either spelling
        _tool_parser(tool_class).parse_args(dashed_tool_options(["--time_serie", "x", "--question", "q"], tool_class))
