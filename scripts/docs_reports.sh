#!/usr/bin/env bash
# Prints every report of docs/results.md that reads the committed JSON (no
# training): rerun after a change to check that the page still holds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
$PY -m tf_sharpness.cli sweep_report --json=docs/results/sharpness_lr_3seeds.json --loss_levels=2.0,1.5,1.25 --windows=1:13,14:20,8:20 --measurements
$PY -m tf_sharpness.cli sweep_report --json=docs/results/sharpness_lr_3seeds_150ep.json --loss_levels=2.0,1.5,1.25 --windows=90:150 --measurements
$PY -m tf_sharpness.cli sweep_report --json=docs/results/sharpness_lr0.001_3seeds_400ep.json --loss_levels=1.5,1.0,0.5 --windows=100:150,150:200,200:250,250:300,300:350,350:400
$PY -m tf_sharpness.cli sweep_report --json=docs/results/sharpness_batch_3seeds.json --in_steps --loss_levels=2.0,1.5,1.0,0.5,0.3 --windows=234:1248,1404:1560 --measurements
$PY -m tf_sharpness.cli report docs/results/sharpness_batch_3seeds_source_order.json
$PY -m tf_sharpness.cli report --from_json=docs/results/resnet32.json --windows=6:20,15:20
$PY -m tf_sharpness.cli nsgd --from_json=docs/results/nsgd_equal_loss.json
$PY -m tf_sharpness.cli report docs/results/nsgd_equal_loss_source_order.json
$PY -m tf_sharpness.cli eos_report --json=docs/results/eos.json --at_steps=50,100,2000 --windows=100:2000
$PY -m tf_sharpness.cli eos_report --json=docs/results/eos_long.json --at_steps=500,2000,2500,4000,8000 --windows=6000:8000
$PY -m tf_sharpness.cli eos_report --json=docs/results/eos_momentum.json --at_steps=500,2000 --windows=600:2000
$PY -m tf_sharpness.cli eos_report --json=docs/results/eos_momentum_beta09.json --at_steps=100,2000,4000 --windows=3000:4000
$PY -m tf_sharpness.cli phase --runs_table=docs/results/phase_d8_paper_init_runs.jsonl
$PY -m tf_sharpness.cli phase --runs_table=docs/results/phase_d8_paper_init_runs_source_order.jsonl
$PY -m tf_sharpness.cli step_length --from_json=docs/results/step_length.json
$PY -m tf_sharpness.cli nsgd --from_json=docs/results/nsgd_sam.json
$PY -m tf_sharpness.cli report docs/results/nsgd_sam_source_order.json
$PY -m tf_sharpness.cli nsgd --from_json=docs/results/nsgd_convergence.json --train_size=1000 --batch_size=128 --target_loss=0.02 --range_from=0
$PY -m tf_sharpness.cli phase --runs_table=docs/results/phase_d2_runs.jsonl
$PY -m tf_sharpness.cli report docs/results/phase_d2_runs_source_order.jsonl
$PY -m tf_sharpness.cli nsgd --from_json=docs/results/nsgd_seeds8.json --paired_losses=1.5 "--paired_with=SGD,SGD eta=0.005" --range_from=0
$PY -m tf_sharpness.cli report docs/results/phase_depth_runs.jsonl
$PY -m tf_sharpness.cli report docs/results/phase_depth_runs_source_order.jsonl
$PY -m tf_sharpness.cli report docs/results/walk.json
$PY -m tf_sharpness.cli report docs/results/edge_quantities.json
$PY -m tf_sharpness.cli report docs/results/edge_quantities_full_data.json
$PY -m tf_sharpness.cli report docs/results/self_stabilization.json
$PY -m tf_sharpness.cli report docs/results/walk_lr_batch.json
$PY -m tf_sharpness.cli report docs/results/walk_lr_batch_source_order.json
$PY -m tf_sharpness.cli phase --runs_table=docs/results/phase_horizon_runs.jsonl --x_values=1,1.05,1.1,1.15,1.2
$PY -m tf_sharpness.cli phase --runs_table=docs/results/phase_horizon_runs.jsonl --x_values=1,1.05,1.1,1.15,1.2 --horizon=10
