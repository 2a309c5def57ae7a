"""The tool contract (Tool, Input, Output, Param), the registry of built-in and plugin tools, running one tool
on artifacts, which model each tool uses, and stub tools for tests and benchmarks."""
