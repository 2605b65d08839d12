"""The local broker: a testing and development tool of the engine (as Temporal's
``WorkflowEnvironment.start_local()``), a real Apache Kafka run from its jars on this machine.

broker (LocalKafka, ``provisioned``, BrokerError, free ports), kraft (one node of a local KRaft
cluster; Quorum.java, its voter set), secured (a SASL_SSL listener). Imported only where a command
needs it: nothing of the engine imports it at module level, and ``run`` with
KAFKA_BOOTSTRAP_SERVERS set never does.
"""
