"""Where a block sequence is cut into K gradient-isolated modules.

A cut ``c`` means "a module ends after block c"; K modules need K-1 strictly increasing cuts
in ``[0, n_blocks - 2]`` (the last block always ends the last module).
"""
from __future__ import annotations

from localvision.errors import InputError

from typing import Callable, List, Optional, Sequence

STRATEGIES = ('equal', 'balanced')


def validate_cuts(cuts: Sequence[int], n_blocks: int, field: str = 'split.cuts') -> List[int]:
    """Check explicit cuts; raise one clear error naming the field and the allowed values."""
    cuts = [int(c) for c in cuts]
    allowed = f'strictly increasing block indices in [0, {n_blocks - 2}] (the model has {n_blocks} blocks, stem = 0)'
    if any(c < 0 or c > n_blocks - 2 for c in cuts):
        raise InputError(f'{field}={cuts} has a cut out of range; allowed: {allowed}')
    if any(b <= a for a, b in zip(cuts, cuts[1:])):
        raise InputError(f'{field}={cuts} is not strictly increasing; allowed: {allowed}')
    return cuts


def check_num_modules(num_modules: int, n_blocks: int, field: str = 'split.num_modules') -> int:
    if not isinstance(num_modules, int) or isinstance(num_modules, bool) or not 1 <= num_modules <= n_blocks:
        raise InputError(f'{field}={num_modules!r} is invalid: the model has {n_blocks} blocks, '
                         f'so allowed values are integers 1..{n_blocks}')
    return num_modules


def equal_cuts(n_blocks: int, num_modules: int) -> List[int]:
    """Cuts giving K groups whose block counts differ by at most one (larger groups first)."""
    check_num_modules(num_modules, n_blocks)
    base, extra = divmod(n_blocks, num_modules)
    cuts, end = [], -1
    for k in range(num_modules - 1):
        end += base + (1 if k < extra else 0)
        cuts.append(end)
    return cuts


def balanced_cuts(block_costs: Sequence[float], num_modules: int,
                  exit_costs: Optional[Sequence[float]] = None, tail_cost: float = 0.0) -> List[int]:
    """Cuts minimising the largest module cost (exact, by dynamic programming).

    A module made of blocks ``i..j`` costs ``sum(block_costs[i..j])`` plus ``exit_costs[j]``
    (its auxiliary net, measured on block j's output) if it is not the last module, or plus
    ``tail_cost`` (final norm, task head and loss) if it is. Ties prefer later cuts.
    """
    n = len(block_costs)
    check_num_modules(num_modules, n)
    exit_costs = list(exit_costs) if exit_costs is not None else [0.0] * n
    prefix = [0.0]
    for c in block_costs:
        prefix.append(prefix[-1] + c)

    def cost(i: int, j: int, last: bool) -> float:
        return prefix[j + 1] - prefix[i] + (tail_cost if last else exit_costs[j])
    return min_max_cuts(n, num_modules, cost)


def min_max_cuts(num_blocks: int, num_modules: int, cost: Callable[[int, int, bool], float]) -> List[int]:
    """Cuts minimising the largest ``cost(i, j, last)`` of a module of blocks ``i..j`` (``last``:
    it is the last module), exact, by dynamic programming; ties prefer later cuts."""
    n, inf = num_blocks, float('inf')
    best = [[inf] * n for _ in range(num_modules)]  # best[k][j]: blocks 0..j in k+1 modules, the last ending at j
    arg = [[-1] * n for _ in range(num_modules)]
    for j in range(n):
        best[0][j] = cost(0, j, num_modules == 1 and j == n - 1)
    for k in range(1, num_modules):
        last = k == num_modules - 1
        for j in range(k, n):
            if last and j != n - 1:
                continue
            for c in range(k - 1, j):  # previous module ends at c
                v = max(best[k - 1][c], cost(c + 1, j, last))
                if v <= best[k][j]:
                    best[k][j], arg[k][j] = v, c
    cuts, j = [], n - 1
    for k in range(num_modules - 1, 0, -1):
        j = arg[k][j]
        cuts.append(j)
    return sorted(cuts)


def module_ranges(cuts: Sequence[int], n_blocks: int) -> List[range]:
    """Block index ranges of the modules defined by ``cuts``."""
    starts = [0] + [c + 1 for c in cuts]
    ends = list(cuts) + [n_blocks - 1]
    return [range(s, e + 1) for s, e in zip(starts, ends)]
