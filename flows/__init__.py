"""Prefect flows: each phase of the pipeline (curate, train one stage, evaluate) and the whole DAG.

Flow bodies only compose tasks from `tasks/`.
"""
