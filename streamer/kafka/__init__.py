"""Thin wrappers over aiokafka: the daemon's seams to Kafka."""
