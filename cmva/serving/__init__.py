"""KServe model servers: moral agents, the aggregator predictor, the CMVA transformer (DESIGN.md §6)."""
