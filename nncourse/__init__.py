"""Tooling for the nn-fundamentals nbgrader course: build, test and demo helpers."""
