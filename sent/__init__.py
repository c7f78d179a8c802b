"""SENT: semantic- and token-entropy regularised reinforcement learning for LLM reasoning.

The library layer of the project: pure maths (`entropy`, `advantages`, `losses`, `semantic`,
`curriculum`), answer grading (`rewards`) and engine adapters (`engines`). It never imports
Prefect or MLflow; importing `sent` itself loads nothing heavy (no torch), so that worker
processes and the command line start fast.
"""

__version__ = "0.1.0"
