"""Model compression parts: layer discovery, quantizers, pruners, the per-layer level database,
calibration metrics (KL to the uncompressed model) and the packed export / loader."""
