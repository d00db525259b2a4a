"""Code that the writer and the aggregator share: time, input parsing, schema."""
