//! The int8 scan kernel, the only `unsafe` in the crate.
//!
//! The portable code is written so the compiler vectorises it; on x86-64 the
//! baseline target only has SSE2, so the same code is compiled a second time
//! with AVX2 enabled and chosen at run time when the CPU has it (ARM kiosks
//! get NEON from the baseline target). Tests check both against a scalar loop.
#![allow(unsafe_code)]

/// Integer dot product of int8 codes, exact in i32 for dimensions below 2^17.
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    let mut sum: i32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// A plain loop over a pre-sized slice: generic helpers such as
/// `Vec::extend` are not inlined into the AVX2 copy and would run the dot
/// product without AVX2.
#[inline(always)]
fn scan_portable(query: &[i8], codes: &[i8], dim: usize, out: &mut Vec<i32>) {
    let rows = codes.len() / dim;
    out.clear();
    out.resize(rows, 0);
    for (row, slot) in out.iter_mut().enumerate() {
        *slot = dot_i8(query, &codes[row * dim..(row + 1) * dim]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_avx2(query: &[i8], codes: &[i8], dim: usize, out: &mut Vec<i32>) {
    scan_portable(query, codes, dim, out)
}

/// Dot products of `query` with every `dim`-wide row of `codes`, into `out`.
pub(crate) fn scan_i8(query: &[i8], codes: &[i8], dim: usize, out: &mut Vec<i32>) {
    if dim == 0 {
        out.clear();
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `scan_avx2` only requires AVX2, which the CPU was just
            // checked to support; its body is the portable safe code.
            return unsafe { scan_avx2(query, codes, dim, out) };
        }
    }
    scan_portable(query, codes, dim, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(a: &[i8], b: &[i8]) -> i32 {
        a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
    }

    #[test]
    fn dispatched_scan_equals_the_scalar_loop() {
        let mut seed = 0x1234_5678_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 56) as i8
        };
        for dim in [1, 15, 16, 17, 128, 131, 512] {
            let query: Vec<i8> = (0..dim).map(|_| next()).collect();
            let mut codes: Vec<i8> = (0..dim * 50).map(|_| next()).collect();
            codes[..dim].fill(-128);
            let mut out = Vec::new();
            scan_i8(&query, &codes, dim, &mut out);
            let expected: Vec<i32> = codes.chunks_exact(dim).map(|row| scalar(&query, row)).collect();
            assert_eq!(out, expected, "dim {dim}");
            let mut portable = Vec::new();
            scan_portable(&query, &codes, dim, &mut portable);
            assert_eq!(portable, expected, "dim {dim}");
        }
    }
}
