"""The aggregator: exact scatter-gather reads over every shard, live hour in memory."""
