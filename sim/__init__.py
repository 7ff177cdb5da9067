"""alliance-spiral: an agent-based model of trust and openness spirals in strategic alliances."""

__version__ = "0.1.0"
