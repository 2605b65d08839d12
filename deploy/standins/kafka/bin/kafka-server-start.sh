#!/bin/sh
# as the official image's kafka-server-start.sh
exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka "$@"
