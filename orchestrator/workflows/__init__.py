"""Workflows beside the planner: a task graph written in YAML or built in Python (Pipeline), validated by the
planner's rules, run by the executor, over a folder (run_batch), and drawn."""
