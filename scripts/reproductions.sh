#!/usr/bin/env bash
# The reproductions of docs/results.md, in the order they were run: every
# command is resumable, so rerunning this script continues where it stopped
# (finished runs are reused, unfinished ones continue from their last
# checkpoint).  More than a day on 2 CPU cores; pass the names of the parts to
# run only those, e.g.  bash scripts/reproductions.sh phase eos
#
#   DATA=path/to/cifar10-jpeg.tar.gz  (default ../shared/data/cifar10-jpeg.tar.gz)
#   OUT=folder for the runs           (default runs/reproductions)
#
# The order of the training examples (--train_order): the parts whose
# committed results no first-N subset touched run in the order they were
# made in (source), so that they reproduce them and add to them; the parts
# behind the rows docs/results.md marks with its erratum (training loss on
# the first 2,000, landscape on the first 1,280, phase Hessian on the first
# 1,024 of a class-by-class training set) run in the default shuffled order:
# rerunning them corrects those results instead of repeating them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}
OUT=${OUT:-runs/reproductions}
all_parts=(phase eos nsgd nsgd_sam nsgd_convergence step_length sharpness resnet32 sharpness_long sharpness_longer sharpness_seeds
           phase_seeds phase_2048 phase_2048_seeds phase_wide phase_depth nsgd_seeds8
           nsgd_seed7 edge_quantities walk_lr_batch self_stabilization phase_horizon)
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=("${all_parts[@]}")

# eta = 0.001 with seeds $1 trained on to $2 epochs in the sweep's folder (a
# longer part continues the same runs; a shorter one reads the start of a
# longer run); summary, plot and JSON named lr0.001_$3.
eta_0001() {
  $PY -m tf_sharpness.cli sweep --dataset="$DATA" --seeds="$1" \
      --learning_rates=0.001 --lr_epochs="$2" --batch_sizes= --loss_threshold=1.5 \
      --out="$OUT/sharpness" --plot="$OUT/sharpness/lr0.001_$3.png" \
      --json="$OUT/sharpness/lr0.001_$3.json"
}

# The depth-8 phase diagram (paper's init) at widths $1 and seeds $2, every
# c in one runs.jsonl (copy docs/results/phase_d8_paper_init_runs.jsonl
# there to reuse the committed c values); phase.csv and the plot cover the
# widths and seeds of the last part run.
phase_d8() {
  $PY -m tf_sharpness.cli phase --dataset="$DATA" --depths=7 --widths="$1" --seeds="$2" \
      --train_size=4096 --hessian_size=1024 --coarse_dx=0.5 --dx=0.1 --workers=1 \
      --out="$OUT/phase_d8"
}

for part in "${parts[@]}"; do
  case "$part" in
    phase)  # Kalra & Barkeshli: d = 8 (7 hidden layers), the paper's init
      phase_d8 256,512,1024 0 ;;
    eos)  # heavy-ball beta = 0.9 at two more learning rates (eta = 0.01 is in docs/results/eos_long.json): does the plateau follow 2/eta?
      $PY -m tf_sharpness.cli eos --dataset="$DATA" --learning_rates= \
          --momentum_runs=0.008:0.9,0.0125:0.9 --steps=4000 --spectrum_every=100 \
          --train_order=source --out="$OUT/eos_momentum" --plot="$OUT/eos_momentum/eos.png" ;;
    nsgd)  # Table 1 at equal training loss, 3 seeds (seed by seed: finished runs are reused)
      for seeds in 0 0,1 0,1,2; do
        $PY -m tf_sharpness.cli nsgd --dataset="$DATA" --gammas=0.01,0.1,5 --seeds=$seeds \
            --target_loss=1.5 --max_steps=3000 --hessian_fraction=0.025 \
            --out="$OUT/nsgd_table"
      done ;;
    nsgd_convergence)  # Table 1 trained to convergence (training loss 0.02) on 1,000 images, 3 seeds (seed by seed)
      for seeds in 0 0,1 0,1,2; do
        $PY -m tf_sharpness.cli nsgd --dataset="$DATA" --gammas=0.1,1,5 --seeds=$seeds \
            --train_size=1000 --learning_rate=0.02 --target_loss=0.02 --max_steps=4000 \
            --hessian_fraction=0.1 --range_from=0 --train_order=source \
            --out="$OUT/nsgd_convergence"
      done ;;
    step_length)  # Is the SGD step too large along e1? SGD at eta 0.01, 3 seeds, 20 epochs of 10,000
      $PY -m tf_sharpness.cli step_length --dataset="$DATA" --learning_rates=0.01 --seeds=0,1,2 \
          --train_order=source --out="$OUT/step_length" ;;
    nsgd_sam)  # NSGD gamma 0.1 and 5, SGD and SAM at equal training loss, 3 seeds, with sharpness measures
      $PY -m tf_sharpness.cli nsgd --dataset="$DATA" --gammas=0.1,5 --sam_rhos=0.05 --seeds=0,1,2 \
          --target_loss=1.5 --max_steps=3000 --hessian_fraction=0.025 \
          --sharpness_measures=worst_l2,adaptive_l2,avg --out="$OUT/nsgd_sam" ;;
    sharpness)  # Fig. 1 with 3 seeds; eta = 0.001 for 150 epochs (sharpness_long continues seed 0)
      $PY -m tf_sharpness.cli sweep --dataset="$DATA" --seeds=0,1,2 \
          --learning_rates=0.1,0.01,0.001 --lr_epochs=20,20,150 --batch_sizes=128,1024 \
          --batch_sweep_lr=0.05 --batch_sweep_steps=1560 --loss_threshold=1.5 \
          --loss_levels=2.0,1.5,1.0,0.5,0.3 \
          --out="$OUT/sharpness" --plot="$OUT/sharpness/sharpness.png" ;;
    sharpness_long)  # eta = 0.001, seed 0, continued until its peak (the 3-seed sweep reads its first 150 epochs)
      eta_0001 0 400 long ;;
    sharpness_longer)  # the same run on to 480 epochs: after reaching 2/eta at epoch 385, does lambda_max turn down?
      eta_0001 0 480 longer ;;
    sharpness_seeds)  # seeds 1 and 2 to 400 epochs beside seed 0 (its first 400 epochs are reused)
      eta_0001 0,1,2 400 seeds ;;
    resnet32)  # one run of the paper's ResNet-32 (no BatchNorm, He-normal variance / 15)
      logdir="$OUT/resnet32"
      if grep -qs '"final": true' "$logdir/metrics.jsonl"; then
        echo "resnet32: finished in $logdir"; continue
      fi
      resume="--overwrite"; [ -d "$logdir/checkpoints" ] && resume="--resume"
      $PY -m tf_sharpness.cli train --flagfile=scripts/flags/resnet32_cifar10.cfg --dataset="$DATA" \
          --validation_size=0 --train_size=10000 --steps=1560 --spectrum_every=78 \
          --spectrum_k=1 --hessian_fraction=0.025 --eval_every=78 --eval_size=2000 \
          --checkpoint_every=78 --log_every=26 --logdir="$logdir" $resume ;;
    phase_seeds)  # the same at seeds 1 and 2 (seed 0's runs are reused): the spread of the critical values
      phase_d8 256,512,1024 0,1,2 ;;
    phase_2048)  # the paper's widest network, seed 0
      phase_d8 2048 0 ;;
    phase_2048_seeds)  # the same at seeds 1 and 2 (not run yet: ~90 min per seed on 2 vCPUs)
      phase_d8 2048 0,1,2 ;;
    phase_wide)  # the small-d/w limit (c_loss -> 2?): d = 2 (1 hidden layer) at widths 512 and 2,048, seed 0
      $PY -m tf_sharpness.cli phase --dataset="$DATA" --depths=1 --widths=512,2048 --seeds=0 \
          --train_size=4096 --hessian_size=1024 --coarse_dx=0.5 --dx=0.1 --workers=1 \
          --out="$OUT/phase_d2" ;;
    phase_depth)  # is d/w the variable? d = 2, 4, 8 and 16 at width 512, seeds 0-2 (issue 40), in
      # the shuffled order (docs/results/phase_depth_runs.jsonl; the first runs, class by class,
      # docs/results/phase_depth_runs_source_order.jsonl, are reproduced with
      # --train_order=source --depths=1,3,15 after copying that file to runs.jsonl)
      $PY -m tf_sharpness.cli phase --dataset="$DATA" --depths=1,3,7,15 --widths=512 --seeds=0,1,2 \
          --train_size=4096 --hessian_size=1024 --coarse_dx=0.5 --dx=0.1 --workers=1 \
          --out="$OUT/phase_depth" ;;
    nsgd_seeds8)  # issue 40, experiment 1: the convergence protocol with 8 seeds, NSGD gamma 0.1
      # and 0.01 beside SGD at eta 0.02 and the matched-sharpness control, SGD at eta 0.005;
      # seed by seed (every optimizer of a seed before the next seed; finished runs are reused)
      seeds=0
      for s in 1 2 3 4 5 6 7 8; do
        $PY -m tf_sharpness.cli nsgd --dataset="$DATA" --gammas=0.1,0.01 --sgd_learning_rates=0.005 \
            --seeds=$seeds --train_size=1000 --learning_rate=0.02 --target_loss=0.02 \
            --max_steps=8000 --hessian_fraction=0.1 --range_from=0 --train_order=source \
            --out="$OUT/nsgd_seeds8"
        seeds="$seeds,$s"
      done ;;
    nsgd_seed7)  # seed 7 of nsgd_seeds8 added to the committed seeds 0-6 (their run folders were not kept)
      $PY -m tf_sharpness.cli nsgd --dataset="$DATA" --gammas=0.1,0.01 --sgd_learning_rates=0.005 \
          --seeds=7 --train_size=1000 --learning_rate=0.02 --target_loss=0.02 \
          --max_steps=8000 --hessian_fraction=0.1 --range_from=0 --out="$OUT/nsgd_seeds8" \
          --train_order=source --add_to=docs/results/nsgd_seeds8.json --paired_losses=1.5 "--paired_with=SGD,SGD eta=0.005" ;;
    edge_quantities)  # issue 39: which curvature sits at 2/eta under SGD, SimpleCNN, 2 learning rates x 3 seeds
      # the source order of its runs (no reported quantity uses a first-N subset), then
      # lambda_max on all 5,000 training images at each run's last checkpoint
      $PY -m tf_sharpness.cli edge_quantities --dataset="$DATA" --learning_rates=0.01,0.05 --seeds=0,1,2 \
          --train_order=source --out="$OUT/edge_quantities"
      runs=$(printf "$OUT/edge_quantities/lr%s_seed%s," 0.01 0 0.01 1 0.01 2 0.05 0 0.05 1 0.05 2)
      $PY -m tf_sharpness.cli measure --dataset="$DATA" --logdirs="${runs%,}" --tol=1e-3 \
          --json="$OUT/edge_quantities/full_data.json" ;;
    walk_lr_batch)  # issue 40, experiment 3: Xing et al.'s learning rate x batch size, 3 seeds, an early and a late window
      $PY -m tf_sharpness.cli walk --dataset="$DATA" --learning_rates=0.02,0.1 --batch_sizes=32,512 \
          --seeds=0,1,2 --walk_steps=100:160,1000:1060 --out="$OUT/walk_lr_batch" ;;
    self_stabilization)  # issue 39: does grad lambda_1 align with the loss gradient at the EoS? eos.cfg, 2 learning rates x 3 seeds
      $PY -m tf_sharpness.cli self_stabilization --dataset="$DATA" --learning_rates=0.02,0.005 \
          --seeds=0,1,2 --steps=1000 --every=5 --out="$OUT/self_stabilization" ;;
    phase_horizon)  # issue 40, experiment 2: d = 2 at width 2,048, c = 2.00 ... 2.30 for 30 steps, seeds 0-2: a late catapult?
      # (the same runs read at step 10: tf-sharpness phase --runs_table=... --x_values=... --horizon=10)
      $PY -m tf_sharpness.cli phase --dataset="$DATA" --depths=1 --widths=2048 --seeds=0,1,2 \
          --train_size=4096 --hessian_size=1024 --steps=30 --x_values=1,1.05,1.1,1.15,1.2 \
          --workers=1 --out="$OUT/phase_horizon" ;;
    *) echo "unknown part $part (one of: ${all_parts[*]})" >&2; exit 2 ;;
  esac
done
