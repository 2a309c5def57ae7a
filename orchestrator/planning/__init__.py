"""From a request to a validated plan: the plan model and its checks, the compact plan syntax, the planner and
its LLM backends, demo retrieval, tool selection, and the planning benchmark."""
