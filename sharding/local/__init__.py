"""The local cluster runner: PostgreSQL per shard, writers, aggregators and nginx as local processes.

What ``make run`` and the ``python -m sharding`` commands that change a
running cluster use. The services never import it; the service image leaves
it out (.dockerignore). The topology itself (the shard file, the ring and
the renderings of nginx, compose and Prometheus) is the pure code one level up.
"""
