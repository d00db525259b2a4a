"""Topology of a Reactions deployment: shard file, hash ring, nginx rendering, local cluster."""
