"""The job engine: one job machine, one runner, worker ports and the children they drive."""
