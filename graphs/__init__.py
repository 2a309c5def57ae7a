"""LangGraph graphs and scripted workflow files (filled by the executor and workflow work)."""
