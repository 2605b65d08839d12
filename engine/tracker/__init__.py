"""The saga tracker: a read model of every saga, built only by reading the topics."""
