"""All RabbitMQ plumbing, once: names, topology, connection, confirmed publish, consume."""
