"""Kafka: the clients, topics and admin, replication, security, tolerant reading, topic ids."""
