"""The task pipeline: issue -> plan -> tasks -> code -> test -> review (``stages``) and the agent
tools each stage uses (``tools``). See docs/pipeline.md."""
