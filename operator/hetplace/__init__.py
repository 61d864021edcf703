"""hetplace: places Triton-served models on heterogeneous node pools by SLO, bandwidth and cost."""

__version__ = "0.1.0"
