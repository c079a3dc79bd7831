"""Histogram gradient-boosted trees: the math, as small pure functions over arrays.

The federated model (``hist_gbdt``) grows every tree on the server from the
sites' summed histograms; the same functions grow it from one array of
pooled rows. With the same bin edges the two are the same algorithm on the
same sums, so the trees are equal (tests/test_trees.py: 1e-9 in predictions).

- **Bins.** Every feature is cut at edges agreed before training
  (``merge_sketches`` of the sites' quantile sketches); a value goes to the
  bin ``searchsorted(edges, x, side="right")``, a missing value (NaN) to the
  extra last bin, so a split can send missing values either way.
- **Gradients.** Binary log loss (one tree per round, on the logit) or the
  multiclass softmax (one tree per class per round, XGBoost's scheme):
  g = p − y, h = max(p (1 − p), 1e-16).
- **Histograms.** For the nodes of a level (the *frontier*: one entry per
  (tree, node)), the sums of g and h of the rows in the node, per feature
  and bin: ``(entries, features, bins + 1)`` each. Sums add up: the server
  adds the sites' arrays.
- **Splits.** For each entry, feature and threshold, with missing values
  sent left or right: gain = ½ [G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ,
  both sides with at least ``min_child_weight`` of hessian; the best split
  if its gain is positive, else the node is a leaf. Leaves take
  −η G/(H+λ).
- **Trees** are arrays in heap order (node i has children 2i+1, 2i+2) of
  fixed size 2^(depth+1) − 1: ``feature`` (−1 at a leaf), ``threshold``
  (the last bin of the left side), ``missing_left`` and ``value`` (the leaf
  value, 0 inside): fixed-size arrays that travel as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

SKETCH_POINTS = 256  # quantiles a site sends per feature to agree on the bins


# ---------------------------------------------------------------------- bins
def quantile_sketch(X: np.ndarray, points: int = SKETCH_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """One site's sketch of each feature: ``points`` quantiles of its values (missing ignored) and their count.

    Returns (sketch (features, points), counts (features,)); a feature with no value has a sketch of NaN.
    """
    X = np.asarray(X, dtype=np.float64)
    qs = np.linspace(0.0, 1.0, points)
    sketch = np.full((X.shape[1], points), np.nan)
    counts = np.zeros(X.shape[1])
    for f in range(X.shape[1]):
        values = X[:, f][~np.isnan(X[:, f])]
        counts[f] = len(values)
        if len(values):
            sketch[f] = np.quantile(values, qs, method="inverted_cdf")  # values of the data: a few stay a few
    return sketch, counts


def merge_sketches(sketches: list[tuple[np.ndarray, np.ndarray]], max_bins: int) -> list[np.ndarray]:
    """The bin edges of every feature from the sites' sketches: the quantiles of the mixture of their
    distributions (each site weighted by its count of values), at most ``max_bins`` bins per feature.

    Each site's sketch is its quantile function; the pooled distribution's
    CDF at a point is the count-weighted mean of the sites' CDFs, which the
    sketches give by interpolation. Edges are the pooled CDF's inverse at
    1/max_bins, 2/max_bins, ..., without repeats (a feature with few values
    gets fewer bins). Exact for sites whose sketch holds all their values.
    """
    n_features = sketches[0][0].shape[0]
    qs = np.linspace(0.0, 1.0, sketches[0][0].shape[1])
    edges = []
    for f in range(n_features):
        parts = [(s[f], c[f]) for s, c in sketches if c[f] > 0 and not np.isnan(s[f]).any()]
        if not parts:
            edges.append(np.zeros(0))
            continue
        grid = np.unique(np.concatenate([p for p, _ in parts]))
        total = sum(c for _, c in parts)
        cdf = sum(c * _cdf(p, qs, grid) for p, c in parts) / total
        if len(grid) <= max_bins:  # few distinct values: a bin between each two
            cut = (grid[:-1] + grid[1:]) / 2
        else:
            cut = np.interp(np.arange(1, max_bins) / max_bins, cdf, grid)
        edges.append(np.unique(cut))
    return edges


def _cdf(quantiles: np.ndarray, qs: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A site's CDF at ``at`` from its quantile function (quantiles at the levels ``qs``)."""
    unique, index = np.unique(quantiles, return_index=True)
    last = np.searchsorted(quantiles, unique, side="right") - 1  # a repeated value holds the mass up to its last level
    return np.interp(at, unique, qs[last], left=0.0, right=1.0)


def bin_rows(X: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """(rows, features) bin indices: ``searchsorted(edges, x, "right")``; a missing value: ``n_bins`` (the last)."""
    X = np.asarray(X, dtype=np.float64)
    n_bins = max_bin_count(edges)
    out = np.empty(X.shape, dtype=np.int32)
    for f, e in enumerate(edges):
        column = X[:, f]
        out[:, f] = np.searchsorted(e, column, side="right")
        out[np.isnan(column), f] = n_bins
    return out


def max_bin_count(edges: list[np.ndarray]) -> int:
    """Bins per feature in the histograms (the most any feature has); missing values take one more."""
    return max((len(e) + 1 for e in edges), default=1)


def edges_array(edges: list[np.ndarray]) -> np.ndarray:
    """Edges as one (features, max edges) array, NaN-padded: what travels and what a checkpoint keeps."""
    width = max((len(e) for e in edges), default=0)
    out = np.full((len(edges), max(width, 1)), np.nan)
    for f, e in enumerate(edges):
        out[f, :len(e)] = e
    return out


def edges_list(array: np.ndarray) -> list[np.ndarray]:
    return [row[~np.isnan(row)] for row in np.asarray(array, dtype=np.float64)]


# ---------------------------------------------------------------------- gradients
def n_outputs(n_classes: int) -> int:
    """Trees per round: one for two classes (the logit), one per class above."""
    return 1 if n_classes == 2 else n_classes


def gradients(raw: np.ndarray, y_index: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(g, h), each (rows, outputs): the log loss's first and second derivatives at the raw scores."""
    if n_classes == 2:
        p = expit(raw[:, 0])
        y = (y_index == 1).astype(np.float64)
        return (p - y)[:, None], np.maximum(p * (1 - p), 1e-16)[:, None]
    p = softmax(raw, axis=1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y_index)), y_index] = 1.0
    return p - onehot, np.maximum(p * (1 - p), 1e-16)


# ---------------------------------------------------------------------- what a server may ask
def check_step(arrays: dict[str, np.ndarray], n_features: int, n_out: int, max_depth: int, max_bins: int) -> None:
    """Raise ValueError unless a level step's arrays are ones an honest server sends for this task: what a site
    computes and allocates is bounded by them (histograms of at most ``n_out`` x 2^(depth-1) nodes)."""
    needed = {"edges", "frontier_tree", "frontier_node", *FOREST_NAMES, *("round_" + n for n in FOREST_NAMES)}
    if set(arrays) != needed:
        raise ValueError(f"a level step carries the arrays {sorted(needed)}, not {sorted(arrays)}")
    edges = np.asarray(arrays["edges"])
    if edges.ndim != 2 or edges.shape[0] != n_features or not 1 <= edges.shape[1] <= max_bins \
            or edges.dtype.kind != "f":
        raise ValueError(f"edges of shape {edges.shape}: the task has {n_features} features, at most {max_bins} bins")
    for row in edges:
        cut = row[~np.isnan(row)]
        if not (np.isfinite(cut).all() and np.all(np.diff(cut) > 0) and np.isnan(row[len(cut):]).all()):
            raise ValueError("a feature's edges are not increasing finite values followed by padding")
    size = tree_size(max_depth)
    for prefix, trees in (("", None), ("round_", n_out)):
        shapes = {np.shape(arrays[prefix + n]) for n in FOREST_NAMES}
        shape = shapes.pop()
        if shapes or len(shape) != 2 or shape[1] != size or (trees is not None and shape[0] != trees) \
                or shape[0] % n_out:
            raise ValueError(f"{prefix or 'the '}trees' arrays must be (trees, {size}), trees a multiple of {n_out}")
        feature, threshold = np.asarray(arrays[prefix + "tree_feature"]), np.asarray(arrays[prefix + "tree_threshold"])
        if feature.dtype.kind not in "iu" or threshold.dtype.kind not in "iu" \
                or not ((feature >= -1) & (feature < n_features)).all() \
                or not ((threshold >= 0) & (threshold <= edges.shape[1])).all() \
                or not np.isfinite(np.asarray(arrays[prefix + "tree_value"], dtype=np.float64)).all():
            raise ValueError("a tree names a feature, bin or value outside the task's")
        if (feature[:, 2 ** max_depth - 1:] != -1).any():  # the deepest level holds leaves only
            raise ValueError(f"a tree splits below its depth of {max_depth}")
    tree, node = np.asarray(arrays["frontier_tree"]), np.asarray(arrays["frontier_node"])
    if tree.ndim != 1 or tree.shape != node.shape or tree.dtype.kind not in "iu" or node.dtype.kind not in "iu" \
            or not 1 <= len(node) <= n_out * 2 ** (max_depth - 1) or not ((tree >= 0) & (tree < n_out)).all() \
            or not ((node >= 0) & (node < size)).all():
        raise ValueError(f"a frontier of nodes no tree of depth {max_depth} has")


# ---------------------------------------------------------------------- trees as arrays
def tree_size(max_depth: int) -> int:
    return 2 ** (max_depth + 1) - 1


@dataclass
class Forest:
    """Every tree grown so far, as fixed-size heap arrays: (trees, nodes) each; tree t is output t % outputs."""

    feature: np.ndarray  # int: the split's feature, -1 at a leaf (and at nodes never reached)
    threshold: np.ndarray  # int: the last bin of the left side
    missing_left: np.ndarray  # bool: where missing values go
    value: np.ndarray  # float: a leaf's value (learning rate included)
    gain: np.ndarray  # float: the split's gain (feature importances)

    @classmethod
    def empty(cls, max_depth: int) -> "Forest":
        n = tree_size(max_depth)
        return cls(np.zeros((0, n), np.int32), np.zeros((0, n), np.int32), np.zeros((0, n), bool),
                   np.zeros((0, n)), np.zeros((0, n)))

    @property
    def n_trees(self) -> int:
        return self.feature.shape[0]

    def add(self, trees: "Forest") -> "Forest":
        return Forest(*(np.concatenate([a, b]) for a, b in zip(self.arrays(), trees.arrays())))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.feature, self.threshold, self.missing_left, self.value, self.gain

    def named(self) -> list[tuple[str, np.ndarray]]:
        return list(zip(FOREST_NAMES, self.arrays()))

    @classmethod
    def from_named(cls, arrays: dict[str, np.ndarray]) -> "Forest":
        return cls(np.asarray(arrays["tree_feature"], np.int32), np.asarray(arrays["tree_threshold"], np.int32),
                   np.asarray(arrays["tree_missing_left"], bool), np.asarray(arrays["tree_value"], np.float64),
                   np.asarray(arrays["tree_gain"], np.float64))


FOREST_NAMES = ("tree_feature", "tree_threshold", "tree_missing_left", "tree_value", "tree_gain")


def leaves_of(forest: Forest, binned: np.ndarray, missing_bin: int, trees: range | None = None) -> np.ndarray:
    """(rows, trees): the heap index of the node each row reaches in each tree (it stops at a node that does not
    split: a leaf, or in a tree still growing, a node of its frontier)."""
    trees = trees if trees is not None else range(forest.n_trees)
    out = np.zeros((binned.shape[0], len(trees)), dtype=np.int64)
    rows = np.arange(binned.shape[0])
    for j, t in enumerate(trees):
        node = np.zeros(binned.shape[0], dtype=np.int64)
        feature, threshold, missing_left = forest.feature[t], forest.threshold[t], forest.missing_left[t]
        while True:
            f = feature[node]
            inner = f >= 0
            if not inner.any():
                break
            here = node[inner]
            b = binned[rows[inner], f[inner]]
            left = np.where(b == missing_bin, missing_left[here], b <= threshold[here])
            node[inner] = 2 * here + np.where(left, 1, 2)
        out[:, j] = node
    return out


def raw_scores(forest: Forest, binned: np.ndarray, n_out: int, missing_bin: int,
               start: np.ndarray | None = None, first_tree: int = 0) -> np.ndarray:
    """Raw scores (rows, outputs): ``start`` (zeros) plus the values of trees ``first_tree`` on."""
    raw = np.zeros((binned.shape[0], n_out)) if start is None else start.copy()
    if forest.n_trees > first_tree:
        trees = range(first_tree, forest.n_trees)
        leaves = leaves_of(forest, binned, missing_bin, trees)
        for j, t in enumerate(trees):
            raw[:, t % n_out] += forest.value[t][leaves[:, j]]
    return raw


# ---------------------------------------------------------------------- growing a level
@dataclass
class Frontier:
    """The nodes a level splits: ``tree`` (which tree of this round, = output) and ``node`` (heap index)."""

    tree: np.ndarray
    node: np.ndarray

    @property
    def size(self) -> int:
        return len(self.node)


def histograms(binned: np.ndarray, g: np.ndarray, h: np.ndarray, node_of: np.ndarray, frontier: Frontier,
               n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, H), each (entries, features, n_bins + 1): the sums of g and h of the rows in each frontier node,
    per feature and bin (the last bin: missing). ``node_of`` (rows, outputs): each row's node in each tree of
    the round being grown."""
    entries, features = frontier.size, binned.shape[1]
    width = features * (n_bins + 1)
    G = np.zeros((entries, width))
    H = np.zeros((entries, width))
    offset = (np.arange(features) * (n_bins + 1))[None, :]
    for t in np.unique(frontier.tree):
        mine = np.flatnonzero(frontier.tree == t)
        local = _entries(node_of[:, t], frontier.node[mine], np.arange(len(mine)))
        use = local >= 0
        if not use.any():
            continue
        flat = (local[use, None] * width + offset + binned[use]).ravel()
        size = len(mine) * width
        G[mine] += np.bincount(flat, weights=np.repeat(g[use, t], features), minlength=size).reshape(len(mine), width)
        H[mine] += np.bincount(flat, weights=np.repeat(h[use, t], features), minlength=size).reshape(len(mine), width)
    shape = (entries, features, n_bins + 1)
    return G.reshape(shape), H.reshape(shape)


def _entries(nodes: np.ndarray, frontier_nodes: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """For each row's node, its frontier entry (-1 when its node is not split at this level)."""
    order = np.argsort(frontier_nodes)
    sorted_nodes = frontier_nodes[order]
    at = np.clip(np.searchsorted(sorted_nodes, nodes), 0, len(sorted_nodes) - 1)
    found = sorted_nodes[at] == nodes
    return np.where(found, entries[order][at], -1)


@dataclass
class Splits:
    """The best split of each frontier entry (feature -1: none worth it) and the sums of both children."""

    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    gain: np.ndarray
    left: np.ndarray  # (entries, 2): G and H of the left child
    right: np.ndarray  # (entries, 2)


TIE_TOLERANCE = 1e-9  # relative: gains closer than this are equal (the first split of the two is taken)


def best_splits(G: np.ndarray, H: np.ndarray, l2: float, min_child_weight: float, min_gain: float) -> Splits:
    """The best split of every entry from its histograms (see the module docstring)."""
    entries = G.shape[0]
    G_miss, H_miss = G[:, :, -1], H[:, :, -1]
    G_cum, H_cum = np.cumsum(G[:, :, :-1], axis=2), np.cumsum(H[:, :, :-1], axis=2)
    G_tot = G_cum[:, :, -1] + G_miss  # the same for every feature: every row is in one bin of each feature
    H_tot = H_cum[:, :, -1] + H_miss
    parent = (G_tot ** 2 / (H_tot + l2))[:, :, None]
    best = dict(gain=np.zeros(entries), feature=np.full(entries, -1), threshold=np.zeros(entries, np.int64),
                missing_left=np.zeros(entries, bool), left=np.zeros((entries, 2)), right=np.zeros((entries, 2)))
    for missing_left in (False, True):
        GL = G_cum + (G_miss[:, :, None] if missing_left else 0.0)
        HL = H_cum + (H_miss[:, :, None] if missing_left else 0.0)
        GR, HR = G_tot[:, :, None] - GL, H_tot[:, :, None] - HL
        gain = 0.5 * (GL ** 2 / (HL + l2) + GR ** 2 / (HR + l2) - parent) - min_gain
        gain = np.where((HL >= min_child_weight) & (HR >= min_child_weight), gain, -np.inf)
        flat = gain.reshape(entries, -1)
        # The first best: ties go to the lower feature, then the lower bin. "Ties" within TIE_TOLERANCE: sums
        # added in another order (sites, then pooled) differ in the last bits, and must pick the same split.
        top = flat.max(axis=1, initial=-np.inf)
        pick = np.argmax(flat >= (top - TIE_TOLERANCE * np.abs(top))[:, None], axis=1)
        top = flat[np.arange(entries), pick]
        better = top > best["gain"] + TIE_TOLERANCE * (np.abs(best["gain"]) + np.abs(parent[:, 0, 0]))
        f, b = np.divmod(pick, gain.shape[2])
        best["gain"] = np.where(better, top, best["gain"])
        best["feature"] = np.where(better, f, best["feature"])
        best["threshold"] = np.where(better, b, best["threshold"])
        best["missing_left"] = np.where(better, missing_left, best["missing_left"])
        for side, Gs, Hs in (("left", GL, HL), ("right", GR, HR)):
            chosen = np.stack([Gs.reshape(entries, -1)[np.arange(entries), pick],
                               Hs.reshape(entries, -1)[np.arange(entries), pick]], axis=1)
            best[side] = np.where(better[:, None], chosen, best[side])
    return Splits(best["feature"], best["threshold"], best["missing_left"], best["gain"], best["left"],
                  best["right"])


def node_totals(G: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(entries, 2): each entry's G and H (every row is in one bin of the first feature)."""
    return np.stack([G[:, 0, :].sum(axis=1), H[:, 0, :].sum(axis=1)], axis=1)


def leaf_value(sums: np.ndarray, l2: float, learning_rate: float) -> np.ndarray:
    return -learning_rate * sums[..., 0] / (sums[..., 1] + l2)


# ---------------------------------------------------------------------- one round, whoever holds the rows
@dataclass
class Settings:
    max_depth: int = 4
    learning_rate: float = 0.1
    l2: float = 1.0
    min_child_weight: float = 1.0
    min_gain: float = 0.0


class TreeGrower:
    """One round's trees (one per output), grown level by level from summed histograms.

    ``frontier()`` names the nodes whose histograms the next level needs;
    ``grow(G, H)`` takes their sums and splits them (or makes them leaves);
    ``done`` once every tree is complete, then ``trees()`` holds them.
    """

    def __init__(self, settings: Settings, n_out: int):
        self.s = settings
        self.n_out = n_out
        size = tree_size(settings.max_depth)
        self.feature = np.full((n_out, size), -1, np.int32)
        self.threshold = np.zeros((n_out, size), np.int32)
        self.missing_left = np.zeros((n_out, size), bool)
        self.value = np.zeros((n_out, size))
        self.gain = np.zeros((n_out, size))
        self.depth = 0
        self._open = Frontier(np.arange(n_out), np.zeros(n_out, np.int64))  # every root is to be split
        self._sums: np.ndarray | None = None  # the frontier's G, H (from the level above)

    @property
    def done(self) -> bool:
        return self._open.size == 0

    def frontier(self) -> Frontier:
        return self._open

    def grow(self, G: np.ndarray, H: np.ndarray) -> None:
        """Split the frontier's nodes with their summed histograms; the next level's frontier is their children."""
        s, f = self.s, self._open
        sums = node_totals(G, H)
        last = self.depth == s.max_depth - 1
        splits = best_splits(G, H, s.l2, s.min_child_weight, s.min_gain)
        split = splits.feature >= 0
        t, n = f.tree, f.node
        # nodes not worth splitting become leaves now
        self.value[t[~split], n[~split]] = leaf_value(sums[~split], s.l2, s.learning_rate)
        ts, ns = t[split], n[split]
        self.feature[ts, ns] = splits.feature[split]
        self.threshold[ts, ns] = splits.threshold[split]
        self.missing_left[ts, ns] = splits.missing_left[split]
        self.gain[ts, ns] = splits.gain[split]
        children = Frontier(np.repeat(ts, 2), np.stack([2 * ns + 1, 2 * ns + 2], axis=1).ravel())
        child_sums = np.stack([splits.left[split], splits.right[split]], axis=1).reshape(-1, 2)
        self.depth += 1
        if last:  # the children are leaves, their values from the sums the split already gives
            self.value[children.tree, children.node] = leaf_value(child_sums, s.l2, s.learning_rate)
            self._open = Frontier(np.zeros(0, np.int64), np.zeros(0, np.int64))
        else:
            self._open = children

    def trees(self) -> Forest:
        return Forest(self.feature, self.threshold, self.missing_left, self.value, self.gain)


def node_of_rows(trees: Forest, binned: np.ndarray, missing_bin: int) -> np.ndarray:
    """(rows, outputs): the node each row has reached in each of the round's trees (a leaf, or a node of the
    frontier still to be split)."""
    return leaves_of(trees, binned, missing_bin)


def fit_pooled(X: np.ndarray, y_index: np.ndarray, n_classes: int, edges: list[np.ndarray], settings: Settings,
               rounds: int) -> Forest:
    """The same algorithm on one array of pooled rows (what the federated model must equal)."""
    binned = bin_rows(X, edges)
    n_bins = max_bin_count(edges)
    n_out = n_outputs(n_classes)
    forest = Forest.empty(settings.max_depth)
    raw = np.zeros((len(y_index), n_out))
    for _ in range(rounds):
        g, h = gradients(raw, y_index, n_classes)
        grower = TreeGrower(settings, n_out)
        while not grower.done:
            node_of = node_of_rows(grower.trees(), binned, n_bins)
            G, H = histograms(binned, g, h, node_of, grower.frontier(), n_bins)
            grower.grow(G, H)
        new = grower.trees()
        raw = raw_scores(new, binned, n_out, n_bins, start=raw)
        forest = forest.add(new)
    return forest


def predict_raw(forest: Forest, X: np.ndarray, edges: list[np.ndarray], n_out: int) -> np.ndarray:
    binned = bin_rows(X, edges)
    return raw_scores(forest, binned, n_out, max_bin_count(edges))


def probabilities(raw: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        p = expit(raw[:, 0])
        return np.column_stack([1 - p, p])
    return softmax(raw, axis=1)
