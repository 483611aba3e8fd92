"""Where the daemon's ticks and delivered records go: the `Sink` contract and `Tick`, the registry,
Prometheus, CloudWatch. Optional dependencies are imported only by the sink that needs them."""
