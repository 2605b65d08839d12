#!/bin/sh
# as the official image's kafka-topics.sh
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms32m -Xmx256m -XX:TieredStopAtLevel=1}"
exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.TopicCommand "$@"
