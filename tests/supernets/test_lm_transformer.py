"""Language-model modality: pystdlib corpus, lm_transformer space, (MoS) supernet training, job path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from nasforge.cli import main
from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import clear_cache, load_dataset
from nasforge.data.text import describe_corpus, split_text, stdlib_files
from nasforge.spaces.lm_transformer import LMTransformerSpace
from nasforge.supernets.evaluate import evaluate_classifier
from nasforge.supernets.lm_transformer import LMTransformerSupernet
from nasforge.supernets.mixture import MixtureLinear
from nasforge.supernets.trainer import SandwichTrainer

torch.set_num_threads(1)
ROOT = Path(__file__).parents[2]
TINY = {"vocab_size": 256, "context": 16, "head_dim": 4, "depths": [1, 2], "embed_dims": [8, 16],
        "heads": [1, 2], "mlp_ratios": [1, 2]}


@pytest.fixture(scope="module")
def text():
    return load_dataset(DatasetSpec(name="pystdlib", seed=0, seq_len=16))


def test_pystdlib_windows_are_next_token_pairs_split_by_file(text):
    X, y = text.train
    assert X.dtype == torch.int64 and X.shape[1] == 16 and text.input_shape == (16,)
    assert text.num_classes == 256 and int(X.max()) < 256
    # y is X shifted by one inside each window: the first 15 targets are the last 15 inputs
    assert torch.equal(X[:, 1:], y[:, :-1])
    # val and test are ~10% of the bytes each
    n = [s[0].numel() for s in (text.train, text.val, text.test)]
    assert 0.05 < n[1] / sum(n) < 0.2 and 0.05 < n[2] / sum(n) < 0.2
    # the windows cover the whole corpus (each split loses < one window at its end)
    files = stdlib_files()
    assert len(files) > 20 and all(f.suffix == ".py" for f in files)
    corpus = describe_corpus()["bytes"]
    covered = sum(s[0].shape[0] for s in (text.train, text.val, text.test)) * 17
    assert corpus - 3 * 17 < covered <= corpus


def test_pystdlib_split_is_deterministic_and_seed_dependent():
    a = split_text(0, 0.1, 0.1, 32)
    b = split_text(0, 0.1, 0.1, 32)
    c = split_text(1, 0.1, 0.1, 32)
    assert all(torch.equal(torch.from_numpy(x[0]), torch.from_numpy(y[0])) for x, y in zip(a, b, strict=True))
    assert a[1][0].shape != c[1][0].shape or not (a[1][0] == c[1][0]).all()
    clear_cache()


def test_space_canonicalizes_inactive_blocks_and_spans_sizes():
    space = LMTransformerSpace(TINY)
    arch = space.make({"depth": 1, "embed_dim": 8, "l0.heads": 2, "l0.mlp_ratio": 2, "l1.heads": 2,
                       "l1.mlp_ratio": 2})
    assert arch["l1.heads"] == 1 and arch["l1.mlp_ratio"] == 1
    small, large = space.cost(space.smallest()), space.cost(space.largest())
    assert large["flops"] > 2 * small["flops"] and large["params"] > small["params"]
    assert large["attention_flops"] > 0


def test_mixture_option_builds_mixture_layers_and_plain_does_not():
    space = LMTransformerSpace(TINY)
    mos = LMTransformerSupernet(space, {"mixture": {"experts": 3, "router_hidden": 5}})
    plain = LMTransformerSupernet(space, {})
    layers = [m for m in mos.modules() if isinstance(m, MixtureLinear)]
    assert len(layers) == 2 * 6 + 1 and all(m.experts == 3 for m in layers)
    assert not any(isinstance(m, MixtureLinear) for m in plain.modules())
    # the collapsed child has no experts: the same parameter count as a plain child
    arch = space.largest()
    assert sum(p.numel() for p in mos.extract(arch).parameters()) == \
        sum(p.numel() for p in plain.extract(arch).parameters()) == space.cost(arch)["params"]


def test_plain_weight_sharing_extract_equals_forward():
    """The contract suite runs the mixture configuration; the plain one (no ``mixture``) too."""
    space = LMTransformerSpace(TINY)
    torch.manual_seed(0)
    net = LMTransformerSupernet(space, {}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randint(0, 256, (3, 16))
    for arch in (space.smallest(), space.largest()):
        with torch.no_grad():
            torch.testing.assert_close(net.extract(arch).eval()(x), net(x, arch), atol=1e-5, rtol=0)


def test_attention_is_causal():
    space = LMTransformerSpace(TINY)
    torch.manual_seed(0)
    net = LMTransformerSupernet(space, {"mixture": {"experts": 2}}).eval()
    x = torch.randint(0, 256, (2, 16))
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 7) % 256
    with torch.no_grad():
        a, b = net(x, space.largest()), net(x2, space.largest())
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


@pytest.mark.parametrize(("options", "optimizer", "lr"), [({}, "sgd", 0.5),
                                                        ({"mixture": {"experts": 2, "router_hidden": 8}}, "adam", 0.01)])
def test_sandwich_training_lowers_the_token_loss(text, tmp_path, options, optimizer, lr):
    space = LMTransformerSpace(TINY)
    torch.manual_seed(0)
    net = LMTransformerSupernet(space, options)
    X, y = text.val[0][:200], text.val[1][:200]
    before = evaluate_classifier(net.extract(space.smallest()), X, y)["loss"]
    n = text.train[0].shape[0]
    spec = TrainingSpec(epochs=40 * 32 / n, batch_size=32, lr=lr, warmup_epochs=2 * 32 / n)
    trainer = SandwichTrainer(net, text, spec, seed=0, checkpoint_dir=tmp_path,
                              options={"num_random": 1, "label_smoothing": 0.0, "eval_images": 50,
                                       "optimizer": optimizer})
    assert type(trainer.optimizer).__name__ == {"sgd": "SGD", "adam": "Adam"}[optimizer]
    final = trainer.fit()
    assert trainer.step == 40
    # the checkpoint restores this optimizer's state exactly (Adam moments included)
    again = SandwichTrainer(LMTransformerSupernet(space, options), text, spec, seed=0, checkpoint_dir=tmp_path,
                            options=trainer.options)
    assert again.resume() is not None and again.step == 40
    sa, sb = trainer.optimizer.state_dict()["state"], again.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and sa
    for i in sa:
        for k, v in sa[i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb[i][k])), (i, k)
    assert 0 <= final["largest_val_acc"] <= 1  # next-token accuracy
    after = evaluate_classifier(net.extract(space.smallest()), X, y)["loss"]
    assert before > math.log(256) - 0.5 and after < before - 1.0, (before, after)
    if options:  # routers learned something: different archs now mix the experts differently
        layer = net.head.layer
        assert isinstance(layer, MixtureLinear) and layer.router[0].weight.grad is None  # grads cleared
        enc = [torch.from_numpy(space.encode([a])[0]) for a in (space.smallest(), space.largest())]
        assert not torch.allclose(layer.mixing_weights(enc[0]), layer.mixing_weights(enc[1]))


def _write(tmp: Path, **over) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "mos_lm.yaml").read_text())
    for key, value in over.items():
        spec[key] = value
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_example_validates_and_mismatched_dataset_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    assert main(["validate", str(ROOT / "examples" / "mos_lm.yaml")]) == 0
    capsys.readouterr()
    ev = yaml.safe_load((ROOT / "examples" / "mos_lm.yaml").read_text())["evaluation"]
    assert main(["validate", str(_write(tmp_path, evaluation={**ev, "dataset": {"name": "digits"}}))]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "evaluation.dataset.name" in err[0], err
    too_long = {**ev, "dataset": {"name": "pystdlib", "seq_len": 65}}
    assert main(["validate", str(_write(tmp_path, evaluation=too_long))]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "evaluation.dataset.seq_len" in err[0], err
    # your own corpus: a text file or a folder of them (dataset 'text')
    (tmp_path / "corpus.txt").write_text("def f(x):\n    return x + 1\n" * 400)
    mine = {**ev, "dataset": {"name": "text", "path": str(tmp_path / "corpus.txt"), "seq_len": 64}}
    assert main(["validate", str(_write(tmp_path, evaluation=mine))]) == 0
    capsys.readouterr()
    assert main(["validate", str(_write(tmp_path, evaluation={**ev, "dataset": {"name": "text"}}))]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "evaluation.dataset.path: required for dataset 'text'" in err[0], err
    bad_mix = {"name": "lm_transformer", "options": {"mixture": {"experts": 0}}}
    assert main(["validate", str(_write(tmp_path, supernet=bad_mix))]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "supernet.options.mixture.experts" in err[0], err


@pytest.mark.slow
def test_mos_lm_job_end_to_end(tmp_path, monkeypatch, capsys):
    """examples/mos_lm.yaml, shrunk: a latency table from profile-device, train, guided search by
    loss on it (the table matches the workers' device profile), export a plain child, load it back."""
    import mlflow

    import nasforge

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    spec = yaml.safe_load((ROOT / "examples" / "mos_lm.yaml").read_text())
    spec["space"]["options"].update({"context": 16, "depths": [1, 2], "embed_dims": [16, 32]})
    assert main(["profile-device", "--space", "lm_transformer", "--options", json.dumps(spec["space"]["options"]),
                 "--warmup", "1", "--repeats", "2", "--rounds", "1"]) == 0
    assert (tmp_path / "latency" / "lm_transformer.json").is_file()
    spec["training"]["epochs"] = 0.002
    spec["budget"] = {"evaluations": 6, "batch_size": 3}
    spec["strategy"] = {"name": "guided", "options": {"predictor": "gp", "population": 16, "generations": 2,
                                                      "latency_table": "latency/lm_transformer.json"}}
    spec["evaluation"]["dataset"]["seq_len"] = 16
    spec["evaluation"]["max_images"] = 64
    spec["evaluation"]["latency"] = {"batch_size": 1, "warmup": 1, "repeats": 2, "threads": 1}
    spec["workers"] = {"count": 1, "cpus": 1}
    job = tmp_path / "lm.yaml"
    job.write_text(yaml.safe_dump(spec))
    assert main(["submit", str(job), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["counts"]["done"] == 6, summary
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = [r.data.metrics for r in runs if "strategy_latency_table_device_match" in r.data.metrics]
    assert logged and all(m["strategy_latency_table_device_match"] == 1.0 for m in logged)
    assert all("strategy_latency_ms_within_10pct" in m for m in logged)
    assert main(["results", summary["job_id"], "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"perplexity"' in out and '"loss"' in out and '"accuracy"' not in out
    export_dir = tmp_path / "exports" / "best"
    assert main(["export", summary["job_id"], "--best", "loss", "-o", str(export_dir)]) == 0
    meta = json.loads((export_dir / "arch.json").read_text())
    assert meta["input_kind"] == "tokens" and meta["input_shape"] == [16]
    model = nasforge.load(export_dir)
    assert not any(isinstance(m, MixtureLinear) for m in model.modules())
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        logits = model(tokens)
    assert logits.shape == (2, 16, 256)
    # the loaded child scores like the search said (same loss on the same eval sequences)
    text = load_dataset(DatasetSpec(name="pystdlib", seed=0, seq_len=16))
    X, y = text.val[0][:64], text.val[1][:64]
    best = min((c for c in json.loads(out) if c["status"] == "done"), key=lambda c: c["metrics"]["loss"])
    assert meta["key"] == best["key"]
    assert abs(evaluate_classifier(model, X, y)["loss"] - best["metrics"]["loss"]) < 1e-4
    # a compression job on the exported language model: per-token loss and KL over (N, L, V) logits
    # (every candidate failed: "Expected target size [256, 256], got [256, 64]")
    from nasforge.core.spec import JobSpec
    from nasforge.workers.compression_workload import CompressionWorkload

    cspec = JobSpec.model_validate({
        "name": "c", "model": {"source": f"export:{export_dir}"},
        "space": {"name": "compression", "options": {"mode": "bits", "bits": [2, 8], "calibration_images": 32}},
        "strategy": {"name": "evopress"}, "objectives": [{"metric": "kl", "direction": "minimize"}],
        "evaluation": {"dataset": {"name": "pystdlib", "seed": 0, "seq_len": 16}, "max_images": 64},
    })
    CompressionWorkload.prepare(cspec, tmp_path / "compress", log=lambda m: None)
    w = CompressionWorkload(cspec, tmp_path / "compress")
    w.setup()
    eight, two = w.evaluate(w.space.largest()), w.evaluate(w.space.uniform(bits=2))
    assert abs(eight["loss"] - best["metrics"]["loss"]) < 0.02 and eight["kl"] < 1e-3
    assert two["kl"] > eight["kl"] and math.isfinite(two["loss"]) and 0 <= two["accuracy"] <= 1
