"""sx-dagster: Self-Explore (Hwang et al. 2024) as a Dagster asset graph."""

__version__ = "0.1.0"
