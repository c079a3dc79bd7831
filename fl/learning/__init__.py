"""Learning: model adapters, local training, metrics, aggregation rules and strategies,
server optimisers, FedProx and differential privacy. Pure computation: no sockets, no files."""
