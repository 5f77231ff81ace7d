"""Benchmarks (never timed tests). Each runs from the repository root as a module:

    .venv/bin/python -m bench.run            # the click path beside its baselines
    .venv/bin/python -m bench.paired TREE    # two trees' redirectors, CPU per click, at once
    .venv/bin/python -m bench.destinations TREE  # the click path, destination watch on vs TREE
    .venv/bin/python -m bench.destination_cost  # the destination watch's CPU per click
    .venv/bin/python -m bench.lifecycle      # domain.created -> HTTPS, against Pebble
    .venv/bin/python -m bench.verify         # verification concurrency against a slow DNS
    .venv/bin/python -m bench.event_ids      # what the kind of click id costs PostgreSQL
    .venv/bin/python -m bench.click_store    # one table vs monthly partitions + aggregates
    .venv/bin/python -m bench.decode_cost    # the logger's decoding, per click
    .venv/bin/python -m bench.handler_cost   # the redirector's handler, per click
    .venv/bin/python -m bench.classify corpus   # scanners and people told apart (confusion)
    .venv/bin/python -m bench.classify rate     # the classifier's rate from a full queue

The figures they gave live in docs/performance.md, not here. Processes, ports and scratch
databases come from demo/ (the local world the tests use too); what only benchmarks need
is here: bench/scratch.py (servers, scratch names, row counts), bench/cpu.py (who used
the cores), bench/wrk.py and bench/measure.py (load and how a system is measured),
bench/systems.py (the HTTP systems), bench/logger.py, bench/pyspy.py, bench/report.py.
"""
