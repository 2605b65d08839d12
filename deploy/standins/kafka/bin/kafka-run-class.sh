#!/bin/sh
# java with the Kafka jars: kafka-run-class.sh CLASS ARGS...
exec java ${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' "$@"
