"""Parameters with logical axis names, placed on devices by tx_jax.parallel's rules."""

from flax import nnx

from tx_jax.models import matmul

# Logical axis names used in parameter annotations; tx_jax.parallel maps them to mesh axes.
EMBED = "embed"  # model width (d_model)
VOCAB = "vocab"
HEADS = "heads"  # heads x head_dim, flattened
KV_HEADS = "kv_heads"
MLP = "mlp"


def partitioned(init, axes):
  """`init` annotated with logical axes; placed on devices later by tx_jax.parallel, not eagerly."""
  return nnx.with_partitioning(init, axes, eager_sharding=False)


def partition_metadata(axes):
  """Variable metadata naming logical axes, for modules that take metadata instead of initialisers."""
  return {"out_sharding": axes, "eager_sharding": False}


def dense(cfg, n_in: int, n_out: int, axes, rngs: nnx.Rngs) -> nnx.Linear:
  """A Linear layer (Xavier-uniform kernel, zero bias) whose kernel has logical `axes`; bf16 matmuls accumulate in f32."""
  return matmul.Dense(
    n_in, n_out, use_bias=cfg.use_bias, dtype=cfg.compute_dtype, rngs=rngs,
    kernel_init=partitioned(nnx.initializers.xavier_uniform(), axes),
    bias_init=partitioned(nnx.initializers.zeros_init(), axes[1:]))
