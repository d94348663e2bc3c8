"""Apache Otava 0.8.0's change-point core (E-Divisive with a Student t-test, the windowed
split and the weak/strong merge), vendored unchanged but for its import paths.

Why vendored rather than a dependency: the `apache-otava` wheel pins numpy==2.2.0.* and
scipy<1.17 for Python < 3.14 and pulls in google-cloud-bigquery, grpcio, slack-sdk and pg8000
for its CLI's importers. Installing it downgrades the project's numpy (mypy --strict then fails
in files that use bare `np.ndarray`) for four files that need only numpy and scipy. The code
is Apache-2.0 (LICENSE and NOTICE beside this file); `orchestrator/analysis/changepoints.py`
is the only caller. Upgrading: copy analysis.py and change_point_divisive/ from a newer wheel
and rewrite `from otava.` to `from orchestrator.analysis.otava.`.
"""
