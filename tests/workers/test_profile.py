"""The per-op latency profiler writes a table LatencyLUT can read, covering every op of the space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nasforge.predictors.latency import LatencyLUT, LatencyTableError, op_key  # noqa: E402
from nasforge.spaces.bignas_cnn import BigNASCNNSpace  # noqa: E402
from nasforge.supernets.bignas import BigNASSupernet  # noqa: E402
from nasforge.workers.latency import measure_latency  # noqa: E402
from nasforge.workers.profile import profile_device  # noqa: E402

TINY = {"preset": "mnist", "resolutions": [20, 28], "kernels": [3], "expands": [2, 4], "widths": [0.5, 1.0]}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[BigNASCNNSpace, Path]:
    space = BigNASCNNSpace(TINY)
    out = tmp_path_factory.mktemp("lut") / "cpu.json"
    path = profile_device(space, out=out, warmup=1, repeats=3, rounds=2, threads=1, batch_size=1)
    return space, path


def test_table_format_and_coverage(table: tuple[BigNASCNNSpace, Path]) -> None:
    space, path = table
    data = json.loads(path.read_text())
    assert data["format"] == "nasforge-latency-lut" and data["device"]["kind"] == "cpu"
    assert data["device"]["id"] and data["settings"]["rounds"] == 2
    assert len(data["spread"]["round_total_ms"]) == 2
    keys = {row["key"] for row in data["ops"]}
    assert len(keys) == len(data["ops"])
    assert all(row["latency_ms"] > 0 and row["p10_ms"] <= row["latency_ms"] <= row["p90_ms"] for row in data["ops"])
    rng = np.random.default_rng(5)
    for _ in range(200):  # every op of any arch is in the table
        assert {op_key(d) for d in space.ops(space.sample(rng))} <= keys


def test_lut_sum_ranks_measured_child_latency(tmp_path: Path) -> None:
    """The table's sum ranks the children as timing them does. Both sides take the fastest call
    (statistic min), which a busy machine (a parallel test run, CI's two cores) disturbs least: with
    the median, the test failed once while another process took a core."""
    space = BigNASCNNSpace(TINY)
    lut = LatencyLUT.load(profile_device(space, out=tmp_path / "min.json", warmup=1, repeats=3, rounds=3, threads=1,
                                         batch_size=1, statistic="min"))
    archs = [space.smallest(), space.largest()] + [space.sample(np.random.default_rng(i)) for i in range(6)]
    predicted = lut.predict(space, archs)
    assert np.all(predicted > 0)
    # interleaved: 5 rounds over all children, the fastest call per round, the median of rounds per child
    children = [BigNASSupernet.build_child(space, a).eval() for a in archs]
    x = {a["resolution"]: torch.randn(1, 1, 28, 28) for a in archs}
    rounds = [[measure_latency(m, x[a["resolution"]], warmup=2, repeats=5, statistic="min")["latency_ms"]
               for m, a in zip(children, archs, strict=True)] for _ in range(5)]
    measured = np.median(np.array(rounds), axis=0)
    assert measured[1] > measured[0] and predicted[1] > predicted[0]
    from scipy.stats import spearmanr

    assert spearmanr(measured, predicted).statistic > 0.5, (measured, predicted)


def test_other_space_and_bad_file_are_refused(table: tuple[BigNASCNNSpace, Path], tmp_path: Path) -> None:
    space, path = table
    lut = LatencyLUT.load(path)
    big = BigNASCNNSpace({"preset": "mnist"})  # kernels 5 were never profiled
    with pytest.raises(LatencyTableError, match="profile-device"):
        lut.predict(big, [big.largest()])
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(LatencyTableError, match="not a nasforge-latency-lut"):
        LatencyLUT.load(bad)


def test_reference_normalised_table_is_keyed_like_a_worker_measuring_the_same_way(tmp_path: Path) -> None:
    """--statistic min --reference: the table records its reference op and baseline, and its
    device id is the one a worker with evaluation.latency {statistic: min, reference: true} has
    (and not the plain one), so guided search can tell whether the two were measured alike."""
    import torch

    from nasforge.workers.latency import device_profile

    space = BigNASCNNSpace(TINY)
    path = profile_device(space, out=tmp_path / "ref.json", warmup=1, repeats=3, rounds=2, threads=1, batch_size=1,
                          statistic="min", reference=True)
    data = json.loads(path.read_text())
    ref = data["settings"]["reference"]
    assert ref["baseline_ms"] > 0 and ref["op"] in {row["key"] for row in data["ops"]}
    cpu = torch.device("cpu")
    same = device_profile(cpu, threads=1, batch_size=1, dtype=torch.float32, statistic="min", reference=True)
    plain = device_profile(cpu, threads=1, batch_size=1, dtype=torch.float32)
    assert data["device"]["id"] == same["id"] != plain["id"]
    assert all(row["latency_ms"] > 0 for row in data["ops"])


def _vit_space() -> object:
    from nasforge.spaces.elastic_vit import ElasticViTSpace
    from nasforge.supernets.elastic_vit import ElasticViTSupernet

    return ElasticViTSpace(ElasticViTSupernet.contract_config()[0])


def _pooling_space() -> object:
    from nasforge.spaces.pooling_layout import PoolingLayoutSpace

    return PoolingLayoutSpace({"preset": "mnist"})


def _lm_space() -> object:
    from nasforge.spaces.lm_transformer import LMTransformerSpace
    from nasforge.supernets.lm_transformer import LMTransformerSupernet

    return LMTransformerSpace(LMTransformerSupernet.contract_config()[0])


CHILD_OF = {"elastic_vit": "elastic_vit", "pooling_layout": "pooling_mixture", "lm_transformer": "lm_transformer"}


@pytest.mark.parametrize("make_space", [_vit_space, _pooling_space, _lm_space],
                         ids=["elastic_vit", "pooling_layout", "lm_transformer"])
def test_other_spaces_ops_chain_into_the_child_and_are_profiled(make_space, tmp_path: Path) -> None:
    """elastic_vit, pooling_layout and lm_transformer list their ops too: the op modules, run one
    after another, map the child's input to outputs of the child's shape (so the ops are the whole
    network, in order, with matching shapes), their parameters are the child's in number, and
    profile-device covers every op of sampled archs."""
    from nasforge.supernets import SUPERNETS
    from nasforge.workers.profile import op_builder

    space = make_space()
    build = op_builder(space)
    sn = SUPERNETS.get(CHILD_OF[space.id], "x")
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    for arch in [space.smallest(), space.largest(), space.sample(rng), space.sample(rng)]:
        ops = space.ops(arch)
        child = sn.build_child(space, arch).eval()
        if space.id == "lm_transformer":
            x = torch.randint(0, space.options.vocab_size, (2, space.options.context), generator=g)
        else:
            x = torch.randn(2, *child.input_shape[:1], space.options.input_size, space.options.input_size)
        chain = torch.nn.Sequential(*[build(d) for d in ops]).eval()
        with torch.no_grad():
            y = chain(x)
            assert y.shape == child(x).shape
        if space.id == "lm_transformer":  # one definition: the space's cost counts exactly these weights
            n = sum(p.numel() for p in chain.parameters())
            assert n == sum(p.numel() for p in child.parameters()) == space.cost(arch)["params"]
    path = profile_device(space, out=tmp_path / "t.json", warmup=1, repeats=2, rounds=1)
    lut = LatencyLUT.load(path)
    archs = [space.smallest(), space.largest(), *(space.sample(rng) for _ in range(20))]
    assert np.all(lut.predict(space, archs) > 0)  # every op of every arch is in the table


def test_time_interleaved_times_everyone_once_per_round_in_fresh_orders() -> None:
    """Every model once per round, a fresh order per round (so a slow spell hits one round of
    every model), every value measure reports kept per (round, model)."""
    from nasforge.workers.latency import time_interleaved

    calls: list[int] = []
    rounds_done: list[int] = []
    models = [torch.nn.Identity() for _ in range(12)]
    inputs = [torch.full((1,), float(i)) for i in range(12)]

    def measure(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
        i = int(x.item())
        calls.append(i)
        return {"latency_ms": 10.0 + i + len(calls) / 1000, "latency_raw_ms": float(i)}

    out = time_interleaved(models, inputs, measure, rounds=3, rng=np.random.default_rng(0),
                           after_round=rounds_done.append)
    assert rounds_done == [0, 1, 2] and set(out) == {"latency_ms", "latency_raw_ms"}
    orders = [calls[r * 12:(r + 1) * 12] for r in range(3)]
    assert all(sorted(o) == list(range(12)) for o in orders) and orders[0] != orders[1] != orders[2]
    assert out["latency_ms"].shape == (3, 12) and np.array_equal(out["latency_raw_ms"], np.tile(np.arange(12.0), (3, 1)))
    for r in range(3):  # the value of the k-th call of round r landed in that model's column
        for k, i in enumerate(orders[r]):
            assert out["latency_ms"][r, i] == pytest.approx(10.0 + i + (r * 12 + k + 1) / 1000)
    assert time_interleaved([], [], measure, rounds=2, rng=np.random.default_rng(0)) == {}  # nothing to time
    with pytest.raises(ValueError, match="2 models but 1 inputs"):
        time_interleaved(models[:2], inputs[:1], measure, rounds=1, rng=np.random.default_rng(0))
