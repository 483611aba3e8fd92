"""The node daemon: the sampling loop and its worker, the node status document, reconciling jobs
whose epilog never came."""
