"""Search: the parallel configuration, the layer partition, placement and experts."""
