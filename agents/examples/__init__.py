"""Short, runnable examples of the agents (each is also run by the tests with a tiny budget)."""
