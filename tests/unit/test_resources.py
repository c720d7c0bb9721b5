"""Allocation of cores, GPUs and ports for new replicas."""

import pytest

from enova.apply.resources import choose_cpus, choose_gpus, choose_port
from enova.errors import PermanentError


@pytest.mark.parametrize("host,used,n,prefer,expected", [
    ([0, 1], {}, 1, [], [0]),
    ([0, 1], {0: "a-1"}, 1, [], [1]),
    ([0, 1, 2, 3], {1: "a-1"}, 2, [], [0, 2]),
    ([0, 1], {1: "a-1"}, 1, [0], [0]),          # a successor takes the cores of what it replaces
    ([0, 1], {0: "a-1", 1: "b-1"}, 1, [1], [1]),
    ([2, 3], {}, 1, [0], [2]),                  # a preferred core outside the host set is ignored
])
def test_choose_cpus(host, used, n, prefer, expected):
    assert choose_cpus(host, used, n, prefer) == expected


def test_choose_cpus_names_the_holders_when_full():
    with pytest.raises(PermanentError, match=r"0 -> a-1, 1 -> b-1"):
        choose_cpus([0, 1], {0: "a-1", 1: "b-1"}, 1)


def test_choose_gpus_takes_free_ones_in_inventory_order():
    assert choose_gpus(["GPU-a", "GPU-b", "GPU-c"], {"GPU-a": "x-1"}, 2) == ["GPU-b", "GPU-c"]


def test_choose_gpus_without_a_gpu_says_so():
    with pytest.raises(PermanentError, match="no GPU"):
        choose_gpus([], {}, 1)
    with pytest.raises(PermanentError, match="1 of 2 are free"):
        choose_gpus(["GPU-a", "GPU-b"], {"GPU-a": "x-1"}, 2)


def test_choose_port_skips_taken_and_busy_ports():
    assert choose_port((100, 105), {100}, lambda p: p != 101) == 102
    with pytest.raises(PermanentError, match="ENOVA_PORT_RANGE"):
        choose_port((100, 101), {100, 101}, lambda p: True)
