"""Running a validated task graph: task specs and runners, the dependency-driven executor, the run journal,
events, recovery of tools that cannot run here, and the composer of the answer."""
