"""What observes a saga from outside its transactions: metrics, tracing, health, the flow
graph, timelines, retries."""
