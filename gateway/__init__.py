"""The GLM gateway: one OpenAI-compatible base URL in front of five GLM resellers."""

__version__ = "0.1.0"
