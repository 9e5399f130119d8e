"""KServe model servers: moral agents, the aggregator predictor, the CMVA transformer (README, "Serving")."""
