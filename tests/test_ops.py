"""is_real; gelu_mlp. (Plugins' constructor arguments: lrc.constraints, tests/test_constraints.py.)"""

import numpy as np
import pytest
import torch

from lrc.ops import gelu_mlp, is_real


@pytest.mark.parametrize("value,ok", [(1, True), (0.5, True), (np.float32(2.0), True), (np.int64(3), True),
                                      (True, False), (float("nan"), False), (float("inf"), False), ("1", False),
                                      (None, False)])
def test_is_real_takes_finite_numbers_but_not_bools(value, ok):
    assert is_real(value) is ok


def test_gelu_mlp_is_linear_gelu_linear_with_stable_state_dict_keys():
    torch.manual_seed(0)
    net = gelu_mlp(4, 8, 2)
    assert [type(m) for m in net] == [torch.nn.Linear, torch.nn.GELU, torch.nn.Linear]
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # heads' checkpoints use these
    assert net(torch.randn(3, 4)).shape == (3, 2)
