"""Strategies (ask/tell), the SearchDriver loop, Pareto and hypervolume."""

from nasforge.core.registry import Registry
from nasforge.search.base import Strategy

STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy",
    {
        "random": "nasforge.search.random:RandomSearch",
        "nsga2": "nasforge.search.nsga2:NSGA2",
        "optuna": "nasforge.search.optuna_strategy:OptunaStrategy",
        "guided": "nasforge.search.guided:PredictorGuidedSearch",
        "evopress": "nasforge.search.evopress:EvoPress",
        "dp": "nasforge.search.allocators:DPAllocator",
        "ilp": "nasforge.search.allocators:ILPAllocator",
        "closed_form": "nasforge.search.allocators:ClosedFormAllocator",
    },
)

__all__ = ["STRATEGIES", "Strategy"]
