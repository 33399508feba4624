#!/usr/bin/env python3
"""Derives the Winograd F(m, 3) matrices B^T, G, A^T for given interpolation points, in exact rational
arithmetic (a dev-time tool: documents where kernels/cpu/conv2d_winograd*.{cpp,h} and
tests/conv2d_winograd_test.cpp get their matrices; the build never runs it).

  y = A^T [(G g) * (B^T d)]   is the 1-D correlation y_i = sum_k g_k d_{i+k}, i < m, k < 3.

Construction (Toom-Cook, Lavin & Gray 2016; Barabasz, Anderson, Soodhalter & Gregg 2020, "Error analysis
and improving the accuracy of Winograd convolution for deep neural networks", ACM TOMS 46(4)): for the
finite points p_j, A^T[i][j] = p_j^i and G[j][k] = p_j^k / prod_{l != j} (p_j - p_l); the point at infinity
adds A^T[m-1][n-1] = G[n-1][2] = 1. B^T is then the unique solution of the m * 3 * n linear identities
sum_j A^T[i][j] G[j][k] B^T[j][l] = [l == i + k], solved and checked here exactly (fractions.Fraction).
Each B^T row and A^T column is then scaled to coprime integers, the inverse scales moving into G (which
the kernel applies in float64 and rounds once), so the float32 transforms multiply by small integers only.

Usage:  scripts/winograd_matrices.py [--points 0,2/3,-2/3,3/2,-3/2,inf] [--m 4]
        scripts/winograd_matrices.py --search   (needs numpy: ranks symmetric point sets {0, +-a, +-b, inf}
                                                 by the simulated float32 error of one 64 -> 32 conv at 14x14)
"""
import argparse
import itertools
import math
import sys
from fractions import Fraction as Fr

INF = None


def derive(points, m):
    """(AT, G, BT) as lists of Fraction rows for the points (Fractions, INF last or absent)."""
    n = m + 2
    fin = [p for p in points if p is not INF]
    if len(points) != n or len(set(fin)) != len(fin) or len(fin) < n - 1:
        raise ValueError(f"need {n} distinct points (at most one inf), got {points}")
    AT = [[Fr(0)] * n for _ in range(m)]
    G = [[Fr(0)] * 3 for _ in range(n)]
    for j, p in enumerate(fin):
        f = math.prod((p - q for q in fin if q != p), start=Fr(1))
        for i in range(m):
            AT[i][j] = p**i
        for k in range(3):
            G[j][k] = p**k / f
    if len(fin) == n - 1:
        AT[m - 1][n - 1] = G[n - 1][2] = Fr(1)
    # B^T column l: the linear system over the (i, k) identities, Gauss-Jordan elimination.
    eqs = [(i, k) for i in range(m) for k in range(3)]
    BT = [[None] * n for _ in range(n)]
    for l in range(n):
        rows = [[AT[i][j] * G[j][k] for j in range(n)] + [Fr(int(l == i + k))] for i, k in eqs]
        piv = []
        for c in range(n):
            r = next((t for t in range(len(piv), len(rows)) if rows[t][c] != 0), None)
            if r is None:
                raise ValueError("singular system: points not distinct?")
            rows[len(piv)], rows[r] = rows[r], rows[len(piv)]
            top = rows[len(piv)]
            top[:] = [v / top[c] for v in top]
            for t in range(len(rows)):
                if t != len(piv) and rows[t][c] != 0:
                    f = rows[t][c]
                    rows[t] = [a - f * b for a, b in zip(rows[t], top)]
            piv.append(c)
        if any(v != 0 for row in rows[n:] for v in row):
            raise ValueError("inconsistent system: no B^T for these points")
        for t, c in enumerate(piv):
            BT[c][l] = rows[t][n]
    return AT, G, BT


def integerize(AT, G, BT):
    """Scales B^T rows and A^T columns to coprime integers, G rows by the inverses (same product; signs
    may differ from Lavin & Gray's F(2,3), an equivalent choice)."""
    for j in range(len(BT)):
        for vec_get, vec_set in (
            (lambda: BT[j], lambda v: BT.__setitem__(j, v)),
            (lambda: [r[j] for r in AT], lambda v: [r.__setitem__(j, x) for r, x in zip(AT, v)]),
        ):
            vec = vec_get()
            den = math.lcm(*[v.denominator for v in vec])
            s = Fr(den, math.gcd(*[(v * den).numerator for v in vec]))
            vec_set([v * s for v in vec])
            G[j] = [v / s for v in G[j]]
    return AT, G, BT


def verify(AT, G, BT, m):
    """Exact check of every identity of the 1-D correlation (so the 2-D nesting is exact too)."""
    n = m + 2
    for i in range(m):
        for k in range(3):
            for l in range(n):
                got = sum(AT[i][j] * G[j][k] * BT[j][l] for j in range(n))
                assert got == (1 if l == i + k else 0), (i, k, l, got)


def parse_points(s):
    return [INF if t.strip() == "inf" else Fr(t.strip()) for t in s.split(",")]


def search():
    import numpy as np  # dev-time only

    rng = np.random.default_rng(5)
    C, K, H = 64, 32, 14
    x = rng.standard_normal((C, H + 2, H + 2)).astype(np.float32)
    x[:, 0, :] = x[:, -1, :] = x[:, :, 0] = x[:, :, -1] = 0  # pad 1
    w = (rng.standard_normal((K, C, 3, 3)) * math.sqrt(2 / (9 * C))).astype(np.float32)
    ref = sum(np.einsum("chw,kc->khw", x[:, r : r + H, s : s + H].astype(np.float64), w[:, :, r, s].astype(np.float64))
              for r in range(3) for s in range(3))
    m, a = 4, 6
    tiles = np.stack([np.stack([x[:, ty * m : ty * m + a, tx * m : tx * m + a] for tx in range(H // m)], 1)
                      for ty in range(H // m)], 1)  # C TY TX a a (H divisible by m is not needed: trimmed)
    vals = [Fr(1, 3), Fr(1, 2), Fr(3, 5), Fr(2, 3), Fr(3, 4), Fr(4, 5), Fr(1), Fr(5, 4), Fr(4, 3), Fr(3, 2),
            Fr(5, 3), Fr(2), Fr(3)]
    out = []
    for p, q in itertools.combinations(vals, 2):
        AT, G, BT = integerize(*derive([Fr(0), p, -p, q, -q, INF], m))
        f = lambda M: np.array([[float(v) for v in r] for r in M])
        BTf, ATf = f(BT).astype(np.float32), f(AT).astype(np.float32)
        V = np.einsum("ia,ctuab,jb->ctuij", BTf, tiles, BTf).astype(np.float32)
        U = np.einsum("ia,kcab,jb->kcij", f(G), w.astype(np.float64), f(G)).astype(np.float32)
        M = np.einsum("kcij,ctuij->ktuij", U, V).astype(np.float32)
        Y = np.einsum("ia,ktuab,jb->ktuij", ATf, M, ATf).astype(np.float32)
        y = Y.transpose(0, 1, 3, 2, 4).reshape(K, (H // m) * m, (H // m) * m)
        r = ref[:, : y.shape[1], : y.shape[2]]
        out.append((float(np.sqrt(((y - r) ** 2).mean() / (r**2).mean())), f"0, +-{p}, +-{q}, inf"))
    for e, name in sorted(out)[:10]:
        print(f"RMS err / RMS y {e:.3g}: {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="0,2/3,-2/3,3/2,-3/2,inf")
    ap.add_argument("--m", type=int, default=4)
    ap.add_argument("--search", action="store_true")
    args = ap.parse_args()
    if args.search:
        return search()
    pts = parse_points(args.points)
    AT, G, BT = integerize(*derive(pts, args.m))
    verify(AT, G, BT, args.m)
    print(f"F({args.m}, 3), points {args.points}: verified exactly")
    for name, M in (("B^T", BT), ("G", G), ("A^T", AT)):
        print(name)
        for row in M:
            print("  [" + ", ".join(f"{str(v):>7}" for v in row) + "]")


if __name__ == "__main__":
    sys.exit(main())
