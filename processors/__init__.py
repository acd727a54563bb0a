"""The pure domain core (no Kafka inside) and the Faust agents around it."""
