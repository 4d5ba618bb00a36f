"""Names of the columns the analysis reads: sweep coordinates (as written in summary.json "coords"),
run statuses and the derived metric columns. One place, so a renamed config key is a one-line change."""
from __future__ import annotations

# Sweep coordinates (docs/results.md, summary.json "coords").
KIND = "mixture.kind"
DOMAIN = "mixture.domain"
INTRODUCE_AT = "mixture.introduce_at"
INTRODUCE_TOKENS = "mixture.introduce_tokens"
WEIGHT = "mixture.weight"
SEED = "train.seed"
SIZE = "model.size"
LR = "optim.lr"
WARMUP = "optim.warmup"
TRAIN_TOKENS = "train.tokens"
POSTTRAIN = "posttrain.enabled"
POSTTRAIN_DOMAIN = "posttrain.domain"
POSTTRAIN_LR = "posttrain.lr"
POSTTRAIN_SEED = "posttrain.seed"
POSTTRAIN_AFTER = "posttrain.after"
UNTIL = "mixture.until"
UPSAMPLE_FRACTION = "mixture.upsample_fraction"
BOUNDARY = "optim.boundary"
REWARM_LR = "optim.rewarm_lr"
REWARM_WARMUP = "optim.rewarm_warmup"
INIT_FROM = "train.init_from"
# Dict-valued mixture fields are flattened into one coordinate per domain: mixture.base_weights.code.
BASE_WEIGHTS = "mixture.base_weights."
UPSAMPLE_WEIGHTS = "mixture.upsample_weights."
WEIGHT_DICTS = (BASE_WEIGHTS, UPSAMPLE_WEIGHTS)
MIXTURE = "mixture."
# What a run does at its mixture boundary (the LR policy there): like the mixture axes, part of the
# intervention, so a no-introduction baseline (which has no boundary) never carries it.
BOUNDARY_AXES = (BOUNDARY, REWARM_LR, REWARM_WARMUP)

# mixture.kind values with a meaning for the analysis.
KIND_NONE = "none"  # the no-introduction baseline
KIND_CONTINUED = "continued"  # continued pretraining on the domain after the main run
KIND_UPSAMPLE = "upsample_end"  # domain upsampled at the end of training
# Kinds that never go on a time x weight heatmap (every other kind with both axes does).
NOT_ON_HEATMAP = (KIND_NONE, KIND_CONTINUED, KIND_UPSAMPLE)

# Domains with a fixed role.
GENERAL = "general"
TARGET = "target"

# Run statuses: the contract's four, plus "missing" for an expected grid cell without a run.
DONE, RUNNING, FAILED, REQUEUED, MISSING = "done", "running", "failed", "requeued", "missing"

# Columns the loader adds next to the coordinates.
RUN_ID = "run_id"
SWEEP = "sweep"
STATUS = "status"
REASON = "reason"
FINAL_PREFIX = "final."
DATA_PREFIX = "data."

# Derived per-run metrics (analysis.derived); lower is better for all three heatmap metrics.
IN_DOMAIN = "in_domain"  # loss on the domain named by mixture.domain
FORGETTING = "forgetting"  # general loss minus the matching baseline's
TARGET_LOSS = "target_loss"  # post-training target-domain loss
IN_DOMAIN_GAIN = "in_domain_gain"  # baseline in-domain loss minus the run's
TARGET_GAIN = "target_gain"  # baseline post-training target loss minus the run's
GENERAL_LOSS = "general_loss"
TRADEOFF = "tradeoff"  # target loss + lambda x forgetting (midsweep-analyze --metric tradeoff:LAMBDA)
N_BASELINE = "n_baseline"  # done baseline runs matched (0: no matched baseline)
NO_BASELINE = "no matched baseline"
HEATMAP_METRICS = (IN_DOMAIN, FORGETTING, TARGET_LOSS)
# The unit of every loss: the mean next-token cross-entropy in nats per token of the run's tokenizer (with the
# byte-level tokenizer of the tiny profile a token is a byte, so this is also nats per byte).
LOSS_UNIT = "nats/token"
METRIC_LABELS = {
    IN_DOMAIN: f"in-domain loss ({LOSS_UNIT})",
    FORGETTING: f"forgetting: general loss − baseline ({LOSS_UNIT})",
    TARGET_LOSS: f"post-training target loss ({LOSS_UNIT})",
    IN_DOMAIN_GAIN: f"in-domain gain over baseline ({LOSS_UNIT})",
    TARGET_GAIN: f"post-training target gain over baseline ({LOSS_UNIT})",
    GENERAL_LOSS: f"general loss ({LOSS_UNIT})",
    TRADEOFF: f"trade-off: post-training target loss + λ × forgetting ({LOSS_UNIT})",
}
SHORT_LABELS = {IN_DOMAIN: f"in-domain loss ({LOSS_UNIT})", FORGETTING: f"forgetting: Δ general loss ({LOSS_UNIT})",
                TARGET_LOSS: f"target loss ({LOSS_UNIT})", IN_DOMAIN_GAIN: f"in-domain gain ({LOSS_UNIT})",
                TARGET_GAIN: f"target gain ({LOSS_UNIT})", GENERAL_LOSS: f"general loss ({LOSS_UNIT})",
                TRADEOFF: f"target loss + λ × forgetting ({LOSS_UNIT})"}
# Why a done run has no value of a metric (shown in its heatmap cell).
NO_VALUE = {FORGETTING: NO_BASELINE, TARGET_LOSS: "no post-training", IN_DOMAIN: "no in-domain loss",
            TRADEOFF: "no post-training or no matched baseline"}
# Axis labels with their units.
TIME_LABEL = "introduction time (fraction of training)"
WEIGHT_LABEL = "mixture weight (fraction of samples)"
TOKENS_LABEL = "training tokens (tokens)"


def final(domain: str) -> str:
    """Column of the final loss on ``domain``."""
    return FINAL_PREFIX + domain


def data(domain: str) -> str:
    """Column of the digest of the data a run read for ``domain`` (summary.json ``data``)."""
    return DATA_PREFIX + domain


def is_missing(value) -> bool:
    """An absent coordinate and a null one are the same: no value (None, NaN or pandas' NA)."""
    try:
        return value is None or bool(value != value)
    except TypeError:  # pandas.NA compares to NA
        return True
