"""The paper-table scripts (experiments/) in reduced settings, their configs, and the Optuna sweep."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "conf"
for folder in ("paper", "toytown", "bench"):  # the scripts import their shared helpers by name
    sys.path.insert(0, str(ROOT / "experiments" / folder))

import layer_sweep  # noqa: E402
import method_comparison  # noqa: E402
import watermark_removal  # noqa: E402
from paper_tables import metric_cell  # noqa: E402

# Small enough for seconds per run; the second moment is shared by every test through one scratch folder.
QUICK = ["statistics.num_samples=100", "samples.count=2", "metrics.heldout_images=2"]


@pytest.fixture(scope="module")
def toytown_segmenter():
    from rewriting.errors import CheckpointError
    from rewriting.toytown.segmenter import load_segmenter
    try:
        return load_segmenter()
    except CheckpointError:
        pytest.skip("the Toytown segmenter weights are not there yet")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("experiment_runs")


def read_csv(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


def test_scaled_dranks_keep_the_papers_share_of_the_layer():
    assert watermark_removal.scaled_dranks(512) == [30, 60]
    assert watermark_removal.scaled_dranks(128) == [8, 15]
    assert watermark_removal.scaled_dranks(8) == [1, 1]


def test_best_layer_maximizes_the_mean_objective():
    grouped = {("e", 5): [{"objective": 0.2}, {"objective": 0.4}], ("e", 6): [{"objective": 0.35}],
               ("f", 3): [{"objective": -1.0}]}
    assert layer_sweep.best_layers(grouped) == {"e": 6, "f": 3}


def test_layer_sweep_composes_edit_specific_overrides_before_any_run(monkeypatch, tmp_path):
    from hydra.errors import ConfigCompositionException

    class SweepStarted(Exception):
        pass

    def started(*args, **kwargs):
        raise SweepStarted

    monkeypatch.setattr(layer_sweep, "sweep", started)
    # An override that only the swept edit's config has composes (it once failed after every run).
    with pytest.raises(SweepStarted):
        layer_sweep.main(["--edits", "dome_to_spire", "--out", str(tmp_path), "~edit.request.paste_anchor"])
    # One that does not fit it fails before the first run.
    with pytest.raises(ConfigCompositionException, match="paste_anchor"):
        layer_sweep.main(["--edits", "spire_to_tree", "--out", str(tmp_path), "~edit.request.paste_anchor"])


def test_layer_sweep_first_seed_runs_held_out_seeds_only(monkeypatch, tmp_path):
    seen = []

    def fake_run(overrides, out_dir, reuse=False):
        seed = int(next(o for o in overrides if o.startswith("seed=")).split("=")[1])
        seen.append(seed)
        return {"edit_success": 0.1 * seed, "undesired_change_l1": 0.01, "objective": 0.0, "edit_seconds": 1.0,
                "run_seconds": 1.0}

    monkeypatch.setattr(layer_sweep, "run_overrides", fake_run)
    monkeypatch.setattr(layer_sweep, "resolved_edit_overrides", lambda edit, seed, scratch, extra, layer=None: [])
    layer_sweep.main(["--edits", "spire_to_tree", "--layers", "6", "--seeds", "2", "--first-seed", "17",
                      "--out", str(tmp_path)])
    assert seen == [17, 18]
    assert [row["seed"] for row in read_csv(tmp_path / "runs.csv")] == ["17", "18"]
    assert "2 seed(s) from 17, mean ± std; the runs took 0.0 min." in (tmp_path / "table.md").read_text()


def test_default_layer_is_the_most_successful_within_the_undesired_change_bound():
    grouped = {("e", 6): [{"edit_success": 0.5, "undesired_change_l1": 0.03}],
               ("e", 7): [{"edit_success": 0.9, "undesired_change_l1": 0.08}],  # too much collateral change
               ("e", 8): [{"edit_success": 0.6, "undesired_change_l1": 0.04}, {"edit_success": 0.6,
                                                                              "undesired_change_l1": 0.05}],
               ("w", 5): [{"edit_success": None, "erase_success": 0.7, "undesired_change_l1": 0.01}],
               ("x", 3): [{"edit_success": 0.9, "undesired_change_l1": 0.2}]}
    assert layer_sweep.default_layers(grouped, max_undesired=0.05) == {"e": 8, "w": 5}
    assert layer_sweep.default_layers(grouped, max_undesired=0.1) == {"e": 7, "w": 5}


def test_claim_lines_say_whether_ours_beats_the_baseline():
    runs = [{"edit": "spire_to_tree", "method_name": "rank_one", "edit_success": 0.6, "undesired_change_l1": 0.01},
            {"edit": "spire_to_tree", "method_name": "finetune_all", "edit_success": 0.3, "undesired_change_l1": 0.02},
            {"edit": "dome_to_tree", "method_name": "rank_one", "edit_success": 0.2, "undesired_change_l1": 0.01},
            {"edit": "dome_to_tree", "method_name": "finetune_all", "edit_success": 0.3,
             "undesired_change_l1": 0.02}]
    first, second = method_comparison.claim_lines(runs)
    assert first.startswith("- spire_to_tree") and "claim holds" in first
    assert second.startswith("- dome_to_tree") and "not higher" in second and "does not hold" in second


def test_metric_cells_report_absent_weights_instead_of_a_number():
    assert metric_cell([{"m": "weights absent: alexnet.pth"}], "m") == "weights absent"
    assert metric_cell([{"m": 0.5}, {"m": 0.7}], "m", 2) == "0.60 ± 0.14"
    assert metric_cell([{"m": None}], "m") == "—"


def test_experiment_and_sweep_configs_compose():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        optuna = compose("config", overrides=["hparams_search=rank_one_optuna"], return_hydra_config=True)
        sweep = compose("config", overrides=["experiment=layer_sweep"], return_hydra_config=True)
        comparison = compose("config", overrides=["experiment=method_comparison", "seed=2"])
    assert optuna.optimized_metric == "objective" and optuna.objective_lambda == 10.0
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper") and optuna.hydra.sweeper.direction == "maximize"
    assert set(optuna.hydra.sweeper.params) == {"method.lr", "method.steps", "method.rank", "layer"}
    assert sweep.hydra.sweeper.params.layer == "3,4,5,6,7,8" and sweep.edit.name == "spire_to_tree"
    assert comparison.edit.seed == 2


def test_method_comparison_writes_its_table(toytown_segmenter, scratch, tmp_path):
    out = tmp_path / "comparison"
    method_comparison.main(["--samples", "8", "--seeds", "1", "--edits", "spire_to_tree", "--methods", "rank_one",
                            "finetune_all", "--out", str(out), "--scratch", str(scratch), *QUICK, "method.steps=20"])
    rows = read_csv(out / "table.csv")
    assert [(r["edit"], r["method"]) for r in rows] == [("spire_to_tree", "rank_one"),
                                                        ("spire_to_tree", "finetune_all")]
    assert 0 <= float(rows[0]["edit_success_mean"]) <= 1 and float(rows[0]["undesired_change_l1_mean"]) >= 0
    table = (out / "table.md").read_text()
    assert "| spire_to_tree | rank_one |" in table and "masked LPIPS" in table
    assert (out / "plot.png").stat().st_size > 1000 and len(read_csv(out / "runs.csv")) == 2


def test_erase_table_writes_before_and_after_shares(toytown_segmenter, scratch, tmp_path):
    # erase_windows: windows are common, so its request resolves fast; the watermark runs the same code
    out = tmp_path / "erase"
    watermark_removal.main(["--edit", "erase_windows", "--samples", "8", "--seeds", "1", "--dranks", "4", "--out",
                            str(out), "--scratch", str(scratch), *QUICK])
    rows = read_csv(out / "table.csv")
    assert [r["method"] for r in rows] == ["no edit", "rank_one", "unit_zeroing", "rank_one, surroundings fill"]
    # The drank rows are the paper's zero-units erase even though erase_windows fills by default.
    runs = scratch / "runs" / "erase_windows"
    zeroed = json.loads((runs / "rank_one_drank4" / "seed1" / "metrics.json").read_text())
    assert len(zeroed["erased_units"]) == 4
    filled = json.loads((runs / "rank_one_surroundings" / "seed1" / "edit.json").read_text())
    assert filled["request"]["erase_fill"] == "surroundings"
    before = float(rows[0]["showing_before_mean"])
    assert all(float(r["showing_before_mean"]) == before for r in rows)  # one metric sample for every row
    assert 0 < before <= 1 and 0 <= float(rows[2]["showing_after_mean"]) <= 1
    table = (out / "table.md").read_text()
    assert "| unit_zeroing | 4 |" in table and "| rank_one, surroundings fill | — |" in table
    assert "showing a window" in table


def test_layer_sweep_writes_its_table_and_names_a_best_layer(toytown_segmenter, scratch, tmp_path):
    out = tmp_path / "sweep"
    layer_sweep.main(["--samples", "8", "--layers", "5", "6", "--out", str(out), "--scratch", str(scratch), *QUICK,
                      "method.steps=50"])
    rows = read_csv(out / "table.csv")
    assert [int(r["layer"]) for r in rows] == [5, 6]
    table = (out / "table.md").read_text()
    assert "Best layer per edit" in table and "**best**" in table
    assert (out / "plot.png").is_file()
    runs = read_csv(out / "runs.csv")  # every run, so per-seed spread can be read back
    assert [(int(r["layer"]), int(r["seed"])) for r in runs] == [(5, 1), (6, 1)]
    success = [float(r["edit_success"]) for r in runs if int(r["layer"]) == 6]
    assert success[0] == pytest.approx(float(rows[1]["edit_success_mean"]))


def test_layer_sweep_takes_request_overrides_at_resolution(toytown_segmenter, tmp_path):
    from rewriting.edits.loading import load_edit

    # edit.request.* does not exist in the replayed (edit=from_file) runs; it must shape the request only.
    layer_sweep.main(["--samples", "8", "--layers", "6", "--out", str(tmp_path / "sweep"), "--scratch",
                      str(tmp_path / "scratch"), *QUICK, "method.steps=20", "edit.request.context.count=3"])
    assert len(load_edit(tmp_path / "scratch/runs/spire_to_tree/layer6/seed1/edit.json").request.context) == 3


def test_two_trial_optuna_sweep_runs_and_reports_the_best_objective(toytown_segmenter, tmp_path):
    sweep_dir = tmp_path / "sweep"
    command = [sys.executable, "run.py", "hparams_search=rank_one_optuna", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep_dir}", "metrics.num_samples=8",
               "metrics.segmenter_fid=false", "metrics.lpips=null", f"statistics.cache_dir={tmp_path / 'statistics'}",
               "statistics.num_samples=100", "samples.count=2", "trainer=cpu"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"method.lr", "method.steps", "method.rank", "layer"}
    assert isinstance(results["best_value"], float)
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 2


def test_metric_sample_counts_cpu_default_and_paper_setting():
    from paper_tables import compose_config

    assert compose_config([]).metrics.num_samples >= 500
    paper = compose_config(["metrics=paper"]).metrics
    assert paper.num_samples == 10000 and paper.inception_fid is True


def test_precision_check_measures_bf16_against_float32(tiny_checkpoint, tmp_path):
    out = tmp_path / "precision.json"
    command = [sys.executable, "experiments/bench/precision_check.py", "--checkpoint", str(tiny_checkpoint),
               "--layer", "4", "--images", "8", "--steps", "20", "--device", "cpu", "--out", str(out)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    fp32, bf16 = report["precisions"]["fp32"], report["precisions"]["bf16"]
    assert fp32["delta_relative_difference"] == 0 and fp32["image_max_abs_difference"] == 0 and fp32["safe"]
    # bfloat16 keeps 8 bits of mantissa: the edit and the images must come out measurably different.
    assert 0 < bf16["delta_relative_difference"] < 1 and bf16["image_max_abs_difference"] > 0
    assert report["checkpoint_sha256"] and "tf32" not in report["precisions"]  # TF32 is CUDA-only


def test_soft_part_presence_follows_the_hard_count_and_has_a_gradient():
    import train_toytown_generator as training
    parts = torch.tensor([1])
    logits = torch.full((2, 3, 8, 8), -10.0)
    logits[:, 0] = 10.0
    logits[0, 1, :3, :3] = 20.0  # image 0 shows part 1 on 9 pixels, image 1 on none
    logits.requires_grad_(True)
    presence = training.soft_part_presence(logits, parts, scale=2.0)
    assert presence[0, 0] > 0.85 and presence[1, 0] < 0.01
    presence.sum().backward()
    assert logits.grad[0, 1].sum() > 0 and logits.grad[1, 1].sum() > 0  # more part pixels, more presence
    sharp = training.soft_part_presence(logits, parts, scale=1.5, form="sigmoid")
    assert sharp[0, 0] > 0.95 and sharp[1, 0] < 0.05


def run_share_finetune(make_generator, tmp_path, *options: str):
    """Three share fine-tune steps of a tiny 64-px generator with `options`: (start dir, out dir)."""
    from rewriting.models.checkpoints import save_stylegan2
    start = tmp_path / "start"
    start.mkdir()
    save_stylegan2(make_generator(size=64, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}), start / "generator_ema.pt")
    out = tmp_path / "out"
    command = [sys.executable, "experiments/toytown/train_toytown_generator.py", "--resume", str(start), "--out", str(out),
               "--device", "cpu", "--threads", "1", "--batch", "4", "--max-steps", "3", "--minutes", "5",
               "--share-weight", "50", "--share-target-images", "200", "--log-every", "1", *options]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return start, out


def test_share_finetune_of_the_mapping_network_leaves_the_synthesis_network_untouched(
        toytown_segmenter, make_generator, tmp_path):
    from rewriting.models.checkpoints import read_checkpoint, stylegan2_from_checkpoint
    start, out = run_share_finetune(make_generator, tmp_path, "--trainable", "mapping", "--mapping-lr-scale", "100")
    before = stylegan2_from_checkpoint(read_checkpoint(start / "generator_ema.pt")).state_dict()
    after = stylegan2_from_checkpoint(read_checkpoint(out / "generator_ema.pt")).state_dict()
    mapping = [name for name in before if name.startswith("style.")]
    synthesis = [name for name in before if not name.startswith("style.") and name != "latent_avg"]
    assert mapping and synthesis
    assert all(torch.equal(before[name], after[name]) for name in synthesis)
    assert any(not torch.equal(before[name], after[name]) for name in mapping)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all("running_shares" in record and "share_error" in record for record in log)


def test_share_finetune_after_a_layer_leaves_that_layer_and_everything_before_it_untouched(
        toytown_segmenter, make_generator, tmp_path):
    from rewriting.models.checkpoints import read_checkpoint, stylegan2_from_checkpoint
    start, out = run_share_finetune(make_generator, tmp_path, "--train-after-layer", "6", "--anchor-weight", "10",
                                    "--lr", "0.01", "--ema-kimg", "0.001")
    before = stylegan2_from_checkpoint(read_checkpoint(start / "generator_ema.pt"))
    after = stylegan2_from_checkpoint(read_checkpoint(out / "generator_ema.pt"))
    z = torch.randn(3, before.z_dim, generator=torch.Generator().manual_seed(0))
    # Layer 6's input (its keys) and output are the same for every latent; the images are not.
    for layer in (6, 7):
        assert torch.equal(before.layer_input(z, layer).features, after.layer_input(z, layer).features)
    assert not torch.equal(before(z), after(z))
    changed = {name for name, value in before.state_dict().items()
               if not torch.equal(value, after.state_dict()[name])}
    assert changed and all(name.startswith(("convs.4.", "convs.5.", "convs.6.", "convs.7.", "to_rgbs.1.", "to_rgbs.2.", "to_rgbs.3."))
                           for name in changed), changed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["anchor_l1"] > 0


def test_patch_discriminator_judges_each_patch_from_its_own_neighbourhood_only():
    from rewriting.toytown.discriminator import PatchDiscriminator
    discriminator = PatchDiscriminator()
    images = torch.rand(1, 3, 64, 64)
    changed = images.clone()
    changed[:, :, 48:, 48:] = 0  # redraw the bottom-right corner only
    before, after = discriminator(images).view(16, 16), discriminator(changed).view(16, 16)
    moved = (before - after).abs() > 1e-6
    assert moved[12:, 12:].all()  # the patches over the change see it
    assert not moved[:6].any() and not moved[:, :6].any()  # a patch 24 px away does not


def test_patch_discriminator_finetune_trains_only_the_late_layers_and_resumes_its_discriminator(
        toytown_segmenter, make_generator, tmp_path):
    from rewriting.models.checkpoints import read_checkpoint, stylegan2_from_checkpoint
    start, out = run_share_finetune(make_generator, tmp_path, "--discriminator", "patch", "--train-after-layer", "6",
                                    "--anchor-weight", "10", "--anchor-pool", "4", "--lr", "0.01", "--ema-kimg", "0.001")
    saved = torch.load(out / "patch_discriminator.pt")
    assert not (out / "discriminator.pt").exists()
    before = stylegan2_from_checkpoint(read_checkpoint(start / "generator_ema.pt"))
    after = stylegan2_from_checkpoint(read_checkpoint(out / "generator_ema.pt"))
    z = torch.randn(3, before.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before.layer_input(z, 7).features, after.layer_input(z, 7).features)
    assert not torch.equal(before(z), after(z))
    # A second run resumes the patch discriminator it saved rather than starting a fresh one.
    command = [sys.executable, "experiments/toytown/train_toytown_generator.py", "--resume", str(out), "--out",
               str(tmp_path / "again"), "--device", "cpu", "--threads", "1", "--batch", "4", "--max-steps", "1",
               "--discriminator", "patch", "--lr", "0", "--r1-every", "1000"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    resumed = torch.load(tmp_path / "again" / "patch_discriminator.pt")
    assert all(torch.equal(saved[name], resumed[name]) for name in saved)


def test_checkpoint_selection_prefers_the_generator_whose_part_shares_match_the_renderer(
        toytown_segmenter, make_generator, tmp_path):
    from rewriting.models.checkpoints import save_stylegan2
    from rewriting.models.loading import BUNDLED
    untrained = tmp_path / "untrained.pt"
    save_stylegan2(make_generator(size=64, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}), untrained)
    out = tmp_path / "selection.json"
    command = [sys.executable, "experiments/toytown/select_toytown_checkpoint.py", str(untrained), str(BUNDLED["toytown"]),
               "--samples", "60", "--edit-seeds", "1", "--edit-samples", "40", "--scratch", str(tmp_path / "edits"),
               "--out", str(out)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["chosen"] == str(BUNDLED["toytown"])
    trained, random = report["checkpoints"][str(BUNDLED["toytown"])], report["checkpoints"][str(untrained)]
    assert trained["largest_relative_difference"] < random["largest_relative_difference"]
    assert trained["segmenter_fid"] < random["segmenter_fid"]
    # edit seed 1 is `python run.py`'s own edit; seed 2 is the one of 16 whose pasted spire spills
    edit = trained["default_edit"]["edit_seeds"]["1"]
    assert edit["edit_success"] > 0.2 and edit["undesired_change_l1"] < 0.05
    assert random["default_edit"]["mean_edit_success"] < edit["edit_success"] and not random["meets_bars"]
    assert (tmp_path / "edits" / f"{BUNDLED['toytown'].stem}_seed1" / "before_after.png").is_file()


def test_checkpoint_selection_bars_need_the_shares_and_the_default_edit():
    from select_toytown_checkpoint import meets_bars
    edit = {"mean_edit_success": 0.55, "mean_undesired_change_l1": 0.03}
    assert meets_bars({"largest_relative_difference": 0.2, "default_edit": edit})
    assert not meets_bars({"largest_relative_difference": 0.3, "default_edit": edit})
    assert not meets_bars({"largest_relative_difference": 0.2, "default_edit": {**edit, "mean_edit_success": 0.4}})
    assert not meets_bars({"largest_relative_difference": 0.2, "default_edit": {**edit, "mean_undesired_change_l1": 0.06}})
    assert meets_bars({"largest_relative_difference": 0.2})  # shares only, when no edit seeds were given


def test_a_changed_request_is_resolved_anew_so_reused_runs_cannot_replay_the_old_one(tmp_path):
    from paper_tables import resolved_edit_overrides

    from rewriting.edits.loading import load_edit

    def resolved(*extra):
        overrides = resolved_edit_overrides("spire_to_tree", 1, tmp_path, ["++edit.request.context.count=2", *extra])
        return Path(next(o for o in overrides if o.startswith("edit.file=")).split("=", 1)[1])

    largest = resolved()
    first = resolved("++edit.request.copy.pick=first")
    assert largest != first  # the runs' configs name different files, so --reuse re-runs them
    assert load_edit(largest).request.copy.image_id != load_edit(first).request.copy.image_id
    written = largest.stat().st_mtime_ns
    assert resolved() == largest and largest.stat().st_mtime_ns == written  # the same request: resolved once


def test_a_reachable_paste_is_resolved_for_each_layer_a_sweep_runs(tmp_path):
    """pick: reachable depends on the layer's context directions; other requests resolve once for every layer."""
    from paper_tables import resolved_edit_overrides

    def resolved(layer, *extra):
        overrides = resolved_edit_overrides("dome_to_tree", 1, tmp_path, ["++edit.request.context.count=3",
                                                                          "statistics.num_samples=100", *extra], layer)
        return Path(next(o for o in overrides if o.startswith("edit.file=")).split("=", 1)[1])

    reachable = ["++edit.request.paste.pick=reachable", "++edit.request.paste.among=3"]
    assert resolved(4, *reachable) != resolved(6, *reachable)
    assert resolved(4, *reachable) == resolved(4, *reachable)
    assert resolved(4, "++edit.request.paste.pick=largest") == resolved(6, "++edit.request.paste.pick=largest")


def test_bundled_min_piece_never_drops_a_roof_the_renderer_draws(tmp_path):
    import toytown_part_sizes
    report = toytown_part_sizes.main(["--renders", "300", "--out", str(tmp_path / "sizes.json")])
    pieces = report["pieces"]
    for edit, part in (("spire_to_tree", "spire"), ("dome_to_spire", "dome"), ("dome_to_spire", "spire")):
        min_piece = yaml.safe_load((ROOT / "conf/edit" / f"{edit}.yaml").read_text())["request"]["min_piece"]
        assert min_piece < pieces[part]["smallest"], (edit, part)
    # dome_to_spire's context reaches about as far above a dome as a rendered spire rises above one.
    extend_up = yaml.safe_load((ROOT / "conf/edit/dome_to_spire.yaml").read_text())["request"]["context_extend_up"]
    assert abs(extend_up - (pieces["spire"]["median_height"] - pieces["dome"]["median_height"])) <= 1
    # Windows are small: a min_piece on a window request would drop real ones.
    assert pieces["window"]["smallest"] < 16
    assert json.loads((tmp_path / "sizes.json").read_text())["renders"] == 300


def test_window_pieces_tell_a_window_grid_from_specks():
    from evaluate_toytown_generator import window_pieces
    from rewriting.toytown.labels import LABEL_INDEX
    from rewriting.toytown.renderer import render_seeds
    _, labels = render_seeds(list(range(40)))
    grid = window_pieces(labels)
    assert grid["images_with_windows"] > 20
    assert grid["share_of_window_pixels_in_window_sized_pieces"] > 0.95
    # The same windows broken into specks: one pixel of every 2x2 cell kept.
    rows, columns = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    specks = labels.clone()
    specks[(labels == LABEL_INDEX["window"]) & ((rows % 2 == 1) | (columns % 2 == 1))] = LABEL_INDEX["building"]
    speckled = window_pieces(specks)
    assert speckled["median_piece_pixels"] <= 2
    assert speckled["share_of_window_pixels_in_window_sized_pieces"] < 0.1


def _train_tiny_regression_generator(make_generator, tmp_path, *options: str) -> tuple[Path, Path]:
    """Save a tiny 64-px generator as start/ and train it 30 steps without a discriminator: (start, out)."""
    from rewriting.models.checkpoints import save_stylegan2
    start = tmp_path / "start"
    start.mkdir()
    save_stylegan2(make_generator(size=64, style_dim=128, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}),
                   start / "generator_ema.pt")
    out = tmp_path / "out"
    command = [sys.executable, "experiments/toytown/train_toytown_generator.py", "--objective", "regression", *options,
               "--resume", str(start), "--out", str(out), "--device", "cpu", "--threads", "1", "--batch", "8",
               "--max-steps", "30", "--minutes", "5", "--lr", "0.01", "--ema-kimg", "0.001", "--log-every", "10"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return start, out


def test_regression_training_draws_each_latents_scene_more_closely(make_generator, tmp_path):
    start, out = _train_tiny_regression_generator(make_generator, tmp_path)
    import toytown_regression_progress
    report = toytown_regression_progress.main([str(start / "generator_ema.pt"), str(out / "generator_ema.pt"),
                                               "--samples", "32", "--out", str(tmp_path / "progress.json"),
                                               "--grid", str(tmp_path / "pairs.png")])
    before, after = (report["checkpoints"][str(path)] for path in (start / "generator_ema.pt", out / "generator_ema.pt"))
    assert after["l1_to_targets"] < 0.8 * before["l1_to_targets"]
    assert after["step"] == 30 and (tmp_path / "pairs.png").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["regression_l1"] for record in log] and all(record["d_loss"] == 0 for record in log)


def test_part_weighted_regression_pulls_the_named_parts_harder():
    from train_toytown_generator import weighted_regression_l1
    from rewriting.toytown.labels import LABEL_INDEX
    fake = torch.zeros(2, 3, 8, 8, requires_grad=True)
    target = torch.rand(2, 3, 8, 8) + 0.5
    labels = torch.full((2, 8, 8), LABEL_INDEX["sky"])
    labels[0, 2:4, 3:6] = LABEL_INDEX["dome"]
    labels[1, 0, 0] = LABEL_INDEX["watermark"]
    parts = torch.tensor([LABEL_INDEX["dome"], LABEL_INDEX["watermark"]])
    weighted_regression_l1(fake, target, labels, parts, 5.0).backward()
    pull = fake.grad.abs().mean(1)
    in_parts = torch.isin(labels, parts)
    assert torch.allclose(pull[in_parts], torch.full_like(pull[in_parts], 5 * pull[~in_parts][0]))
    assert torch.allclose(pull[~in_parts], pull[~in_parts][0].expand_as(pull[~in_parts]))
    # Weight 1 is the plain mean L1, so older runs' --regression-weight keeps its meaning.
    plain = weighted_regression_l1(fake, target, labels, parts, 1.0)
    assert torch.isclose(plain, (fake - target).abs().mean())


def test_pooled_anchor_frees_detail_inside_a_block_but_holds_its_colour():
    from train_toytown_generator import pooled_l1
    anchor_images = torch.rand(2, 3, 16, 16)
    # A zero-mean checkerboard inside every 4 x 4 block: windows drawn where specks were, same colour.
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2 * 0.2 - 0.1
    detailed = anchor_images + checker
    assert pooled_l1(detailed, anchor_images, 4) < 1e-6
    assert pooled_l1(detailed, anchor_images, 1) > 0.09
    recoloured = anchor_images + 0.1
    assert torch.isclose(pooled_l1(recoloured, anchor_images, 4), torch.tensor(0.1))


def test_label_loss_teaches_the_generator_to_draw_what_the_segmenter_reads_as_each_latents_scene(
        make_generator, tmp_path):
    import torch.nn.functional as F
    from rewriting.models.checkpoints import read_checkpoint, stylegan2_from_checkpoint
    from rewriting.toytown.latent_scenes import render_latents
    from rewriting.toytown.segmenter import load_segmenter
    # No pixel regression: only the segmenter's cross-entropy to each latent's scene labels.
    start, out = _train_tiny_regression_generator(make_generator, tmp_path, "--label-weight", "1")
    segmenter = load_segmenter()
    z = torch.randn(32, 128, generator=torch.Generator().manual_seed(7))
    _, scene_labels = render_latents(z, size=64)

    def cross_entropy(path):
        generator = stylegan2_from_checkpoint(read_checkpoint(path)).eval()
        generator.noise_mode = "fixed"
        with torch.no_grad():
            return F.cross_entropy(segmenter(generator(z)), scene_labels).item()

    assert cross_entropy(out / "generator_ema.pt") < 0.7 * cross_entropy(start / "generator_ema.pt")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log and all("label_cross_entropy" in record and "regression_l1" not in record for record in log)


def test_scene_agreement_tells_a_generator_that_follows_its_latents_from_one_that_ignores_them():
    from toytown_regression_progress import scene_agreement
    from rewriting.toytown.latent_scenes import render_latents
    from rewriting.toytown.labels import LABEL_INDEX
    _, scene_labels = render_latents(torch.randn(64, 128, generator=torch.Generator().manual_seed(3)), size=64)
    following = scene_agreement(scene_labels, scene_labels)
    assert all(following[part] == {"shown_when_scene_has_it": 1.0, "shown_when_scene_lacks_it": 0.0}
               for part in ("spire", "dome", "flat_roof", "tree"))
    # Draw the same dome on every image, whatever its scene: shown as often with the dome as without.
    ignoring = scene_labels.clone()
    ignoring[:, 10:20, 20:30] = LABEL_INDEX["dome"]
    assert scene_agreement(scene_labels, ignoring)["dome"] == {"shown_when_scene_has_it": 1.0,
                                                               "shown_when_scene_lacks_it": 1.0}


def wall_scene(window_pixels=(), tree_pixels=()):
    """A 64-px sky with one 24x24 building and a door: (image (3, 64, 64) in [-1, 1], labels (64, 64))."""
    import numpy as np
    from rewriting.toytown.labels import LABEL_INDEX
    labels = np.full((64, 64), LABEL_INDEX["sky"])
    image = np.empty((3, 64, 64), dtype=np.float32)
    image[:] = np.array([-0.2, 0.2, 0.9], dtype=np.float32)[:, None, None]
    labels[20:44, 10:34] = LABEL_INDEX["building"]
    image[:, 20:44, 10:34] = np.array([0.6, 0.2, -0.2], dtype=np.float32)[:, None, None]
    labels[36:44, 19:26] = LABEL_INDEX["door"]
    image[:, 36:44, 19:26] = -0.4
    for y, x in window_pixels:
        labels[y, x] = LABEL_INDEX["window"]
        image[:, y, x] = -0.7
    for y, x in tree_pixels:
        labels[y, x] = LABEL_INDEX["tree"]
        image[:, y, x] = np.array([-0.8, 0.3, -0.8], dtype=np.float32)
    return image, labels


def test_window_painting_draws_whole_windows_in_a_grid_on_the_wall_only():
    import numpy as np
    from scipy import ndimage
    from paint_toytown_windows import WINDOW_SIZE, paint_windows
    from rewriting.toytown.labels import LABEL_INDEX
    speck = (22, 11)  # a one-pixel window the generator drew off the renderer's grid
    trees = [(y, x) for y in range(23, 27) for x in range(27, 31)]  # a crown in front of one grid cell
    image, labels = wall_scene(window_pixels=[speck], tree_pixels=trees)
    target, changed = paint_windows(image, labels)
    moved = (target != image).any(0)
    assert np.array_equal(moved, changed)
    assert not (changed & ~np.isin(labels, [LABEL_INDEX["building"], LABEL_INDEX["window"]])).any()  # sky, door, tree
    assert np.allclose(target[:, speck[0], speck[1]], image[:, 21, 11])  # the speck becomes wall
    windows = changed.copy()
    windows[speck] = False
    pieces, count = ndimage.label(windows)
    sizes = ndimage.sum(windows, pieces, range(1, count + 1))
    assert count == 7 and (sizes == WINDOW_SIZE ** 2).all()  # 3x3 grid, less the tree's cell and the one by the door
    tops = sorted({int(np.flatnonzero(pieces == k).min() // 64) for k in range(1, count + 1)})
    lefts = sorted({int(np.flatnonzero(pieces == k).min() % 64) for k in range(1, count + 1)})
    assert len(tops) == 3 and len(lefts) == 3 and len({b - a for a, b in zip(tops, tops[1:])}) == 1
    door_rows, door_columns = np.nonzero(labels == LABEL_INDEX["door"])
    near_door = np.zeros_like(windows)
    near_door[door_rows.min() - 1:, door_columns.min() - 1:door_columns.max() + 2] = True
    assert not (windows & near_door).any()


def test_window_painting_leaves_a_windowless_building_windowless():
    import numpy as np
    from paint_toytown_windows import paint_windows
    image, labels = wall_scene()
    target, changed = paint_windows(image, labels)
    assert not changed.any() and np.array_equal(target, image)


def test_window_painting_finetune_moves_only_the_layers_after_its_layer(toytown_segmenter, make_generator, tmp_path):
    from rewriting.models.checkpoints import read_checkpoint, save_stylegan2, stylegan2_from_checkpoint
    start = tmp_path / "start.pt"
    save_stylegan2(make_generator(size=64, channels={4: 16, 8: 16, 16: 8, 32: 8, 64: 8}), start)
    out = tmp_path / "out"
    command = [sys.executable, "experiments/toytown/paint_toytown_windows.py", "--checkpoint", str(start), "--out", str(out),
               "--device", "cpu", "--threads", "1", "--batch", "4", "--max-steps", "3", "--log-every", "1",
               "--train-after-layer", "6", "--lr", "0.01", "--ema-kimg", "0.001"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    before = stylegan2_from_checkpoint(read_checkpoint(start))
    after = stylegan2_from_checkpoint(read_checkpoint(out / "generator_ema.pt"))
    z = torch.randn(3, before.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(before.layer_input(z, 7).features, after.layer_input(z, 7).features)
    assert not torch.equal(before(z), after(z))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3]


def test_the_startup_bench_names_each_import_and_what_pulled_it_in():
    from startup import import_chains
    chains = import_chains("import json, torch")
    assert chains["torch"]["seconds"] > 0.05 and chains["torch"]["imported_by"] == []  # imported by the code itself
    assert "torchvision" not in chains  # only what the code imports


def test_the_benches_that_time_fresh_processes_hold_no_torch_themselves():
    """An idle parent holding torch slowed a warm run.py's metric pass (3.6-3.9 s against 3.0-3.2 s): they stay torch-free."""
    bench = ROOT / "experiments" / "bench"
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import run_time, startup; "
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, str(bench)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    from child_facts import torch_facts
    facts = torch_facts(threads=1)
    assert facts["torch"] == torch.__version__
    assert facts["matmul_flops_per_s"] > 1e8  # any CPU multiplies 2048x2048 matrices faster than this
