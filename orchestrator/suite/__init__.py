"""The suite: a YAML file in, a typed and validated Suite and its pure Plan out.

Knows nothing of hosts, guests or tracers: `schema` (frozen pydantic models), `loader` (YAML
with line numbers, every problem as `file:line:col`), `units` (sizes, durations), `plan`.
"""
