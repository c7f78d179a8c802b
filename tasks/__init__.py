"""Prefect tasks: thin wrappers over `sent` library calls (logging, caching, retries, MLflow).

Tasks never contain the method's maths; they arrive with the pipeline issue.
"""
