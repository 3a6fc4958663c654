"""An algorithm defined and registered in this one file, as a user would add one. It is FedSAM
under a name of its own (the round is ServerAveraging's): what the tests look at is that its
label, centralized flag and optimizer family, declared here as class attributes, reach labels,
run directories and the optimizer check while nothing else in dfl names it."""
from __future__ import annotations

from dfl.algorithms import ALGORITHMS, ServerAveraging

NAME = "localsam"


@ALGORITHMS.register(NAME)
class LocalSAM(ServerAveraging):
    name = NAME
    label = "LocalSAM"
    family = "sam"
