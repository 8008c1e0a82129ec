import itertools

import pytest

from localvision.models.split.cuts import balanced_cuts, equal_cuts, module_ranges, validate_cuts


def brute_force(costs, k, exits, tail):
    n = len(costs)
    best = None
    for cuts in itertools.combinations(range(n - 1), k - 1):
        rs = module_ranges(cuts, n)
        worst = max(sum(costs[i] for i in r) + (tail if j == k - 1 else exits[r[-1]])
                    for j, r in enumerate(rs))
        if best is None or worst < best:
            best = worst
    return best


def cost_of(cuts, costs, exits, tail):
    rs = module_ranges(cuts, len(costs))
    return max(sum(costs[i] for i in r) + (tail if j == len(rs) - 1 else exits[r[-1]]) for j, r in enumerate(rs))


@pytest.mark.parametrize('k', [1, 2, 3, 4, 6])
def test_balanced_cuts_are_optimal(k):
    costs = [90, 40, 40, 40, 30, 20, 20, 20, 10, 10, 5, 5]
    exits = [c // 3 for c in costs]
    cuts = balanced_cuts(costs, k, exits, tail_cost=7)
    assert len(cuts) == k - 1
    validate_cuts(cuts, len(costs))
    assert cost_of(cuts, costs, exits, 7) == brute_force(costs, k, exits, 7)


def test_balanced_puts_cuts_early_when_early_blocks_are_large():
    costs = [8] * 4 + [2] * 12  # early, high-resolution blocks dominate
    cuts = balanced_cuts(costs, 2)
    assert cuts[0] < len(costs) // 2 - 1


def test_equal_cuts():
    assert equal_cuts(10, 1) == []
    assert equal_cuts(10, 2) == [4]
    assert equal_cuts(10, 3) == [3, 6]
    assert [len(r) for r in module_ranges(equal_cuts(55, 4), 55)] == [14, 14, 14, 13]


def test_bad_num_modules_and_cuts_name_the_field():
    with pytest.raises(ValueError, match=r'split.num_modules=12 .* allowed values are integers 1..11'):
        equal_cuts(11, 12)
    with pytest.raises(ValueError, match='split.cuts=.*out of range'):
        validate_cuts([3, 11], 11)
    with pytest.raises(ValueError, match='not strictly increasing'):
        validate_cuts([5, 5], 11)
    with pytest.raises(ValueError, match='not strictly increasing'):
        validate_cuts([6, 2], 11)
