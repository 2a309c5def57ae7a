"""Weights and their lifetime: where a model's files come from, the packaged LLM, and the pool that keeps
loaded models in memory."""
