// Internal: the 1-D transforms of Winograd F(4, 3) (a = 6 points), written once for any element type T
// (float, or a GCC vector of floats) and included by conv2d_winograd.cpp (portable path) and by
// conv2d_winograd_simd_impl.h (AVX2 / AVX-512): one source of the float operations, so every ISA path
// computes the same bits (with -ffp-contract=off). Internal linkage: nothing here is shared between the
// files compiled for different ISAs.
//
// Interpolation points {0, 2/3, -2/3, 3/2, -3/2, inf}, chosen for float32 accuracy instead of Lavin &
// Gray's {0, 1, -1, 2, -2, inf}: following Barabasz, Anderson, Soodhalter & Gregg (2020, "Error analysis
// and improving the accuracy of Winograd convolution for deep neural networks", ACM TOMS 46(4)), whose
// error bounds grow with the transform matrices' entries and who select points to shrink them, and Alam,
// Anderson, Barabasz & Gregg (2022, "Winograd convolution for deep neural networks: efficient point
// selection", ACM TECS 21(6)), who pick points of the form +-c, +-1/c. Among the symmetric sets {0, +-a, +-b,
// inf} with a, b small fractions,
// {+-2/3, +-3/2} had the smallest simulated float32 error (scripts/winograd_matrices.py --search): about
// half the RMS and a third of the max error of {+-1, +-2} on the UNet shapes (docs/apps.md has the table).
// The matrices (exact rationals, derived and verified by scripts/winograd_matrices.py):
//   B^T = [36   0 -97   0  36  0]   G = [    1/36       0        0]   A^T = [1 27  27  8   8 0]
//         [ 0 -18 -27   8  12  0]       [ -1/520  -1/780  -1/1170]         [0 18 -18 12 -12 0]
//         [ 0  18 -27  -8  12  0]       [ -1/520   1/780  -1/1170]         [0 12  12 18  18 0]
//         [ 0 -12  -8  27  18  0]       [ 1/1170   1/780    1/520]         [0  8  -8 27 -27 1]
//         [ 0  12  -8 -27  18  0]       [ 1/1170  -1/780    1/520]
//         [ 0  36   0 -97   0 36]       [       0       0     1/36]
// applied with every B^T row divided by 32, A^T columns 1..4 divided by 32 and G rows multiplied to match
// (powers of two: exactly the same roundings, but all entries in [0.25, 3.1], so that no intermediate
// overflows or underflows earlier than the direct convolution's). The input transform is factored into
// even / odd pairs (o1, o2 = e1 +- f1; o3, o4 = e3 +- f3) so each output takes at most 3 roundings, the
// output transform at most 4: the bound tests/conv2d_winograd_test.cpp derives.
#pragma once

namespace kern::cpu::detail {
namespace {

struct F43Ops {
  // o = B^T d (a = 6 values in, 6 out).
  template <class T>
  static void input(const T* d, T* o) {
    const T e1 = 0.375f * d[4] - 0.84375f * d[2], f1 = 0.25f * d[3] - 0.5625f * d[1];
    const T e3 = 0.5625f * d[4] - 0.25f * d[2], f3 = 0.84375f * d[3] - 0.375f * d[1];
    o[0] = 1.125f * (d[0] + d[4]) - 3.03125f * d[2];
    o[1] = e1 + f1;
    o[2] = e1 - f1;
    o[3] = e3 + f3;
    o[4] = e3 - f3;
    o[5] = 1.125f * (d[1] + d[5]) - 3.03125f * d[3];
  }
  // y = A^T v (6 values in, 4 out).
  template <class T>
  static void output(const T* v, T* y) {
    const T p12 = v[1] + v[2], m12 = v[1] - v[2], p34 = v[3] + v[4], m34 = v[3] - v[4];
    y[0] = (v[0] + 0.84375f * p12) + 0.25f * p34;
    y[1] = 0.5625f * m12 + 0.375f * m34;
    y[2] = 0.375f * p12 + 0.5625f * p34;
    y[3] = (0.25f * m12 + 0.84375f * m34) + v[5];
  }
  // u = G g in float64 (3 values in, 6 out).
  static void weight(double g0, double g1, double g2, double* u) {
    constexpr double c0 = 8.0 / 9, ca = 128.0 / 65, cb = 256.0 / 195, cc = 512.0 / 585;
    u[0] = g0 * c0;
    u[1] = -((g0 * ca + g1 * cb) + g2 * cc);
    u[2] = -((g0 * ca - g1 * cb) + g2 * cc);
    u[3] = (g0 * cc + g1 * cb) + g2 * ca;
    u[4] = (g0 * cc - g1 * cb) + g2 * ca;
    u[5] = g2 * c0;
  }
};

}  // namespace
}  // namespace kern::cpu::detail
