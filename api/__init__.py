"""The REST API (issue 11): goals in through Kafka, reads from the API's own view of the plan topics."""
