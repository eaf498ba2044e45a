"""The non-padding tokens of a batch side by side, so that position-wise layers skip the padding.

A batch of rows [batch, len] padded with segment id 0 spends the padding's share of every
projection, feed-forward, norm and output-layer product on nothing. A `TokenLayout` gathers the
real tokens of each group of rows (one group per device that holds rows of the batch, so no token
leaves its device) into `capacity` slots each, [groups * capacity, ...]; the position-wise layers run
there, and attention, which needs rows, gets them back with `pad`. Slots beyond a group's tokens
are zeros and carry weight 0 in the loss. `capacity` is static: it must hold every group's tokens.
`fits` says whether it does, on the host (tx_jax/training/padding_choice.py then runs the padded
step for a batch that does not fit) or on the device (for a `jax.lax.cond` onto the padded computation).
Written by hand: no JAX library offers a static-capacity unpadding that keeps the device groups.
"""

import dataclasses
import fractions
import functools
import operator

import jax
import jax.numpy as jnp


def tokens_per_group(segments, groups: int):
  """Real tokens (segment id != 0) in each of `groups` groups of rows of segments [rows, len] -> [groups]."""
  return (segments.reshape(groups, -1) != 0).sum(axis=1)  # methods, not jnp: a numpy batch is counted on the host


def capacity_for(rows: int, length: int, groups: int, fraction: float) -> int:
  """Slots a group keeps: `fraction` of its rows * length, rounded up to a multiple of 8."""
  slots = rows // groups * length
  return min(slots, -(-int(round(fraction * slots)) // 8) * 8)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Where each group's real tokens sit in its rows: index [groups, capacity] into the group's rows * len slots."""

  index: jax.Array  # int32 [groups, capacity]; `slots` (one past the end) marks an empty slot
  rows: int = dataclasses.field(metadata=dict(static=True))
  length: int = dataclasses.field(metadata=dict(static=True))

  @classmethod
  def of(cls, segments, groups: int, capacity: int) -> "TokenLayout":
    """The layout of the non-padding tokens (segment id != 0) of segments [rows, len] in `groups` groups of rows."""
    rows, length = segments.shape
    slots = rows // groups * length
    real = segments.reshape(groups, slots) != 0
    index = jax.vmap(lambda r: jnp.nonzero(r, size=capacity, fill_value=slots)[0])(real)
    return cls(index.astype(jnp.int32), rows, length)

  @staticmethod
  def fits(segments, groups: int, capacity: int):
    """Whether every group of segments [rows, len] has at most `capacity` real tokens (numpy or jax bool scalar)."""
    return (tokens_per_group(segments, groups) <= capacity).all()

  @property
  def groups(self) -> int:
    """Groups of rows (one per device holding rows of the batch), each with its own `capacity` slots."""
    return self.index.shape[0]

  def unpad(self, x):
    """Rows x [rows or 1, len, ...] -> tokens [groups * capacity, ...] (empty slots zero).

    The tokens have one leading axis, not [groups, capacity]: XLA:CPU reduces the last axis of a
    [1, n, d] array ~10x slower than of [n, d] (LayerNorm statistics; experiments/README.md).
    """
    rest = x.shape[2:]
    x = jnp.broadcast_to(x, (self.rows, self.length, *rest))
    x = x.reshape(self.groups, self.rows // self.groups * self.length, *rest)
    tokens = jax.vmap(lambda g, i: g.at[i].get(mode="fill", fill_value=0))(x, self.index)
    return tokens.reshape(-1, *rest)

  def pad(self, tokens):
    """Tokens [groups * capacity, ...] -> rows [rows, len, ...], zeros at the padding."""
    slots = self.rows // self.groups * self.length
    rest = tokens.shape[1:]
    tokens = tokens.reshape(self.groups, -1, *rest)
    rows = jax.vmap(lambda t, i: jnp.zeros((slots, *rest), t.dtype).at[i].set(t, mode="drop"))(tokens, self.index)
    return rows.reshape(self.rows, self.length, *rest)


def all_fit(segments: dict, groups: int, fraction: float):
  """Whether each of segments {name: [rows, len]} (numpy or jax) fits `fraction` of its slots in every group."""
  return functools.reduce(operator.and_, [TokenLayout.fits(s, groups, capacity_for(*s.shape, groups, fraction))
                                          for s in segments.values()])


def fullest_share(segments: dict, groups: int) -> fractions.Fraction:
  """The largest share of its slots that any group of rows of segments {name: [rows, len]} (numpy) holds, exactly."""
  return max(fractions.Fraction(int(tokens_per_group(s, groups).max()), s.size // groups) for s in segments.values())


def where_it_fits(token_capacity, segments: dict, compute) -> dict:
  """compute(layouts {name: TokenLayout}) where `segments` fit the capacity, else compute(None); + over_capacity.

  token_capacity = (groups, fraction, fits): `fits` is the host's answer for this batch
  (tx_jax/training/padding_choice.py), or None to decide on the device with a `jax.lax.cond`
  (both computations compiled into the step). A batch over the capacity gets the padded
  computation, so no token is dropped; `over_capacity` (1 or 0) is logged as train/over_capacity.
  """
  groups, fraction, fits = token_capacity

  def unpadded(_):
    return compute({k: TokenLayout.of(s, groups, capacity_for(*s.shape, groups, fraction))
                    for k, s in segments.items()})

  def padded(_):
    return compute(None)

  if fits is None:
    fits = all_fit(segments, groups, fraction)
    sums = jax.lax.cond(fits, unpadded, padded, None)
  else:
    sums = unpadded(None) if fits else padded(None)
  return dict(sums, over_capacity=1.0 - jnp.asarray(fits, jnp.float32))
