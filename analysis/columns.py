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
# The upsampled-fraction key: the first coordinate whose name contains this word.
UPSAMPLE_WORD = "upsample"

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

# Derived per-run metrics (analysis.derived); lower is better for all three heatmap metrics.
IN_DOMAIN = "in_domain"  # loss on the domain named by mixture.domain
FORGETTING = "forgetting"  # general loss minus the matching baseline's
TARGET_LOSS = "target_loss"  # post-training target-domain loss
IN_DOMAIN_GAIN = "in_domain_gain"  # baseline in-domain loss minus the run's
GENERAL_LOSS = "general_loss"
HEATMAP_METRICS = (IN_DOMAIN, FORGETTING, TARGET_LOSS)
METRIC_LABELS = {
    IN_DOMAIN: "in-domain loss (nats/token)",
    FORGETTING: "forgetting: general loss − baseline (nats/token)",
    TARGET_LOSS: "post-training target loss (nats/token)",
    IN_DOMAIN_GAIN: "in-domain gain over baseline (nats/token)",
    GENERAL_LOSS: "general loss (nats/token)",
}
SHORT_LABELS = {IN_DOMAIN: "in-domain loss", FORGETTING: "forgetting (Δ general loss)",
                TARGET_LOSS: "target loss", IN_DOMAIN_GAIN: "in-domain gain", GENERAL_LOSS: "general loss"}


def final(domain: str) -> str:
    """Column of the final loss on ``domain``."""
    return FINAL_PREFIX + domain


def upsample_column(columns) -> str | None:
    """The coordinate holding the upsampled fraction, if the sweep has one."""
    found = [c for c in columns if UPSAMPLE_WORD in c and not c.startswith(FINAL_PREFIX)]
    return sorted(found)[0] if found else None
