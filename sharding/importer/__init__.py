"""``python -m sharding import``: events from a CSV file or a ``user_reaction`` table, through the batch endpoint.

source.py reads rows, batches.py validates them and cuts deterministic,
keyed batches, client.py sends one batch until it has a final answer,
run.py runs several at once with the progress bar, cli.py is the command.
"""
