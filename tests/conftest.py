"""Root of the test suite.

The shared helpers are modules in this directory, importable by name from ``tests/``,
``tests/remote/`` and ``benches/`` because ``pyproject.toml`` puts ``tests/`` on pytest's
``pythonpath``:

- ``reference_manager``: the pure-Python block manager the Rust one is checked against;
  ``manager_helpers``: both managers behind one interface, and state snapshots.
- ``stats_dicts``, ``_stats_model``, ``metrics_scenario``: stats snapshots built by hand and a
  model of what the accumulator must record.
- ``_transfer_kv``: KV tensors in every layout, and per-slot reference bytes.
- ``_connector_rig``: a scheduler and its workers wired together over CPU tensors.
- ``_bench_run``: ``kvoff bench`` in a subprocess, and scraping its ``/metrics``.
"""
