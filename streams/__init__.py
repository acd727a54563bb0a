"""Kafka-facing side of posflow: the Faust app, topic declarations, config, sources, producer helpers."""
