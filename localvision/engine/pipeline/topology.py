"""The rank grid of module-parallel training: R replicas x K stages.

Rank ``g = replica * K + stage``: the K consecutive ranks of a replica form one pipeline (on a
multi-GPU node, stage k runs on local GPU k). Process groups:

- ``link_group(replica, s)``: activations from stage s to stage s+1 of that replica;
- ``credit_group(replica, s)``: the flow-control credits stage s+1 hands back to stage s (one tiny
  message per micro-batch taken; no gradients ever go backwards);
- ``dp_group``: the R ranks that run the same stage (gradient all-reduce, parameter broadcast);
- ``follow_group(replica, s)``: only at cuts whose unit s reads module s+1's weights (MAN): those
  weights, from stage s+1 back to stage s (:mod:`.follow`).

Every rank creates every group in the same order (``torch.distributed.new_group`` is collective).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch.distributed as dist


@dataclass
class Topology:
    num_stages: int
    replicas: int
    rank: int
    links: Dict[Tuple[int, int], object] = field(default_factory=dict)
    credits: Dict[Tuple[int, int], object] = field(default_factory=dict)
    dp_groups: Dict[int, object] = field(default_factory=dict)
    follows: Dict[Tuple[int, int], object] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.num_stages * self.replicas

    @property
    def stage(self) -> int:
        return self.rank % self.num_stages

    @property
    def replica(self) -> int:
        return self.rank // self.num_stages

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.num_stages - 1

    def rank_of(self, replica: int, stage: int) -> int:
        return replica * self.num_stages + stage

    def stage_of(self, rank: int) -> int:
        return rank % self.num_stages

    def replica_of(self, rank: int) -> int:
        return rank // self.num_stages

    @property
    def prev_rank(self) -> Optional[int]:
        return None if self.is_first else self.rank - 1

    @property
    def next_rank(self) -> Optional[int]:
        return None if self.is_last else self.rank + 1

    @property
    def in_link(self):
        return self.links.get((self.replica, self.stage - 1))

    @property
    def out_link(self):
        return self.links.get((self.replica, self.stage))

    @property
    def in_credit(self):
        """Where this stage sends credits (to its upstream)."""
        return self.credits.get((self.replica, self.stage - 1))

    @property
    def out_credit(self):
        """Where this stage receives credits (from its downstream)."""
        return self.credits.get((self.replica, self.stage))

    @property
    def in_follow(self):
        """Where this stage receives the next stage's weights (``None``: its unit reads none)."""
        return self.follows.get((self.replica, self.stage))

    @property
    def out_follow(self):
        """Where this stage sends its weights to the previous stage (``None``: nobody reads them)."""
        return self.follows.get((self.replica, self.stage - 1))

    @property
    def dp_group(self):
        return self.dp_groups.get(self.stage)

    def dp_ranks(self, stage: Optional[int] = None) -> List[int]:
        s = self.stage if stage is None else stage
        return [self.rank_of(r, s) for r in range(self.replicas)]

    def describe(self) -> str:
        return f'rank {self.rank} = replica {self.replica}, stage {self.stage} of {self.num_stages}'


def build_topology(num_stages: int, replicas: int, follow_cuts: Iterable[int] = ()) -> Topology:
    """The grid and its process groups (call on every rank of an initialised default group, with
    the same ``follow_cuts``: the cuts s whose unit s reads module s+1's weights)."""
    rank = dist.get_rank()
    world = dist.get_world_size()
    if world != num_stages * replicas:
        from localvision.errors import InputError
        raise InputError(f'pipeline training of K={num_stages} modules x pipeline.replicas={replicas} needs '
                         f'{num_stages * replicas} processes, got {world}')
    topo = Topology(num_stages, replicas, rank)
    follow_cuts = set(follow_cuts)
    for r in range(replicas):
        for s in range(num_stages - 1):
            pair = [topo.rank_of(r, s), topo.rank_of(r, s + 1)]
            topo.links[(r, s)] = dist.new_group(pair)
            topo.credits[(r, s)] = dist.new_group(pair)
            if s in follow_cuts:
                topo.follows[(r, s)] = dist.new_group(pair)
    if replicas > 1:
        for s in range(num_stages):
            topo.dp_groups[s] = dist.new_group(topo.dp_ranks(s))
    return topo
